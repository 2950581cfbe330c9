#!/usr/bin/env bash
# The Helm chart's and the container image's static tests: lint, render, schema and manifest
# validation, the Dockerfile read by BuildKit's parser and its `ort` stage run for real. Installs
# the pinned Python packages when missing. What runs on a cluster is in tests/cluster/.
# The `ferry` binary: FERRY_BIN, else $CARGO_TARGET_DIR/debug/ferry or target/debug/ferry.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! python3 -c 'import helm_python, kubernetes_validate, yamllint, dockerfile, yaml, pytest' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
exec python3 -m pytest -q tests/helm "$@"
