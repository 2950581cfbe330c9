#!/usr/bin/env bash
# The floor under any HTTP inference server on this machine: nginx (one worker process) answering
# the same batch-1 JSON POSTs as bench/serving.sh with a fixed 200 and a small JSON body, under
# the same wrk. What nginx spends per request is the kernel's TCP and scheduling plus a minimal
# HTTP parser: the part of Ferry's CPU per request that no change inside Ferry can remove.
#   usage: bench/floor.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_PER_RUN="${1:-8}"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)" >&2; apt-get install -y -q wrk >/dev/null; }
command -v nginx >/dev/null || { echo "installing nginx (Debian package)" >&2; apt-get install -y -q nginx-light >/dev/null; }

work=$(mktemp -d)
port=$(free_port)
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work;
  server {
    listen 127.0.0.1:$port;
    location / {
      default_type application/json;
      return 200 '{"model_name":"mlp","outputs":[{"name":"output","datatype":"FP32","shape":[1,2],"data":[0.1,0.9]}]}';
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
master=$!
trap 'kill $master 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fsS -X POST "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
pid=$(pgrep -P "$master" | head -n1)
row_lua 32 >"$work/small.lua"
echo "| server | concurrency | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for c in 16 64; do
  echo "| nginx, fixed answer, 1 worker | $c | $(wrk_measure "http://127.0.0.1:$port/v2/models/mlp/infer" "$work/small.lua" "$c" | sed 's/ / | /g') |"
done
echo "command: bench/floor.sh $SECONDS_PER_RUN"
