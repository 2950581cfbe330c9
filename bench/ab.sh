#!/usr/bin/env bash
# Two ferry binaries side by side, alternated (A B A B …) so that a noisy machine weighs on both
# alike: batch-1 JSON requests from wrk through
#   - `ferry up` with the small mlp pushed and an endpoint in front of it (stats, feedback index,
#     drift sampling against a training profile: the path every prediction takes), c=16;
#   - `ferry serving` with the small mlp, c=16 and c=64;
#   - `ferry serving` with the compute-bound mlp_large on one ONNX Runtime thread, c=64.
# Prints each run and, per case, the median of B over the median of A.
#   usage: bench/ab.sh A_BINARY B_BINARY [SECONDS] [ROUNDS]
# Build the two binaries first, e.g. `git worktree add /tmp/a <commit>` and
# `cargo build --release` in each (copy each binary out before building the next).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=$(realpath "$1") B=$(realpath "$2")
SECONDS_PER_RUN="${3:-8}" ROUNDS="${4:-3}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
./scripts/fetch-ort.sh >/dev/null
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
[ -f tests/fixtures/mlp_large.onnx ] || python3 scripts/gen_fixtures.py

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
python3 scripts/drift_demo.py train 2000 >"$work/train.csv"

row_lua 32 >"$work/small.lua"
row_lua 512 >"$work/large.lua"

wait_ready() { for _ in $(seq 600); do curl -fsS "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

start() { # BINARY CASE → sets pid and url
  local bin=$1 case=$2 port; port=$(free_port)
  case $case in
    up)
      rm -rf "$work/data"
      "$bin" up --no-demo --data-dir "$work/data" --listen "127.0.0.1:$port" --log-format json 2>"$work/server.log" &
      pid=$!
      wait_ready "http://127.0.0.1:$port/readyz"
      FERRY_REGISTRY="http://127.0.0.1:$port" "$bin" model push tests/fixtures/mlp.onnx --name mlp \
        --profile-data "$work/train.csv" >/dev/null
      FERRY_REGISTRY="http://127.0.0.1:$port" "$bin" endpoint set bench --model mlp --stable 1 \
        --drift psi:0.2 >/dev/null
      url="http://127.0.0.1:$port/v2/models/bench/infer" ;;
    serving)
      "$bin" serving --listen "127.0.0.1:$port" --log-format json --model "mlp=tests/fixtures/mlp.onnx" \
        --model "large1=tests/fixtures/mlp_large.onnx" --model-option "large1:intra_op_threads=1" \
        2>"$work/server.log" &
      pid=$!
      url="http://127.0.0.1:$port/v2/models" ;;
  esac
  wait_ready "http://127.0.0.1:$port/v2/health/ready"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "| round | binary | case | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |"
echo "|---:|---|---|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    start "$bin" up
    echo "| $round | $side | up+endpoint mlp c16 | $(wrk_measure "$url" "$work/small.lua" 16 | sed 's/ / | /g') |" | tee -a "$work/results"
    stop
    start "$bin" serving
    for spec in "mlp small 16" "mlp small 64" "large1 large 64"; do
      read -r model lua c <<<"$spec"
      echo "| $round | $side | serving $model c$c | $(wrk_measure "$url/$model/infer" "$work/$lua.lua" "$c" | sed 's/ / | /g') |" | tee -a "$work/results"
    done
    stop
  done
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(sys.argv[1])]
print("\nmedians, B / A:")
print("| case | A req/s | B req/s | B/A req/s | A µs/req | B µs/req | B/A µs/req |")
print("|---|---:|---:|---:|---:|---:|---:|")
for case in dict.fromkeys(r[2] for r in rows):
    med = {s: [statistics.median(float(r[i]) for r in rows if r[1] == s and r[2] == case) for i in (3, 6)]
           for s in "AB"}
    print(f"| {case} | {med['A'][0]:.0f} | {med['B'][0]:.0f} | {med['B'][0] / med['A'][0]:.2f} | "
          f"{med['A'][1]:.1f} | {med['B'][1]:.1f} | {med['B'][1] / med['A'][1]:.2f} |")
PY
echo "command: bench/ab.sh $1 $2 $SECONDS_PER_RUN $ROUNDS"
