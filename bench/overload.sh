#!/usr/bin/env bash
# Overload: `ferry serving` driven far past its capacity for a minute, then back to normal.
#   usage: bench/overload.sh [OVERLOAD_SECONDS] [FACTOR]     (defaults 60 and 10)
#   OVERLOAD_SERVER_ARGS adds flags to `ferry serving`, e.g. "--max-batch-size 1" for a capacity
#   low enough that wrk on the same two CPUs can offer more than 10x it.
#
# 1. capacity: wrk at concurrency 64 (below the queue capacity of 256, so nothing is refused)
#    for 10 s on the compute-bound mlp_large (one ORT thread): the req/s and p99 the server
#    sustains with full batches.
# 2. overload: wrk at concurrency 64×FACTOR for OVERLOAD_SECONDS. wrk is closed-loop and
#    refused requests come back in microseconds, so the offered rate is printed as measured
#    (on 2 shared cores wrk itself caps it). Counts every status (2xx, 429, 503, other), samples the server's RSS
#    every second, and reads the p99 of the *accepted* requests from the server's own
#    `ferry_serving_request_duration_seconds` histogram (ok answers only).
# 3. recovery: the capacity run again right after; full throughput must come back at once.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
OVERLOAD_SECONDS="${1:-60}"
FACTOR="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
[ -f tests/fixtures/mlp_large.onnx ] || python3 scripts/gen_fixtures.py
cargo build --release --locked --quiet --bin ferry
FERRY="$CARGO_TARGET_DIR/release/ferry"

work=$(mktemp -d)
port=$(free_port)
"$FERRY" serving --listen "127.0.0.1:$port" --log-format json \
  --model "large=tests/fixtures/mlp_large.onnx" --intra-op-threads 1 ${OVERLOAD_SERVER_ARGS:-} \
  2>"$work/serving.log" &
pid=$!
sampler=""
trap 'kill $pid $sampler 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
url="http://127.0.0.1:$port/v2/models/large/infer"

python3 - >"$work/load.lua" <<'PY'
import json, random
random.seed(1)
body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 512],
                               "data": [round(random.uniform(-1, 1), 4) for _ in range(512)]}]})
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print("wrk.body = " + json.dumps(body))
print('''
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for status, n in pairs(c) do total[status] = (total[status] or 0) + n end
  end
  for status, n in pairs(total) do io.write(string.format("status %d %d\\n", status, n)) end
  io.write(string.format("errors connect=%d read=%d write=%d timeout=%d\\n",
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
''')
PY

metrics() { curl -fsS "http://127.0.0.1:$port/metrics" >"$1"; }
rss_mib() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
summary() { # WRK_OUTPUT → "ok_per_s refused other p99_all_ms"
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
secs = float(re.search(r"requests in ([\d.]+)(ms|s|m)", text).group(1))
unit = re.search(r"requests in [\d.]+(ms|s|m)", text).group(1)
secs = secs / 1000 if unit == "ms" else secs * 60 if unit == "m" else secs
counts = {int(s): int(n) for s, n in re.findall(r"^status (\d+) (\d+)", text, re.M)}
errors = sum(int(n) for n in re.findall(r"=(\d+)", re.search(r"^errors .*$", text, re.M).group(0)))
ok = sum(n for s, n in counts.items() if 200 <= s < 300)
refused = sum(n for s, n in counts.items() if s in (429, 503))
other = sum(n for s, n in counts.items() if not (200 <= s < 300 or s in (429, 503))) + errors
print(f"{ok / secs:.0f} {refused} {other} {ok}")
PY
}
p99_ok() { # METRICS_BEFORE METRICS_AFTER → p99 ms of the ok requests in between
  python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path):
    out = {}
    for le, n in re.findall(r'^ferry_serving_request_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)',
                            open(path).read(), re.M):
        key = float("inf") if le == "+Inf" else float(le)
        out[key] = out.get(key, 0) + float(n)
    return out
a, b = buckets(sys.argv[1]), buckets(sys.argv[2])
diff = sorted((le, b[le] - a.get(le, 0)) for le in b)
total = diff[-1][1]
lower, below = 0.0, 0.0
for le, n in diff:
    if n >= 0.99 * total:
        if le == float("inf"):
            print(f">{lower * 1000:.0f}")
        else:  # linear inside the bucket, as Prometheus' histogram_quantile does
            share = (0.99 * total - below) / max(n - below, 1e-9)
            print(f"{(lower + (le - lower) * share) * 1000:.1f}")
        break
    lower, below = le, n
PY
}

capacity() { # LABEL → prints a line, sets $cap_rps
  wrk -t2 -c64 -d3s -s "$work/load.lua" "$url" >/dev/null
  metrics "$work/m0"
  wrk -t2 -c64 -d10s -s "$work/load.lua" "$url" >"$work/cap.txt"
  metrics "$work/m1"
  read -r cap_rps _ cap_other _ <<<"$(summary "$work/cap.txt")"
  echo "$1: $cap_rps ok req/s, p99 of accepted $(p99_ok "$work/m0" "$work/m1") ms, failures $cap_other"
}

capacity "capacity (c=64)"
before_rps=$cap_rps
rss_idle=$(rss_mib)

conns=$((64 * FACTOR))
( peak=0; while kill -0 $pid 2>/dev/null; do r=$(rss_mib); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$work/peak"; sleep 1; done ) &
sampler=$!
metrics "$work/o0"
ulimit -n 65536 2>/dev/null || true
wrk -t2 -c"$conns" -d"${OVERLOAD_SECONDS}s" --timeout 30s -s "$work/load.lua" "$url" >"$work/over.txt"
metrics "$work/o1"
read -r over_rps over_refused over_other over_ok <<<"$(summary "$work/over.txt")"
offered=$(python3 -c "print(round(($over_ok + $over_refused + $over_other) / $OVERLOAD_SECONDS / $before_rps, 1))")
echo "overload (c=$conns, ${OVERLOAD_SECONDS}s): offered ${offered}x capacity; $over_rps ok req/s," \
  "$over_refused refused (429/503), $over_other other failures;" \
  "p99 of accepted $(p99_ok "$work/o0" "$work/o1") ms"

capacity "recovery (c=64, right after)"
kill $sampler 2>/dev/null || true
sampler=""
echo "throughput after / before: $(python3 -c "print(round($cap_rps / $before_rps, 2))")"
echo "server RSS: idle $rss_idle MiB, peak during overload $(cat "$work/peak" 2>/dev/null || echo "$rss_idle") MiB"
kill -0 $pid 2>/dev/null && echo "server alive: yes" || { echo "server alive: NO"; exit 1; }
[ "$over_other" -eq 0 ] || { echo "FAIL: $over_other requests failed with something other than 429/503"; exit 1; }
peak=$(cat "$work/peak" 2>/dev/null || echo "$rss_idle")
[ $((peak - rss_idle)) -lt 512 ] || { echo "FAIL: memory grew by $((peak - rss_idle)) MiB under overload"; exit 1; }
[ "$over_refused" -gt 0 ] || { echo "FAIL: nothing was refused: the load did not exceed capacity"; exit 1; }
