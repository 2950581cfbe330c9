#!/usr/bin/env bash
# Exercises the README's commands that are not console walk-through steps: `make up`,
# `make ort`, `cargo install --path . --locked`, `ferry up` and the walk-through with the
# installed binary, both `ferry serving` examples, `make lint` and `make screenshots`.
set -euo pipefail
if [ "$#" -gt 0 ]; then
  echo "usage: scripts/check-readme-run.sh (no arguments: it builds, installs and runs what the README shows)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."

wait_ready() { # URL PID LOG
  for _ in $(seq 1200); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; echo "exited before $1 answered" >&2; return 1; }
    sleep 0.1
  done
  cat "$3"; echo "$1 never answered" >&2; return 1
}
stop() { kill -TERM "$1"; wait "$1" || { echo "did not stop cleanly on SIGTERM" >&2; return 1; }; }
infer() { # URL
  curl -fsS "$1" -H 'content-type: application/json' -d @tests/fixtures/mlp-request.json | grep -q '"outputs"'
}

log=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf ferry-data ferry-cache "$log"' EXIT

make ort
cargo build --release --locked --quiet
rm -rf ferry-data
make up >"$log" 2>&1 &
pid=$!
wait_ready http://127.0.0.1:8080/v2/health/ready $pid "$log"
infer http://127.0.0.1:8080/v2/models/demo/infer
# make → cargo → ferry: stop the server itself, then make.
kill -TERM "$(pgrep -f 'release/ferry up' | head -n1)"
wait $pid || true
echo "make up: OK"

cargo install --path . --locked --quiet
ferry="${CARGO_HOME:-$HOME/.cargo}/bin/ferry"
"$ferry" --version
FERRY_BIN="$ferry" cargo test --locked --quiet --test readme
echo "cargo install --path . --locked, ferry up and the walk-through with the installed binary: OK"

rm -rf ferry-data
"$ferry" up >"$log" 2>&1 &
up=$!
wait_ready http://127.0.0.1:8080/readyz $up "$log"
"$ferry" model push tests/fixtures/mlp.onnx --name fraud --alias production
"$ferry" serving --registry http://127.0.0.1:8080 --model fraud@production --listen 127.0.0.1:8081 >"$log" 2>&1 &
serving=$!
wait_ready http://127.0.0.1:8081/v2/health/ready $serving "$log"
infer http://127.0.0.1:8081/v2/models/fraud/infer
stop $serving
stop $up
"$ferry" serving --model mlp=tests/fixtures/mlp.onnx >"$log" 2>&1 &
serving=$!
wait_ready http://127.0.0.1:8081/v2/health/ready $serving "$log"
infer http://127.0.0.1:8081/v2/models/mlp/infer
stop $serving
echo "ferry serving (registry and file): OK"

make lint

# The UI's screenshots, as the README's images are made (into a copy, so a CI run leaves the
# committed ones alone).
rm -rf docs/ui.check && cp -r docs/ui docs/ui.check
make screenshots
for page in models model endpoint drift events; do
  [ -s "docs/ui/$page.png" ] || { echo "make screenshots did not write docs/ui/$page.png" >&2; exit 1; }
done
rm -rf docs/ui && mv docs/ui.check docs/ui
echo "make screenshots: OK"

# The vendored chart library is what its update script fetches from the npm registry (the
# integrity hash checked), byte for byte.
scripts/update-ui-vendor.sh
git diff --exit-code -- registry/ui/vendor registry/src/ui.rs
echo "scripts/update-ui-vendor.sh: OK (the vendored files are the published ones)"
