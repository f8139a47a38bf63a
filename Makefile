# Sidecar policies: build, test, demo, lint.
#   make demo   builds everything and shows the model and the policies on examples/
#   make test   builds the policies to wasm and runs every test against the real modules

CARGO      ?= cargo
WASM_TARGET = wasm32-wasip1
WASM_OUT    = target/$(WASM_TARGET)/wasm
BUILD       = build
SIDECARCTL  = target/debug/sidecarctl

# Policy crates shipped to clusters, and the two tiny policies the tests use.
POLICIES      := $(notdir $(wildcard policies/*-policy))
TEST_POLICIES := null-policy test-mutator

.PHONY: all targets wasm host test demo lint fmt clean

all: wasm host

targets:
	rustup target add $(WASM_TARGET) wasm32-unknown-unknown

# Every policy crate to wasm32-wasip1 with the size-optimised profile, collected under build/.
wasm: targets
	$(CARGO) build --target $(WASM_TARGET) --profile wasm $(foreach p,$(POLICIES) $(TEST_POLICIES),-p $(p))
	@mkdir -p $(BUILD)/wasm $(BUILD)/test-policies
	@for p in $(POLICIES); do cp $(WASM_OUT)/$$(echo $$p | tr - _).wasm $(BUILD)/wasm/$$p.wasm; done
	@for p in $(TEST_POLICIES); do cp $(WASM_OUT)/$$(echo $$p | tr - _).wasm $(BUILD)/test-policies/$$p.wasm; done
	@ls -l $(BUILD)/wasm $(BUILD)/test-policies | grep wasm || true

host:
	$(CARGO) build --bin sidecarctl

# The model also builds for wasm32-unknown-unknown (no WASI), which keeps it free of host APIs.
test: wasm host
	$(CARGO) build -p sidecar-model --target wasm32-unknown-unknown
	$(CARGO) test --workspace
	$(SIDECARCTL) test tests/suites

demo: wasm host
	@./examples/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	rm -rf $(BUILD)
	$(CARGO) clean
