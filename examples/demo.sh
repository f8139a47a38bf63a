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

# The same policies behind `sidecarctl serve`, answering an AdmissionReview over HTTPS as the
# API server would post it.
if [ -f build/wasm/sidecar-lifecycle-policy.wasm ] && command -v openssl >/dev/null && command -v curl >/dev/null; then
  tmp=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
  bold "== sidecarctl serve -c examples/serve/policies.yml --cert tls.crt --key tls.key"
  "$sidecarctl" serve -c examples/serve/policies.yml --addr 127.0.0.1:0 \
    --cert "$tmp/tls.crt" --key "$tmp/tls.key" > "$tmp/out" 2> "$tmp/err" &
  server=$!
  for _ in $(seq 100); do grep -q '^listening on' "$tmp/out" && break; sleep 0.1; done
  cat "$tmp/err" "$tmp/out"
  url=$(sed -n 's/^listening on //p' "$tmp/out")
  bold "== sidecarctl review examples/pods/istio-legacy-job.yaml | curl --data @- $url/validate/clusterwide-sidecar-lifecycle"
  "$sidecarctl" review examples/pods/istio-legacy-job.yaml |
    curl -sS --cacert "$tmp/tls.crt" -H 'Content-Type: application/json' --data @- \
      "$url/validate/clusterwide-sidecar-lifecycle"
  echo
  bold "== curl $url/metrics (excerpt)"
  curl -sS --cacert "$tmp/tls.crt" "$url/metrics" | grep '_total{' || true
  kill -TERM "$server"; wait "$server" || true
  rm -rf "$tmp"
fi
