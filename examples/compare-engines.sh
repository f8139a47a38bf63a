#!/usr/bin/env bash
# sidecarctl serve beside Kubewarden's policy-server: the same policies.yml (the example
# policies and the null policy), both on plain HTTP on loopback with the same workers, the
# same AdmissionReview posted by wrk. Per policy and concurrency the engines run alternately
# (A B A B ...), so a noisy stretch of the machine falls on both; each row prints both
# engines' requests/s and p99 (the mean over the rounds) and their ratios. Both engines'
# answers to the review are compared first, and the resident memory of each after the load
# is printed last.
#   POLICY_SERVER (required)  COMPARE_DURATION (default 5s)  COMPARE_ROUNDS (default 2)
#   COMPARE_CONCURRENCY (default "1 16 64")  COMPARE_WORKERS (default: cores)  COMPARE_POD
#   SIDECARCTL (default target/release/sidecarctl)
# policy-server is built outside this repository, from kubewarden-controller's
# crates/policy-server (its git docker_credential dependency replaced by the crates.io
# release). CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${POLICY_SERVER:-}" ]; then
  echo "compare-engines: skipped: set POLICY_SERVER=/path/to/policy-server (built from kubewarden-controller's crates/policy-server)"
  exit 0
fi
[ -x "$POLICY_SERVER" ] || { echo "compare-engines: $POLICY_SERVER is not an executable" >&2; exit 1; }
command -v wrk >/dev/null || { echo "compare-engines needs wrk: apt-get install wrk" >&2; exit 1; }
# Both engines as released: sidecarctl's release build (make compare-engines builds it).
sidecarctl=${SIDECARCTL:-target/release/sidecarctl}
[ -x "$sidecarctl" ] || { echo "compare-engines: no $sidecarctl (cargo build --release --bin sidecarctl)" >&2; exit 1; }
duration=${COMPARE_DURATION:-5s}
rounds=${COMPARE_ROUNDS:-2}
concurrencies=${COMPARE_CONCURRENCY:-"1 16 64"}
workers=${COMPARE_WORKERS:-$(nproc)}
pod=${COMPARE_POD:-examples/pods/shop-checkout-pod.yaml}

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# One file for both engines: policy-server reads modules as file:// URLs.
sed "s#\.\./\.\./build/#file://$PWD/build/#" examples/serve/policies.yml > "$tmp/policies.yml"
# policy-server runs only annotated modules: the null policy gets the ordering policy's
# metadata, made a validating one under its own title.
sed -e 's/^mutating: true/mutating: false/' \
  -e 's/io.kubewarden.policy.title: .*/io.kubewarden.policy.title: null-policy/' \
  policies/sidecar-ordering-policy/metadata.yml > "$tmp/null.yml"
"$sidecarctl" annotate -m "$tmp/null.yml" --output-path "$tmp/null-policy.wasm" build/test-policies/null-policy.wasm
printf 'null:\n  module: file://%s\n' "$tmp/null-policy.wasm" >> "$tmp/policies.yml"
"$sidecarctl" review "$pod" > "$tmp/review.json"
policies="null clusterwide-sidecar-injector clusterwide-sidecar-lifecycle clusterwide-sidecar-ordering clusterwide-sidecar-resources"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

"$sidecarctl" serve -c "$tmp/policies.yml" --addr 127.0.0.1:0 --insecure-plain-http \
  --workers "$workers" > "$tmp/a.out" 2> "$tmp/a.err" &
pids+=($!); a_pid=$!
for _ in $(seq 300); do grep -q '^listening on' "$tmp/a.out" && break; sleep 0.1; done
a_url=$(sed -n 's/^listening on //p' "$tmp/a.out")
[ -n "$a_url" ] || { cat "$tmp/a.err" >&2; exit 1; }

b_port=$(free_port); b_ready=$(free_port)
mkdir -p "$tmp/downloads" "$tmp/sigstore"
"$POLICY_SERVER" --policies "$tmp/policies.yml" --addr 127.0.0.1 --port "$b_port" \
  --readiness-probe-port "$b_ready" --workers "$workers" --ignore-kubernetes-connection-failure \
  --policies-download-dir "$tmp/downloads" --sigstore-cache-dir "$tmp/sigstore" \
  --log-level warn --log-no-color > "$tmp/b.out" 2> "$tmp/b.err" &
