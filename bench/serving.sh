#!/usr/bin/env bash
# Batch-1 JSON inference through `ferry serving` under wrk, next to raw ONNX Runtime in-process on
# the same model and threads. Prints req/s, p50/p99, server CPU µs per request and peak RSS.
#   usage: bench/serving.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_PER_RUN="${1:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
[ -f tests/fixtures/mlp_large.onnx ] || python3 scripts/gen_fixtures.py
cargo build --release --locked --quiet
FERRY="$CARGO_TARGET_DIR/release/ferry"
CPUS=$(nproc)

work=$(mktemp -d)
port=$(free_port)
"$FERRY" serving --listen "127.0.0.1:$port" --log-format json \
  --model "mlp=tests/fixtures/mlp.onnx" --model "large=tests/fixtures/mlp_large.onnx" \
  --model "large1=tests/fixtures/mlp_large.onnx" --model-option "large1:intra_op_threads=1" \
  2>"$work/serving.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done

row_lua 32 >"$work/mlp.lua"
row_lua 512 >"$work/large.lua"
cp "$work/large.lua" "$work/large1.lua"

run() { # NAME CONCURRENCY → "req/s p50 p99 cpu_us errors"
  wrk_measure "http://127.0.0.1:$port/v2/models/$1/infer" "$work/$1.lua" "$2"
}

raw() { # FILE:WIDTH:BATCH:THREADS → "rows/s cpu_us_per_row"
  FERRY_BENCH_RAW="$1" FERRY_BENCH_SECONDS=5 cargo bench --locked --quiet -p ferry-serving --bench throughput 2>/dev/null | tail -n1
}

read -r mlp16 mlp16p50 mlp16p99 mlp16cpu mlp16err <<<"$(run mlp 16)"
read -r mlp64 mlp64p50 mlp64p99 mlp64cpu mlp64err <<<"$(run mlp 64)"
read -r big64 big64p50 big64p99 big64cpu big64err <<<"$(run large 64)"
read -r one64 one64p50 one64p99 one64cpu one64err <<<"$(run large1 64)"
peak=$(awk '/^VmHWM/ {print int($2/1024)}' "/proc/$pid/status")
kill $pid; wait $pid 2>/dev/null || true

read -r raw1 raw1cpu <<<"$(raw "mlp.onnx:32:1:1")"
read -r raw64 raw64cpu <<<"$(raw "mlp_large.onnx:512:64:$CPUS")"
read -r raw64one raw64onecpu <<<"$(raw "mlp_large.onnx:512:64:1")"

cat <<TABLE

ferry serving, batch-1 JSON requests from wrk (2 threads), ${SECONDS_PER_RUN}s per run, $CPUS CPUs
| model | concurrency | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |
|---|---:|---:|---:|---:|---:|---:|
| mlp 32→256→256→2 | 16 | $mlp16 | $mlp16p50 | $mlp16p99 | $mlp16cpu | $mlp16err |
| mlp 32→256→256→2 | 64 | $mlp64 | $mlp64p50 | $mlp64p99 | $mlp64cpu | $mlp64err |
| mlp 512→2048→2048→10, $CPUS ORT threads | 64 | $big64 | $big64p50 | $big64p99 | $big64cpu | $big64err |
| mlp 512→2048→2048→10, 1 ORT thread | 64 | $one64 | $one64p50 | $one64p99 | $one64cpu | $one64err |

raw ONNX Runtime in-process, same models:
| run | rows/s | CPU µs/row |
|---|---:|---:|
| mlp, batch 1, 1 thread | $raw1 | $raw1cpu |
| mlp_large, batch 64, $CPUS threads | $raw64 | $raw64cpu |
| mlp_large, batch 64, 1 thread | $raw64one | $raw64onecpu |

ratios: mlp server CPU per request vs raw batch-1 inference: $(python3 -c "print(f'{$mlp64cpu/$raw1cpu:.1f}x')") (issue 18: ≤ 25 µs per request on the ferry up path, which bench/ab.sh measures);
        mlp_large rows/s through Ferry at c=64 vs raw batch-64, same threads: $(python3 -c "print(f'{100*$one64/$raw64one:.0f}%')") with 1 thread, $(python3 -c "print(f'{100*$big64/$raw64:.0f}%')") with $CPUS (issue 18: ≥ 90% for binary tensors and gRPC, which bench/protocols.sh measures)
peak RSS of ferry serving: $peak MiB
command: bench/serving.sh $SECONDS_PER_RUN
TABLE
