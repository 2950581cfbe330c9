#!/usr/bin/env bash
# Heap allocations per request on the `ferry up` + endpoint path (the small mlp pushed with a
# training profile, behind an endpoint with a drift policy: stats, feedback index and drift
# sampling on), counted by valgrind's DHAT: the server runs twice under it, answering N1 and then
# N2 batch-1 JSON requests (one keep-alive client, one request at a time), and the difference of
# the two runs' totals over N2 - N1 is what one request costs: startup, the push and model loading
# cancel out. Counts, not timings, so a busy machine does not change them.
# With SITES=K it also lists the K call sites whose allocations grew most per request.
# DHAT sees malloc only, so the binary must use the system allocator: built without the default
# `jemalloc` feature (`cargo build --release --no-default-features`), which this script does
# itself (in a target dir of its own) when no BINARY is given.
#   usage: bench/allocs.sh [BINARY] [N1] [N2]      (defaults: that build, 500, 2500)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
if [ -z "${1:-}" ]; then
  target="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}/system-malloc"
  CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet --no-default-features --bin ferry
  set -- "$target/release/ferry" "${@:2}"
fi
BIN=$(realpath "$1")
if grep -q _rjem_malloc "$BIN"; then
  echo "$BIN allocates with jemalloc, which DHAT does not see: build it with --no-default-features" >&2
  exit 2
fi
N1="${2:-500}" N2="${3:-2500}"
command -v valgrind >/dev/null || { echo "installing valgrind (Debian package)" >&2; apt-get install -y -q valgrind >/dev/null; }
./scripts/fetch-ort.sh >/dev/null
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
python3 scripts/drift_demo.py train 2000 >"$work/train.csv"

# N → "blocks bytes" allocated by a `ferry up` that answered N requests.
count() {
  local n=$1 port; port=$(free_port)
  rm -rf "$work/data"
  valgrind --tool=dhat --dhat-out-file="$work/dhat-$n.json" --log-file="$work/valgrind.log" \
    "$BIN" up --no-demo --data-dir "$work/data" --listen "127.0.0.1:$port" --log-format json \
    2>"$work/server.log" &
  pid=$!
  for _ in $(seq 1200); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  FERRY_REGISTRY="http://127.0.0.1:$port" "$BIN" model push tests/fixtures/mlp.onnx --name mlp \
    --profile-data "$work/train.csv" >/dev/null
  FERRY_REGISTRY="http://127.0.0.1:$port" "$BIN" endpoint set bench --model mlp --stable 1 \
    --drift psi:0.2 >/dev/null
  for _ in $(seq 1200); do curl -fsS "http://127.0.0.1:$port/v2/models/bench/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  python3 - "$port" "$n" <<'PY'
import http.client, json, random, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 32],
                               "data": [round(random.uniform(-1, 1), 4) for _ in range(32)]}]})
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    conn.request("POST", "/v2/models/bench/infer", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  # "==123== Total:     1,234 bytes in 56 blocks"
  sed -n 's/.*Total:[[:space:]]*\([0-9,]*\) bytes in \([0-9,]*\) blocks.*/\2 \1/p' "$work/valgrind.log" | tr -d ,
}

read -r blocks1 bytes1 < <(count "$N1")
read -r blocks2 bytes2 < <(count "$N2")
python3 - "$N1" "$N2" "$blocks1" "$bytes1" "$blocks2" "$bytes2" <<'PY'
import sys
n1, n2, b1, y1, b2, y2 = map(int, sys.argv[1:])
print(f"| requests | allocations | bytes |\n|---:|---:|---:|\n| {n1} | {b1} | {y1} |\n| {n2} | {b2} | {y2} |")
print(f"per request: {(b2 - b1) / (n2 - n1):.1f} allocations, {(y2 - y1) / (n2 - n1) / 1024:.1f} KiB")
PY
if [ "${SITES:-0}" -gt 0 ]; then
  python3 - "$work/dhat-$N1.json" "$work/dhat-$N2.json" "$N1" "$N2" "$SITES" <<'PY'
import collections, json, re, sys
def sites(path):
    dhat = json.load(open(path))
    names = [re.sub(r"^0x[0-9A-Fa-f]+: ", "", f) for f in dhat["ftbl"]]
    blocks, sizes = collections.Counter(), collections.Counter()
    for pp in dhat["pps"]:
        # The first frames outside the allocator name the site.
        frames = [names[i] for i in pp["fs"]]
        frames = [f for f in frames if not re.match(r"(malloc|calloc|realloc|alloc::|__rust|__rdl|<alloc::|core::ptr|std::alloc)", f)]
        site = tuple(f.split(" (")[0][:110] for f in frames[:3])
        blocks[site] += pp["tbk"]
        sizes[site] += pp["tb"]
    return blocks, sizes
(a, a_bytes), (b, b_bytes) = sites(sys.argv[1]), sites(sys.argv[2])
n = int(sys.argv[4]) - int(sys.argv[3])
grown = sorted(((b[k] - a.get(k, 0)) / n, k) for k in b)
print(f"\nthe {sys.argv[5]} sites whose allocations grew most: per request, allocations and bytes")
for per, site in reversed(grown[-int(sys.argv[5]):]):
    size = (b_bytes[site] - a_bytes.get(site, 0)) / n
    print(f"{per:6.2f} {size:7.0f} B  " + "\n                 ← ".join(site))
PY
fi
echo "command: bench/allocs.sh $BIN $N1 $N2"
