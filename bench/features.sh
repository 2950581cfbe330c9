#!/usr/bin/env bash
# Online features, side by side in one run:
#  - materialization: `ferry features materialize` of a ROWS-row CSV with 32 FP32 features into
#    a Redis of its own (rows/s, MiB/s, peak RSS of the CLI for ROWS/10 and ROWS rows), next to
#    redis-benchmark's pipelined SET rate for values of the same size on the same Redis;
#  - lookup: batch-1 requests through `ferry up` naming one random customer (features read from
#    Redis) vs the same model sent the 32 features as a tensor: req/s, p50/p99 and the server CPU
#    per request, whose difference is what the lookup adds.
#   usage: bench/features.sh [ROWS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROWS="${1:-500000}"
SECONDS_PER_RUN="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
command -v redis-server >/dev/null || { echo "installing redis (Debian package)" >&2; apt-get install -y -q redis-server redis-tools >/dev/null; }
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
cargo build --release --locked --quiet
FERRY="$CARGO_TARGET_DIR/release/ferry"
ROOT="$PWD"

work=$(mktemp -d)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
rpid=$!
port=$(free_port)
(cd "$work" && exec "$FERRY" up --no-demo --listen "127.0.0.1:$port" --log-format json \
  --feature-store "redis://127.0.0.1:$rport" 2>"$work/up.log") &
pid=$!
trap 'kill $pid $rpid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
export FERRY_REGISTRY="http://127.0.0.1:$port"
STORE="redis://127.0.0.1:$rport"

python3 - "$work" "$ROWS" <<'PY'
import random, sys
work, rows = sys.argv[1], int(sys.argv[2])
random.seed(7)
header = "customer_id," + ",".join(f"f{i}" for i in range(32)) + "\n"
for name, n in (("small.csv", rows // 10), ("big.csv", rows)):
    with open(f"{work}/{name}", "w") as out:
        out.write(header)
        for c in range(n):
            out.write(f"c{c}," + ",".join(f"{random.uniform(-2, 2):.4f}" for _ in range(32)) + "\n")
PY
features=()
for i in $(seq 0 31); do features+=(--feature "f$i:FP32"); done
"$FERRY" features register customers --entity customer_id "${features[@]}" >/dev/null

materialize() { # FILE → "seconds peak_rss_mib"
  /usr/bin/time -f "%M" -o "$work/time.txt" \
    "$FERRY" features materialize customers "$1" --store "$STORE" -o json >"$work/event.json"
  python3 - "$work/event.json" "$work/time.txt" <<'PY'
import json, sys
event = json.load(open(sys.argv[1]))
rss_kib = int(open(sys.argv[2]).read().split()[-1])
print(f"{event['data']['seconds']:.3f} {rss_kib / 1024:.0f}")
PY
}
read -r small_s small_rss <<<"$(materialize "$work/small.csv")"
read -r big_s big_rss <<<"$(materialize "$work/big.csv")"
big_mib=$(python3 -c "import os; print(f'{os.path.getsize(\"$work/big.csv\") / 1048576:.1f}')")
# Values of a 32-FP32 row: a format byte, a 4-byte bitmap, 128 bytes of floats.
redis_set=$(redis-benchmark -p "$rport" -t set -n "$ROWS" -P 1000 -d 133 -r 100000000 -q 2>/dev/null \
  | tr '\r' '\n' | awk '/^SET:/ {print $2}' | tail -n1)

# Lookup: the demo MLP takes [batch, 32] FP32, trained (here: pushed) with the view.
"$FERRY" model push "$ROOT/tests/fixtures/mlp.onnx" --name churn --feature-view customers >/dev/null
for _ in $(seq 600); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/models/churn/infer" -H 'content-type: application/json' \
    -d '{"inputs":[{"name":"customer_id","datatype":"BYTES","shape":[1],"data":["c1"]}]}' 2>/dev/null && break
  sleep 0.1
done
python3 - "$work" "$ROWS" <<'PY'
import json, sys
work, rows = sys.argv[1], int(sys.argv[2])
with open(f"{work}/big.csv") as f:
    f.readline()
    values = [float(v) for v in f.readline().strip().split(",")[1:]]
tensor = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 32], "data": values}]})
with open(f"{work}/tensor.lua", "w") as out:
    out.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
    out.write("wrk.body = " + json.dumps(tensor) + "\n")
with open(f"{work}/entity.lua", "w") as out:
    out.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
    out.write(f"math.randomseed(7)\nrequest = function()\n  local body = "
              f"'{{\"inputs\":[{{\"name\":\"customer_id\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"c' .. math.random(0, {rows - 1}) .. '\"]}}]}}'\n"
              "  return wrk.format(nil, nil, nil, body)\nend\n")
PY

run() { # LUA → "req/s p50 p99 cpu_us non2xx"
  wrk_measure "http://127.0.0.1:$port/v2/models/churn/infer" "$work/$1.lua" 16
}
read -r t_rps t_p50 t_p99 t_cpu t_err <<<"$(run tensor)"
read -r e_rps e_p50 e_p99 e_cpu e_err <<<"$(run entity)"

small_rows=$((ROWS / 10))
cat <<TABLE

materialization: $ROWS rows × 32 FP32 features (CSV, $big_mib MiB) into Redis 7 on this machine
| file | rows | seconds | rows/s | MiB/s | peak RSS of the CLI |
|---|---:|---:|---:|---:|---:|
| small.csv | $small_rows | $small_s | $(python3 -c "print(f'{$small_rows/$small_s:.0f}')") | | $small_rss MiB |
| big.csv | $ROWS | $big_s | $(python3 -c "print(f'{$ROWS/$big_s:.0f}')") | $(python3 -c "print(f'{$big_mib/$big_s:.1f}')") | $big_rss MiB |
redis-benchmark SET, pipelined 1000, 133-byte values, same Redis: $redis_set/s
ratio: ferry materialize rows/s vs Redis's own pipelined SET rate: $(python3 -c "print(f'{100*$ROWS/$big_s/$redis_set:.0f}%')")

lookup: batch-1 JSON requests to ferry up (mlp 32→256→256→2), wrk 2 threads, 16 connections, ${SECONDS_PER_RUN}s each
| request | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |
|---|---:|---:|---:|---:|---:|
| 32 features sent as a tensor | $t_rps | $t_p50 | $t_p99 | $t_cpu | $t_err |
| one customer_id, 32 features read from Redis | $e_rps | $e_p50 | $e_p99 | $e_cpu | $e_err |
added by the lookup: $(python3 -c "print(f'{$e_cpu-$t_cpu:.1f}')") µs of server CPU and $(python3 -c "print(f'{$e_p50-$t_p50:.2f}')") ms at p50 per request; throughput $(python3 -c "print(f'{100*$e_rps/$t_rps:.0f}%')") of sending the tensor
command: bench/features.sh $ROWS $SECONDS_PER_RUN
TABLE
