#!/usr/bin/env bash
# Upload and download a 500 MiB model through `ferry registry` alone (SQLite + local folder, no
# serving: nothing loads the model), next to `cp` of the same file on the same disk with and
# without an fsync. An upload is durable when it is acknowledged, so it compares with cp + fsync;
# a download to a file is not fsynced by curl, so it compares with cp.
# Prints MiB/s, ratios and the registry's RSS.
#   usage: [FERRY=binary] bench/registry.sh [SIZE_MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SIZE_MIB="${1:-500}"
RUNS="${2:-3}"
# FERRY=path/to/ferry measures that binary instead of building one.
if [ -z "${FERRY:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
  cargo build --release --locked --quiet
  FERRY="$CARGO_TARGET_DIR/release/ferry"
fi

work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}")
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/make_big_model.py "$work/big.onnx" "$SIZE_MIB" 0
bytes=$(stat -c %s "$work/big.onnx")
port=$(free_port)
"$FERRY" registry --auto-migrate true --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --max-upload-size 4GiB --log-format json 2>"$work/ferry.log" &
pid=$!
for _ in $(seq 200); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$pid/status"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { python3 -c "print(f'{$bytes/1048576/($2-$1):.0f}')"; }

idle_rss=$(rss_kib)
ups=(); downs=(); nulls=(); cps=(); syncs=()
for i in $(seq "$RUNS"); do
  # A distinct model per run: the registry stores identical bytes once.
  python3 bench/make_big_model.py "$work/big.onnx" "$SIZE_MIB" "$i"
  sync
  t0=$(now)
  curl -fsS -o "$work/up.json" -H 'x-ferry-client: bench' -F "model=@$work/big.onnx" -F "metadata={\"tags\":{\"run\":\"$i\"}};type=application/json" \
    "http://127.0.0.1:$port/api/v1/models/bench/versions"
  t1=$(now); ups+=("$(rate "$t0" "$t1")")
  version=$(python3 -c "import json; print(json.load(open('$work/up.json'))['version'])")
  t0=$(now)
  curl -fsS -o "$work/down.onnx" "http://127.0.0.1:$port/api/v1/models/bench/versions/$version/artifact"
  t1=$(now); downs+=("$(rate "$t0" "$t1")")
  cmp -s "$work/big.onnx" "$work/down.onnx" || { echo "downloaded bytes differ" >&2; exit 1; }
  rm -f "$work/down.onnx"
  # The registry's own rate, without the client's disk in the way.
  t0=$(now)
  curl -fsS -o /dev/null "http://127.0.0.1:$port/api/v1/models/bench/versions/$version/artifact"
  t1=$(now); nulls+=("$(rate "$t0" "$t1")")
  t0=$(now); cp "$work/big.onnx" "$work/copy.onnx"; t1=$(now); cps+=("$(rate "$t0" "$t1")")
  rm -f "$work/copy.onnx"; sync
  t0=$(now); cp "$work/big.onnx" "$work/copy.onnx"; sync "$work/copy.onnx"; t1=$(now)
  syncs+=("$(rate "$t0" "$t1")")
  rm -f "$work/copy.onnx"; sync
done
peak_hwm=$(hwm_kib)
up=$(printf '%s\n' "${ups[@]}" | median)
down=$(printf '%s\n' "${downs[@]}" | median)
null=$(printf '%s\n' "${nulls[@]}" | median)
cp_rate=$(printf '%s\n' "${cps[@]}" | median)
sync_rate=$(printf '%s\n' "${syncs[@]}" | median)
growth=$(( (peak_hwm - idle_rss) / 1024 ))
cat <<TABLE

Registry throughput, ${SIZE_MIB} MiB model, SQLite + local folder, median of $RUNS runs ($(nproc) cores)
| operation                  | MiB/s | vs cp | vs MLflow (190 up / 235 down MiB/s, 2026-11-29) |
|----------------------------|------:|------:|------------------------------------:|
| upload (curl -F → ferry, fsynced) | $up | $(python3 -c "print(f'{$up/$sync_rate:.2f}')") of cp + fsync | $(python3 -c "print(f'{$up/190:.1f}x')") |
| download (ferry → file)    | $down | $(python3 -c "print(f'{$down/$cp_rate:.2f}')") | $(python3 -c "print(f'{$down/235:.1f}x')") |
| download (ferry → /dev/null) | $null | $(python3 -c "print(f'{$null/$cp_rate:.2f}')") | $(python3 -c "print(f'{$null/235:.1f}x')") |
| cp on the same disk        | $cp_rate | 1.00 | |
| cp + fsync on the same disk | $sync_rate | $(python3 -c "print(f'{$sync_rate/$cp_rate:.2f}')") | |

registry RSS: idle $((idle_rss / 1024)) MiB, peak $((peak_hwm / 1024)) MiB, growth $growth MiB (target < 64 MiB; MLflow idles at ~3.6 GiB)
command: bench/registry.sh $SIZE_MIB $RUNS
TABLE
