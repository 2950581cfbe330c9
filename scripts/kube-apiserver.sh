#!/usr/bin/env bash
# A real Kubernetes API server (1.20.2, built from Debian's `kubernetes` source package) with etcd,
# on loopback, for the operator's end-to-end tests. No controller-manager, scheduler or kubelet:
# objects are stored and watched, but no pod ever runs: quick feedback on pure reconcile logic.
# Pods, images, Services and probes are tested on the real cluster of scripts/kube-cluster.sh.
#
#   scripts/kube-apiserver.sh build        build the Kubernetes binaries once (scripts/kube-cluster.sh
#                                          build: ~9 min on 2 cores), cached in ${FERRY_CACHE:-~/.cache/ferry}/kube/
#   scripts/kube-apiserver.sh start DIR    start etcd + kube-apiserver with their state in DIR;
#                                          writes DIR/kubeconfig and DIR/env, prints the PIDs
#   scripts/kube-apiserver.sh stop DIR     stop what `start DIR` started
#
# `start` uses token authentication (an admin token in system:masters), RBAC authorization,
# service-account keys made with openssl and a serving certificate signed by a throwaway CA
# (DIR/pki/ca.crt, also embedded in the kubeconfig so clients verify TLS).
# Why build from source: no kube-apiserver binary is packaged in any registry this project can
# reach, but Debian ships the 1.20.2 sources with everything vendored, so `GOPROXY=off` works.
set -euo pipefail

CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}"
KUBE_DIR="$CACHE/kube"
BIN="$KUBE_DIR/kube-apiserver"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'kube-apiserver.sh: %s\n' "$*" >&2; exit 1; }

cmd_build() {
  # One build for the API server and the rest of the cluster (scripts/kube-cluster.sh).
  "$(dirname "$0")/kube-cluster.sh" build
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  chmod 700 "$pki"
  # A CA and a leaf rather than one self-signed certificate: rustls (webpki) refuses a CA
  # certificate presented as the server's own.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=ferry-test-ca' \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj '/CN=kube-apiserver' \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  cat >"$pki/apiserver.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
EOF
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  # Service-account tokens are signed with this key and verified with its public half.
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

is_running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cmd_start() {
  local dir=${1:-}
  [ -n "$dir" ] || die "usage: $0 start DIR"
  [ -x "$BIN" ] || die "$BIN is not built: run '$0 build' first"
  command -v etcd >/dev/null 2>&1 || die "etcd is not installed (apt-get install etcd-server)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if is_running "$dir/kube-apiserver.pid" || is_running "$dir/etcd.pid"; then
    die "already running in $dir (stop it first)"
  fi
  [ -f "$dir/pki/ca.crt" ] || make_pki "$dir/pki"
  local token
  if [ -f "$dir/admin-token" ]; then token=$(cat "$dir/admin-token")
  else token=$(openssl rand -hex 24); (umask 077; echo "$token" >"$dir/admin-token"); fi
  (umask 077; printf '%s,admin,admin,"system:masters"\n' "$token" >"$dir/tokens.csv")

  local etcd_port etcd_peer_port port
  etcd_port=$(free_port); etcd_peer_port=$(free_port); port=$(free_port)
  mkdir -p "$dir/etcd"
  chmod 700 "$dir/etcd"
  etcd --name ferry-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "ferry-test=http://127.0.0.1:$etcd_peer_port" \
    --listen-metrics-urls '' \
    >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  local i
  for i in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' && break
    is_running "$dir/etcd.pid" || die "etcd exited; see $dir/etcd.log"
    sleep 0.2
  done
  [ "$i" -lt 100 ] || die "etcd did not become healthy; see $dir/etcd.log"

  "$BIN" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$port" --insecure-port 0 \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --cert-dir "$dir/pki" \
    --token-auth-file "$dir/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-account-key-file "$dir/pki/sa.pub" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --enable-priority-and-fairness=false \
    >"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
  local server="https://127.0.0.1:$port"
  for i in $(seq 1 300); do
    if curl -fsS --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token" \
      "$server/readyz" >/dev/null 2>&1; then break; fi
    is_running "$dir/kube-apiserver.pid" || die "kube-apiserver exited; see $dir/kube-apiserver.log"
    sleep 0.2
  done
  [ "$i" -lt 300 ] || die "kube-apiserver was not ready within 60 s; see $dir/kube-apiserver.log"

  (umask 077; cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$dir/pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: ferry-test
  context:
    cluster: ferry-test
    user: admin
    namespace: default
current-context: ferry-test
EOF
  )
  cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
KUBE_APISERVER=$server
KUBE_CA=$dir/pki/ca.crt
KUBE_TOKEN_FILE=$dir/admin-token
EOF
  echo "etcd $(cat "$dir/etcd.pid") kube-apiserver $(cat "$dir/kube-apiserver.pid") $server"
}

cmd_stop() {
  local dir=${1:-}
  [ -n "$dir" ] || die "usage: $0 stop DIR"
  local name pidfile pid i
  # The API server first, so it does not log etcd's disappearance as an error storm.
  for name in kube-apiserver etcd; do
    pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) die "usage: $0 build | start DIR | stop DIR" ;;
esac
