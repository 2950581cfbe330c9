#!/usr/bin/env bash
# Does a slow shadow slow the primary? An endpoint whose stable version is mlp.onnx gets a
# shadow ~10x slower (mlp_slow.onnx, same signature). At half of the measured capacity, the
# primary's p99 with the shadow mirroring every request is compared with the p99 without it.
#   usage: bench/shadow.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_PER_RUN="${1:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
[ -f tests/fixtures/mlp_slow.onnx ] || python3 scripts/gen_fixtures.py
cargo build --release --locked --quiet
FERRY="$CARGO_TARGET_DIR/release/ferry"

work=$(mktemp -d)
port=$(free_port)
base="http://127.0.0.1:$port"
"$FERRY" up --no-demo --listen "127.0.0.1:$port" --data-dir "$work/data" --log-format json 2>"$work/ferry.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 300); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
export FERRY_REGISTRY="$base"
"$FERRY" model push tests/fixtures/mlp.onnx --name fraud >/dev/null
"$FERRY" model push tests/fixtures/mlp_slow.onnx --name fraud >/dev/null

policy() { "$FERRY" endpoint set fraud --model fraud --stable 1 "$@" >/dev/null; sleep 2; }
body=$(python3 -c 'import json; print(json.dumps(json.load(open("tests/fixtures/mlp-request.json"))))')
lua() { # DELAY_MS
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$body]]
function delay() return $1 end
LUA
}
run() { # CONNECTIONS → "req/s p99_ms"
  wrk -t2 -c"$1" -d"${SECONDS_PER_RUN}s" --latency -s "$work/post.lua" "$base/v2/models/fraud/infer" >"$work/wrk.txt"
  python3 - "$work/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", t, re.M)
v, u = float(m.group(1)), m.group(2)
p99 = v / 1000 if u == "us" else v * 1000 if u == "s" else v
print(f"{rps:.0f} {p99:.3f}")
PY
}

# Capacity of the primary alone, closed loop.
policy
lua 0
read -r capacity _ <<<"$(run 32)"
# Half of it, paced: each connection waits 1 ms between requests; the number of connections is
# calibrated so that the paced rate is half the capacity.
lua 1
read -r probe _ <<<"$(run 16)"
conns=$(python3 -c "print(max(1, round(16 * ($capacity / 2) / $probe)))")
read -r rate_off p99_off <<<"$(run "$conns")"
policy --shadow 2:1.0
read -r rate_on p99_on <<<"$(run "$conns")"
sleep 6
analysis=$(curl -fsS "$base/api/v1/endpoints/fraud/analysis?window=5m")
compared=$(python3 -c "import json,sys; a=json.loads(sys.argv[1]); print(next(v['shadow_compared'] for v in a['versions'] if v['version']==2))" "$analysis")
dropped=$(python3 -c "import json,sys; a=json.loads(sys.argv[1]); print(next(v['shadow_dropped'] for v in a['versions'] if v['version']==2))" "$analysis")

cat <<TABLE

Shadow impact on the primary, mlp.onnx stable + mlp_slow.onnx shadow (~10x the work), $(nproc) CPUs
capacity of the primary alone (c=32, closed loop): $capacity req/s; paced runs at about half ($conns connections)
| run | req/s | primary p99 ms |
|---|---:|---:|
| no shadow | $rate_off | $p99_off |
| shadow mirroring every request | $rate_on | $p99_on |

p99 with shadow / without: $(python3 -c "print(f'{$p99_on/$p99_off:.2f}')") (target ≤ 1.15)
shadow copies compared: $compared, dropped (queue full, shed to protect the primary): $dropped
command: bench/shadow.sh $SECONDS_PER_RUN
TABLE