pids+=($!); b_pid=$!
b_url="http://127.0.0.1:$b_port"
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$b_ready/readiness" >/dev/null 2>&1 && break
  kill -0 "$b_pid" 2>/dev/null || { cat "$tmp/b.out" "$tmp/b.err" >&2; exit 1; }
  sleep 0.2
done
curl -sf "http://127.0.0.1:$b_ready/readiness" >/dev/null || { echo "policy-server did not become ready" >&2; cat "$tmp/b.err" >&2; exit 1; }

# The engines must give the same answer before their speed means anything.
differ=0
for policy in $policies; do
  for side in a b; do
    url=$a_url; [ "$side" = b ] && url=$b_url
    curl -sf -H 'Content-Type: application/json' --data @"$tmp/review.json" \
      "$url/validate/$policy" > "$tmp/$side.answer" || echo '{"failed": true}' > "$tmp/$side.answer"
  done
  if python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
    "$tmp/a.answer" "$tmp/b.answer"; then
    echo "same answer from both engines: $policy"
  else
    echo "the engines answer $policy differently:" >&2
    cat "$tmp/a.answer" "$tmp/b.answer" >&2
    differ=1
  fi
done

# run URL CONNECTIONS: one wrk run; prints "req/s p99-ms errors".
run() {
  local threads=$(( $2 < 2 ? $2 : 2 ))
  REVIEW="$tmp/review.json" wrk -t "$threads" -c "$2" -d "$duration" --timeout 10s \
    -s examples/wrk/post.lua "$1" > /dev/null 2> "$tmp/wrk.err" || true
  read -r _ requests socket status _ p99 micros < <(grep '^RESULT' "$tmp/wrk.err" || echo "RESULT 0 1 0 0 0 1")
  awk -v n="$requests" -v us="$micros" -v b="$p99" -v e=$((socket + status)) \
    'BEGIN { printf "%.1f %.3f %d\n", n / (us / 1e6), b / 1000, e }'
}

echo
echo "sidecarctl serve (A) vs policy-server (B): $(basename "$pod"), $duration a run, $rounds rounds A B, $workers workers, $(nproc) cores, plain HTTP on loopback"
printf '%-30s %5s %9s %9s %7s %9s %9s %7s\n' policy conns 'A req/s' 'B req/s' 'A/B' 'A p99 ms' 'B p99 ms' 'A/B'
errors=0
for policy in $policies; do
  for c in $concurrencies; do
    # One line per run, "A|B req/s p99-ms errors"; the row is the mean of each engine's.
    for _ in $(seq "$rounds"); do
      echo "A $(run "$a_url/validate/$policy" "$c")"
      echo "B $(run "$b_url/validate/$policy" "$c")"
    done > "$tmp/runs"
    errors=$((errors + $(awk '{ e += $4 } END { print e }' "$tmp/runs")))
    awk -v p="$policy" -v c="$c" '{ rps[$1] += $2; p99[$1] += $3; n[$1]++ } END {
      ar = rps["A"] / n["A"]; br = rps["B"] / n["B"]; ap = p99["A"] / n["A"]; bp = p99["B"] / n["B"]
      printf "%-30s %5d %9.0f %9.0f %7.2f %9.2f %9.2f %7.2f\n", p, c, ar, br, (br > 0 ? ar / br : 0), ap, bp, (bp > 0 ? ap / bp : 0)
    }' "$tmp/runs"
  done
done

rss() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
echo "resident memory after the load: A $(rss "$a_pid" VmRSS) KiB (peak $(rss "$a_pid" VmHWM)), B $(rss "$b_pid" VmRSS) KiB (peak $(rss "$b_pid" VmHWM))"
if [ "$errors" -ne 0 ]; then echo "compare-engines: $errors requests failed" >&2; exit 1; fi
exit "$differ"
