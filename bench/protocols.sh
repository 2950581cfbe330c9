#!/usr/bin/env bash
# The compute-bound mlp_large (512 floats per row) at concurrency 64 through `ferry serving` in
# each protocol: JSON and binary tensors over REST (wrk), and gRPC (h2load, Debian's
# nghttp2-client, sending a framed ModelInferRequest with raw_input_contents), next to raw ONNX
# Runtime in-process at batch 64 with the same threads. Prints rows/s, the ratio to raw, and the
# server's CPU per request.
#   usage: bench/protocols.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_PER_RUN="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
command -v h2load >/dev/null || { echo "installing h2load (Debian package nghttp2-client)" >&2; apt-get install -y -q nghttp2-client >/dev/null; }
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
[ -f tests/fixtures/mlp_large.onnx ] || python3 scripts/gen_fixtures.py
cargo build --release --locked --quiet
FERRY="$CARGO_TARGET_DIR/release/ferry"
CPUS=$(nproc)

work=$(mktemp -d)
port=$(free_port)
"$FERRY" serving --listen "127.0.0.1:$port" --log-format json \
  --model "large=tests/fixtures/mlp_large.onnx" \
  --model "large1=tests/fixtures/mlp_large.onnx" --model-option "large1:intra_op_threads=1" \
  2>"$work/serving.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done

# The three bodies of one 512-float row: wrk scripts for JSON and binary, a file for gRPC.
python3 - "$work" <<'PY'
import json, random, struct, sys
work = sys.argv[1]
random.seed(1)
row = [round(random.uniform(-1, 1), 4) for _ in range(512)]
def lua_string(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}"
                         for b in data) + '"'
def script(name, content_type, body, extra=""):
    with open(f"{work}/{name}.lua", "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f'wrk.headers["Content-Type"] = "{content_type}"\n{extra}')
        f.write("wrk.body = " + lua_string(body) + "\n")
tensor = {"name": "input", "datatype": "FP32", "shape": [1, 512]}
script("json", "application/json", json.dumps({"inputs": [{**tensor, "data": row}]}).encode())
header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 2048}}],
                     "parameters": {"binary_data_output": True}}).encode()
script("binary", "application/octet-stream", header + struct.pack("<512f", *row),
       f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"\n')
# ModelInferRequest, field by field (model_name is added per model below).
def field(number, payload: bytes) -> bytes:
    def varint(n):
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out
    return varint(number << 3 | 2) + varint(len(payload)) + payload
shape = bytes([0x01, 0x80, 0x04])  # packed int64 1, 512
tensor_msg = field(1, b"input") + field(2, b"FP32") + field(3, shape)
for model in ("large", "large1"):
    message = field(1, model.encode()) + field(5, tensor_msg) + field(7, struct.pack("<512f", *row))
    with open(f"{work}/{model}.grpc", "wb") as f:
        f.write(b"\0" + len(message).to_bytes(4, "big") + message)
PY

# One gRPC call first: the framed body must be answered with grpc-status 0.
status=$(curl -sS --http2-prior-knowledge -o /dev/null -D - -H 'content-type: application/grpc' \
  -H 'te: trailers' --data-binary "@$work/large.grpc" \
  "http://127.0.0.1:$port/inference.GRPCInferenceService/ModelInfer" | tr -d '\r' | grep -i '^grpc-status' || true)
[ -z "$status" ] || { echo "the gRPC body was refused: $status" >&2; exit 1; }

# NAME MODEL → "req/s cpu_us errors"
rest() {
  local r; r=$(wrk_measure "http://127.0.0.1:$port/v2/models/$2/infer" "$work/$1.lua" 64)
  awk '{print $1, $4, $5}' <<<"$r"
}
grpc() {
  local model=$1 url="http://127.0.0.1:$port/inference.GRPCInferenceService/ModelInfer"
  local args=(-c64 -m1 -t2 -d "$work/$model.grpc" -H 'content-type: application/grpc' -H 'te: trailers')
  h2load "${args[@]}" -D 2 "$url" >/dev/null
  local t0; t0=$(cpu_ticks)
  h2load "${args[@]}" -D "$SECONDS_PER_RUN" "$url" >"$work/out.txt"
  local t1; t1=$(cpu_ticks)
  python3 - "$work/out.txt" "$t0" "$t1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", text).group(1))
done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
total = int(done.group(1))
print(f"{rps:.0f} {(int(sys.argv[3]) - int(sys.argv[2])) * 10_000 / max(total, 1):.1f} {int(done.group(3)) + int(done.group(4))}")
PY
}
raw() { # FILE:WIDTH:BATCH:THREADS → "rows/s cpu_us_per_row"
  FERRY_BENCH_RAW="$1" FERRY_BENCH_SECONDS=5 cargo bench --locked --quiet -p ferry-serving --bench throughput 2>/dev/null | tail -n1
}

read -r j1 j1cpu j1err <<<"$(rest json large1)"
read -r b1 b1cpu b1err <<<"$(rest binary large1)"
read -r g1 g1cpu g1err <<<"$(grpc large1)"
read -r j2 j2cpu j2err <<<"$(rest json large)"
read -r b2 b2cpu b2err <<<"$(rest binary large)"
read -r g2 g2cpu g2err <<<"$(grpc large)"
kill $pid; wait $pid 2>/dev/null || true
read -r raw1 raw1cpu <<<"$(raw "mlp_large.onnx:512:64:1")"
read -r raw2 raw2cpu <<<"$(raw "mlp_large.onnx:512:64:$CPUS")"
pct() { python3 -c "print(f'{100*$1/$2:.0f}%')"; }

cat <<TABLE

mlp_large (512→2048→2048→10), one row per request, concurrency 64, ${SECONDS_PER_RUN}s per run, $CPUS CPUs
| protocol | ORT threads | rows/s | vs raw batch 64 | server CPU µs/req | failed |
|---|---:|---:|---:|---:|---:|
| REST, JSON | 1 | $j1 | $(pct "$j1" "$raw1") | $j1cpu | $j1err |
| REST, binary tensors | 1 | $b1 | $(pct "$b1" "$raw1") | $b1cpu | $b1err |
| gRPC, raw_input_contents | 1 | $g1 | $(pct "$g1" "$raw1") | $g1cpu | $g1err |
| REST, JSON | $CPUS | $j2 | $(pct "$j2" "$raw2") | $j2cpu | $j2err |
| REST, binary tensors | $CPUS | $b2 | $(pct "$b2" "$raw2") | $b2cpu | $b2err |
| gRPC, raw_input_contents | $CPUS | $g2 | $(pct "$g2" "$raw2") | $g2cpu | $g2err |
| raw ONNX Runtime, batch 64, in-process | 1 | $raw1 | | | |
| raw ONNX Runtime, batch 64, in-process | $CPUS | $raw2 | | | |
command: bench/protocols.sh $SECONDS_PER_RUN
TABLE
