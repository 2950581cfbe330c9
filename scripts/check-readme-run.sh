#!/usr/bin/env bash
# Exercises the README's commands that are not console walk-through steps:
# `cargo run --release -- up`, `cargo install --path . --locked`, `ferry up` from the installed
# binary (through the walk-through test), `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet

log=$(mktemp)
rm -rf ferry-data
cargo run --release -- up >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf ferry-data "$log"' EXIT
for _ in $(seq 600); do
  curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "ferry up exited early" >&2; exit 1; }
  sleep 0.1
done
curl -fsS http://127.0.0.1:8080/api/v1/models/demo/versions/production | grep -q '"name":"demo"' || {
  cat "$log"; echo "ferry up does not serve the demo model" >&2; exit 1; }
kill -TERM $pid
wait $pid || { cat "$log"; echo "ferry up did not stop cleanly on SIGTERM" >&2; exit 1; }
echo "cargo run --release -- up: OK"

cargo install --path . --locked --quiet
installed="$(cargo_home="${CARGO_HOME:-$HOME/.cargo}"; echo "$cargo_home/bin/ferry")"
"$installed" --version
FERRY_BIN="$installed" cargo test --locked --quiet --test readme
echo "cargo install --path . --locked, and the walk-through with the installed binary: OK"

make lint
