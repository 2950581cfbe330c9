#!/usr/bin/env bash
# The Helm chart's and the container image's tests. Installs the pinned Python packages when
# missing, unpacks kubectl 1.20.2 (tests/helm/fetch-kubectl.sh), then runs pytest on tests/helm.
#
# The API server: FERRY_TEST_HELM_KUBECONFIG when the caller started one for these tests alone,
# else the tests start their own with scripts/kube-apiserver.sh (built once; under CI=true this
# script builds it when missing, since nothing may skip there). Not the operator tests' server
# (FERRY_TEST_KUBECONFIG): both create ferry/ferry-operator, which Helm will not adopt.
# The `ferry` binary: FERRY_BIN, else
# $CARGO_TARGET_DIR/debug/ferry or target/debug/ferry. PostgreSQL and S3 come from
# FERRY_TEST_POSTGRES_URL, FERRY_TEST_S3_ENDPOINT and AWS_* as scripts/test.sh sets them.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! python3 -c 'import helm_python, kubernetes_validate, yamllint, dockerfile, yaml, pytest' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
FERRY_KUBECTL="${FERRY_KUBECTL:-$(tests/helm/fetch-kubectl.sh)}"
export FERRY_KUBECTL
if [ "${CI:-}" = true ] && [ -z "${FERRY_TEST_HELM_KUBECONFIG:-}" ]; then
  scripts/kube-apiserver.sh build
fi
exec python3 -m pytest -q tests/helm "$@"
