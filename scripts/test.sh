#!/usr/bin/env bash
# The whole test suite: fetches ONNX Runtime, starts an S3 server (s3s-fs, which checks SigV4
# signatures), checks PostgreSQL, then runs every test. With CI=true nothing may skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}"
mkdir -p "$CACHE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# One definition of CI everywhere (the Rust and Python tests accept `true` and `1` too): with it,
# nothing may skip.
case "${CI:-}" in
  true | TRUE | True | 1) export CI=true ;;
esac

# Tests that skip write why here (the harness hides the output of tests that pass); the list is
# printed at the end.
SKIP_LOG=$(mktemp /tmp/ferry-skips.XXXXXX)
export FERRY_TEST_SKIP_LOG="$SKIP_LOG"

# ONNX Runtime (serving tests load the real library).
./scripts/fetch-ort.sh
export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so"

# Python packages used by fixture checks and client tests.
# KServe and tritonclient.grpc register the same protobuf messages: one process cannot import
# both (the tests call KServe in a process of its own), so they are checked apart.
if ! { python3 -c 'import onnx, onnxruntime, numpy, ml_dtypes, pytest, tritonclient.http, tritonclient.grpc, playwright' \
       && python3 -c 'import kserve'; } 2>/dev/null; then
  log "installing Python test packages"
  python3 -m pip install --quiet -r scripts/requirements-test.txt
fi

# Chromium from Debian's packages: the web UI's tests run in it (tests/python/test_ui.py).
if ! command -v chromium >/dev/null 2>&1; then
  log "installing Chromium (Debian's package) for the web UI's browser tests"
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
    log "Chromium could not be installed: the web UI's tests will fail"
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

# Redis: the shared prediction index (feedback at any replica) runs against the real server.
export FERRY_TEST_REDIS="${FERRY_TEST_REDIS:-redis://127.0.0.1:6379}"
if ! (echo >/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if command -v redis-server >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no || true
    for _ in $(seq 30); do (echo >/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 1; done
  fi
fi
(echo >/dev/tcp/127.0.0.1/6379) 2>/dev/null ||
  log "Redis is not reachable on 127.0.0.1:6379: its tests will skip (fail under CI=true)"

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

# Kubernetes, fast: a real kube-apiserver + etcd (built once from Debian's sources, cached in
# $CACHE/kube) for the operator's reconcile tests (tests/operator.rs), which need no pods.
KUBE_DIR=$(mktemp -d)
CLUSTER_DIR=""
if [ "${CI:-}" = true ] || [ -x "$CACHE/kube/kube-apiserver" ]; then
  ./scripts/kube-apiserver.sh build # a no-op once built
  ./scripts/kube-apiserver.sh start "$KUBE_DIR"
  export FERRY_TEST_KUBECONFIG="$KUBE_DIR/kubeconfig"
else
  log "no kube-apiserver (run scripts/kube-cluster.sh build once): the operator's end-to-end tests will skip (fail under CI=true)"
fi
cleanup() {
  if [ -n "$CLUSTER_DIR" ]; then
    ./scripts/kube-cluster.sh down "$CLUSTER_DIR" || true
    rm -rf "$CLUSTER_DIR"
  fi
  ./scripts/kube-apiserver.sh stop "$KUBE_DIR" >/dev/null 2>&1 || true
  rm -rf "$KUBE_DIR"
  kill "$S3_PID" 2>/dev/null || true
  rm -rf "$S3_ROOT" "$S3_ROOT.log"
}

# Every stage runs even when an earlier one failed, so one failure does not hide the others'
# results; the script fails at the end if any did.
FAILED=()
stage() { # NAME COMMAND...
  local name=$1; shift
  log "$name"
  if ! "$@"; then
    FAILED+=("$name")
    log "FAILED: $name"
  fi
}

stage "the Rust tests" cargo test --workspace --no-fail-fast "$@"

export FERRY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferry"
stage "the Python client tests (the official tritonclient against ferry serving)" \
  python3 -m pytest -q -rs tests/python

stage "the Helm chart's and the image's static tests (tests/helm: lint, render, validate, Dockerfile)" \
  tests/helm/run.sh

# Kubernetes, for real: a one-node cluster (scripts/kube-cluster.sh: kubelet, containerd, runc,
# kube-proxy) running the image built from deploy/Dockerfile. Needs root.
cluster_tests() {
  ./scripts/kube-cluster.sh build # a no-op once built
  CLUSTER_DIR=$(mktemp -d /tmp/ferry-kube.XXXXXX)
  ./scripts/kube-cluster.sh up "$CLUSTER_DIR" || return 1
  log "building the release binary for the image"
  cargo build --release --locked --quiet --bin ferry || return 1
  # Also under the chart's default name and version: the README's commands run unchanged, and
  # nothing can be pulled here (the image is only local, built from deploy/Dockerfile).
  local image=localhost/ferry:e2e version
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
  ./scripts/kube-cluster.sh image "$CLUSTER_DIR" "${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry" \
    "$image" "ghcr.io/ferry-ml/ferry:$version" || return 1
  # The chart's in-chart Redis (feedback.redis), from Debian's package: nothing can be pulled.
  local redis_image=localhost/redis:e2e
  ./scripts/kube-cluster.sh redis-image "$CLUSTER_DIR" "$redis_image" || return 1
  local kubectl status=0
  kubectl=$(./scripts/fetch-kubectl.sh) || return 1
  FERRY_TEST_CLUSTER="$CLUSTER_DIR" FERRY_TEST_IMAGE="$image" FERRY_KUBECTL="$kubectl" \
    FERRY_TEST_DEFAULT_IMAGE="ghcr.io/ferry-ml/ferry:$version" FERRY_TEST_REDIS_IMAGE="$redis_image" \
    python3 -m pytest -q -s tests/cluster || status=1
  ./scripts/kube-cluster.sh down "$CLUSTER_DIR" || status=1
  ./scripts/kube-cluster.sh check-clean "$CLUSTER_DIR" || status=1
  rm -rf "$CLUSTER_DIR"
  CLUSTER_DIR=""
  return $status
}
if [ -n "${FERRY_SKIP_CLUSTER:-}" ] && [ "${CI:-}" != true ]; then
  echo "scripts/test.sh: the Kubernetes tests on a real cluster (tests/cluster): FERRY_SKIP_CLUSTER is set" >>"$SKIP_LOG"
elif [ "$(id -u)" -eq 0 ]; then
  stage "the Kubernetes tests on a real one-node cluster (tests/cluster)" cluster_tests
elif [ "${CI:-}" = true ]; then
  FAILED+=("the Kubernetes tests: CI=true, and the one-node cluster needs root")
else
  echo "scripts/test.sh: the Kubernetes tests on a real cluster (tests/cluster) need root (kubelet, containerd, iptables); run make test as root to include them" >>"$SKIP_LOG"
fi

if [ -s "$SKIP_LOG" ]; then
  log "skipped (start what they need, or run as CI=true to make them fail):"
  sort -u "$SKIP_LOG" | sed 's/^/  - /' >&2
fi
rm -f "$SKIP_LOG"

if [ "${#FAILED[@]}" -gt 0 ]; then
  log "failed stages:"
  printf '  - %s\n' "${FAILED[@]}" >&2
  exit 1
fi
log "every stage passed"
