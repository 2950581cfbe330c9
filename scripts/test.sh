#!/usr/bin/env bash
# The whole test suite: fetches ONNX Runtime, starts an S3 server (s3s-fs, which checks SigV4
# signatures), checks PostgreSQL, then runs every test. With CI=true nothing may skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}"
mkdir -p "$CACHE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ONNX Runtime (serving tests load the real library).
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so"

# Python packages used by fixture checks and client tests.
if ! python3 -c 'import onnx, onnxruntime, numpy, pytest, tritonclient.http' 2>/dev/null; then
  log "installing Python test packages"
  python3 -m pip install --quiet -r scripts/requirements-test.txt
fi

# PostgreSQL: the registry's tests run against the real server.
export FERRY_TEST_POSTGRES_URL="${FERRY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$FERRY_TEST_POSTGRES_URL" -qc 'SELECT 1' >/dev/null 2>&1; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    sleep 2
  fi
fi
if psql "$FERRY_TEST_POSTGRES_URL" -qc 'SELECT 1' >/dev/null 2>&1; then
  # Databases left by interrupted earlier runs.
  psql "$FERRY_TEST_POSTGRES_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'ferry\_test\_%' OR datname LIKE 'ferry\_e2e\_%'" |
    while read -r db; do psql "$FERRY_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
else
  log "PostgreSQL is not reachable at $FERRY_TEST_POSTGRES_URL: its tests will skip (fail under CI=true)"
fi

# RabbitMQ: the event relay's tests publish to the real broker.
export FERRY_TEST_AMQP_URL="${FERRY_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
if ! (echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 60); do (echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
  fi
fi
(echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null ||
  log "RabbitMQ is not reachable on 127.0.0.1:5672: its tests will skip (fail under CI=true)"

# S3: s3s-fs on a free port, in a throwaway folder.
if ! command -v s3s-fs >/dev/null 2>&1; then
  log "installing s3s-fs (S3-compatible test server)"
  cargo install --locked s3s-fs@0.14.1 --features binary --quiet
fi
S3_ROOT=$(mktemp -d)
S3_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=ferrytest AWS_SECRET_ACCESS_KEY=ferrytestsecret
export FERRY_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" FERRY_TEST_S3_BUCKET=ferry-test
mkdir -p "$S3_ROOT/$FERRY_TEST_S3_BUCKET"
s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3_ROOT" \
  >"$S3_ROOT.log" 2>&1 &
S3_PID=$!
cleanup() { kill "$S3_PID" 2>/dev/null || true; rm -rf "$S3_ROOT" "$S3_ROOT.log"; }
trap cleanup EXIT
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && break
  sleep 0.1
done

# Kubernetes: a real kube-apiserver + etcd (built once from Debian's sources, cached in
# $CACHE/kube) for the operator's end-to-end tests (tests/operator.rs).
KUBE_DIR=$(mktemp -d)
if [ "${CI:-}" = true ] || [ -x "$CACHE/kube/kube-apiserver" ]; then
  ./scripts/kube-apiserver.sh build # a no-op once built
  ./scripts/kube-apiserver.sh start "$KUBE_DIR"
  export FERRY_TEST_KUBECONFIG="$KUBE_DIR/kubeconfig"
else
  log "no kube-apiserver (run scripts/kube-apiserver.sh build once): the operator's end-to-end tests will skip (fail under CI=true)"
fi
cleanup() {
  ./scripts/kube-apiserver.sh stop "$KUBE_DIR" >/dev/null 2>&1 || true
  rm -rf "$KUBE_DIR"
  kill "$S3_PID" 2>/dev/null || true
  rm -rf "$S3_ROOT" "$S3_ROOT.log"
}

log "running the tests"
cargo test --workspace "$@"

log "running the Python client tests (the official tritonclient against ferry serving)"
FERRY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferry" python3 -m pytest -q tests/python

log "running the Helm chart's and the image's tests (tests/helm: their own kube-apiserver, kubectl 1.20.2)"
FERRY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferry" tests/helm/run.sh
