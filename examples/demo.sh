#!/usr/bin/env bash
# The demo: what the sidecar model sees in each example pod, then every built policy
# evaluated on them by sidecarctl, the way policy-server would answer the API server.
set -euo pipefail
cd "$(dirname "$0")/.."
sidecarctl=target/debug/sidecarctl
bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }

for pod in examples/pods/*.yaml; do
  bold "== sidecarctl explain $pod"
  sed -n 's/^# \{0,1\}//p' "$pod" | sed '/^apiVersion/,$d'
  echo
  "$sidecarctl" explain "$pod"
done

shopt -s nullglob
policies=(build/wasm/*.wasm)
if [ ${#policies[@]} -eq 0 ]; then
  policies=(build/test-policies/test-mutator.wasm)
  bold "(no sidecar policies built yet: showing the engine with the test mutator)"
fi
for policy in "${policies[@]}"; do
  name=$(basename "$policy" .wasm)
  settings=()
  [ -f "examples/settings/$name.yaml" ] && settings=(--settings-path "examples/settings/$name.yaml")
  for pod in examples/pods/*.yaml; do
    bold "== sidecarctl run --policy $policy --request-path $pod ${settings[*]:-} -o pretty"
    "$sidecarctl" run --policy "$policy" --request-path "$pod" "${settings[@]}" -o pretty
  done
done
