#!/usr/bin/env bash
# Load check of `sidecarctl serve`: wrk (Debian's) posts one AdmissionReview over HTTPS on
# loopback for a bounded time per policy and concurrency, the null policy first as the
# floor. Prints requests/s, p50 and p99 per row; fails when any request errs or gets a
# non-2xx answer.
# Then a soak over every policy at once, slow clients, and SIGTERM under load.
#   LOAD_DURATION (default 5s)  LOAD_CONCURRENCY (default "1 4 16 64")  LOAD_POD
#   SOAK_DURATION (default 60s)  SOAK_CONNECTIONS (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
sidecarctl=target/debug/sidecarctl
duration=${LOAD_DURATION:-5s}
concurrencies=${LOAD_CONCURRENCY:-"1 4 16 64"}
pod=${LOAD_POD:-examples/pods/istio-legacy-job.yaml}
command -v wrk >/dev/null || { echo "load.sh needs wrk: apt-get install wrk" >&2; exit 1; }

tmp=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
# The example policies.yml with absolute module paths, plus the null policy.
sed "s#\.\./\.\./build/#$PWD/build/#" examples/serve/policies.yml > "$tmp/policies.yml"
printf 'null:\n  module: %s\n' "$PWD/build/test-policies/null-policy.wasm" >> "$tmp/policies.yml"
"$sidecarctl" review "$pod" > "$tmp/review.json"

"$sidecarctl" serve -c "$tmp/policies.yml" --addr 127.0.0.1:0 \
  --cert "$tmp/tls.crt" --key "$tmp/tls.key" > "$tmp/out" 2> "$tmp/err" &
server=$!
for _ in $(seq 100); do grep -q '^listening on' "$tmp/out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$tmp/out")
[ -n "$url" ] || { cat "$tmp/err" >&2; exit 1; }


policies="null clusterwide-sidecar-injector clusterwide-sidecar-lifecycle clusterwide-sidecar-ordering clusterwide-sidecar-resources"
failed=0
# row LABEL CONNECTIONS DURATION PATH [PATHS]: one wrk run, one printed row; any error fails.
row() {
  local threads=$(( $2 < 2 ? $2 : 2 ))
  REVIEW="$tmp/review.json" PATHS="${5:-}" wrk -t "$threads" -c "$2" -d "$3" --timeout 10s \
    -s examples/wrk/post.lua "$url$4" > "$tmp/wrk.out" 2> "$tmp/wrk.err" || true
  read -r _ requests socket status p50 p99 micros < <(grep '^RESULT' "$tmp/wrk.err" || echo "RESULT 0 1 0 0 0 1")
  errors=$((socket + status))
  awk -v p="$1" -v c="$2" -v n="$requests" -v us="$micros" -v a="$p50" -v b="$p99" -v e="$errors" \
    'BEGIN { printf "%-30s %5d %10.0f %9.2f %9.2f %7d\n", p, c, n / (us / 1e6), a / 1000, b / 1000, e }'
  if [ "$errors" -ne 0 ] || [ "$requests" -eq 0 ]; then failed=1; fi
}

echo "sidecarctl serve load check: $(basename "$pod"), $duration per row, $(nproc) cores, HTTPS on loopback"
printf '%-30s %5s %10s %9s %9s %7s\n' policy conns 'req/s' 'p50 ms' 'p99 ms' errors
for policy in $policies; do
  for c in $concurrencies; do
    row "$policy" "$c" "$duration" "/validate/$policy"
  done
done

# The soak: SOAK_CONNECTIONS across every policy at once for SOAK_DURATION, after a warm-up,
# while slow clients drip their headers a byte a second (they must hold no worker: wrk
# must see no error); the server's resident memory at the end within 10% of after warm-up.
soak_duration=${SOAK_DURATION:-60s}
soak_connections=${SOAK_CONNECTIONS:-200}
every=$(for p in $policies; do printf '/validate/%s ' "$p"; done)
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$server/status"; }
host=${url#*://}; host=${host%:*}; port=${url##*:}
python3 - "$host" "$port" "$soak_duration" > "$tmp/slow.out" 2>&1 <<'PY' &
import socket, sys, time
host, port, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3]
end = time.time() + float(duration.rstrip("s")) + 10
head = b"POST /validate/null HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 200
conns, cut = {}, 0
while time.time() < end:
    for i in range(8):
        if i not in conns:
            conns[i] = [socket.create_connection((host, port)), 0]
    for i, c in list(conns.items()):
        try:
            c[0].send(head[c[1]:c[1] + 1]); c[1] += 1
        except OSError:
            c[0].close(); del conns[i]; cut += 1
    time.sleep(1)
print(f"slow clients cut off: {cut}")
PY
slow=$!
echo "soak: $soak_connections connections over every policy, 8 clients dripping their headers a byte a second"
row "warm-up (10s)" "$soak_connections" 10s "" "$every"
warm=$(rss)
row "soak ($soak_duration)" "$soak_connections" "$soak_duration" "" "$every"
end=$(rss)
wait "$slow" || true
cat "$tmp/slow.out"
echo "resident memory: $warm KiB after warm-up, $end KiB after the soak"
if [ "$end" -gt $(( warm * 11 / 10 )) ]; then echo "resident memory grew more than 10%" >&2; failed=1; fi

# SIGTERM under load: what is in flight is answered, the server exits 0.
REVIEW="$tmp/review.json" PATHS="$every" wrk -t 2 -c 64 -d 6s --timeout 10s -s examples/wrk/post.lua \
  "$url" > "$tmp/wrk.out" 2> "$tmp/wrk.err" &
load=$!
sleep 2
kill -TERM "$server"; status=0; wait "$server" || status=$?; server=
wait "$load" || true
read -r _ requests socket non2xx _ < <(grep '^RESULT' "$tmp/wrk.err" || echo "RESULT 0 0 0")
echo "SIGTERM under load: exit $status, $requests answered, $non2xx non-2xx, $socket refused or closed after the drain"
if [ "$status" -ne 0 ] || [ "$non2xx" -ne 0 ]; then failed=1; fi
if [ "$failed" -ne 0 ]; then echo "errors under load" >&2; exit 1; fi
echo "0 errors"
