# Helpers the benchmark scripts share; source it after `cd` to the repository root.
# Functions reading a server's CPU time use the caller's `$pid` and `$SECONDS_PER_RUN`.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU time of process $pid so far, in ticks (USER_HZ = 100, i.e. 10 ms each).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

# WIDTH → a wrk Lua script POSTing one JSON request with one FP32 row named `input` (fixed seed).
row_lua() {
  python3 - "$1" <<'PY'
import json, random, sys
width = int(sys.argv[1])
random.seed(1)
body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, width],
                               "data": [round(random.uniform(-1, 1), 4) for _ in range(width)]}]})
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print("wrk.body = " + json.dumps(body))
PY
}

# WRK_OUTPUT T0 T1 → "req/s p50_ms p99_ms cpu_us_per_request non2xx" from wrk's --latency output
# and the server's CPU ticks before and after the run.
wrk_summary() {
  python3 - "$1" "$2" "$3" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
t0, t1 = int(sys.argv[2]), int(sys.argv[3])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
def ms(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {ms(50):.2f} {ms(99):.2f} {(t1 - t0) * 10_000 / total:.1f} {errors.group(1) if errors else 0}")
PY
}

# URL LUA CONCURRENCY → wrk (2 threads) warms up for 2 s, then runs $SECONDS_PER_RUN s;
# prints wrk_summary's line for the measured run.
wrk_measure() {
  local out; out=$(mktemp)
  wrk -t2 -c"$3" -d2s -s "$2" "$1" >/dev/null
  local t0; t0=$(cpu_ticks)
  wrk -t2 -c"$3" -d"${SECONDS_PER_RUN}s" --latency -s "$2" "$1" >"$out"
  local t1; t1=$(cpu_ticks)
  wrk_summary "$out" "$t0" "$t1"
  rm -f "$out"
}
