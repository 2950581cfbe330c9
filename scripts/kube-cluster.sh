#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for the tests that need pods to run:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy 1.20.2
# (built from Debian's `kubernetes` source package, cached), containerd + runc with the CNI
# bridge plugin (Debian packages), and Ferry's image built from deploy/Dockerfile with podman.
#
#   scripts/kube-cluster.sh build             build the five binaries once (~9 min on 2 cores),
#                                             cached in ${FERRY_CACHE:-~/.cache/ferry}/kube/
#   scripts/kube-cluster.sh up DIR            start the cluster with its state in DIR; writes
#                                             DIR/kubeconfig (admin) and DIR/env
#   scripts/kube-cluster.sh image DIR BIN TAG...
#                                             build deploy/Dockerfile's `prebuilt` target around
#                                             the binary BIN and load it into the cluster as each TAG
#   scripts/kube-cluster.sh redis-image DIR TAG
#                                             build deploy/redis.Dockerfile (Debian's redis-server)
#                                             and load it into the cluster as TAG
#   scripts/kube-cluster.sh down DIR          stop everything `up` started, unmount, delete the
#                                             bridge, the iptables rules and the pod network
#                                             namespaces, restore the sysctls it changed
#   scripts/kube-cluster.sh check-clean DIR   fail when anything of the cluster is left behind
#
# Needs root: the kubelet, containerd and kube-proxy manage mounts, cgroups, network namespaces
# and iptables. The packages it needs are installed on first use (apt-get).
# One cluster per machine: the kubelet, kube-proxy and the CNI bridge use fixed host resources
# (ports 10250/10256, the bridge `ferry0`, the pod network 10.244.0.0/16).
#
# Facts this rests on (measured on 2-CPU Debian bookworm VMs without CAP_SYS_RESOURCE, cgroup v1):
# containerd's CRI plugin needs `restrict_oom_score_adj = true` (else every sandbox fails with
# "can't get final child's PID from pipe: EOF"), podman needs lower default ulimits, no container
# registry is reachable (base images come from debootstrap, the pause image is built from the
# Kubernetes tree's pause.c), and there is no cluster DNS (use Service ClusterIPs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}"
KUBE="$CACHE/kube"
KUBE_VERSION_WANTED="1.20.2"
BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
# Fixed host resources of the one cluster.
RUN=/run/ferry-kube
BRIDGE=ferry0
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_PORT=6443
SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'kube-cluster.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

# The mirror of the machine's bookworm `deb` source: deb-src lines and debootstrap read from it.
apt_mirror() {
  local mirror
  mirror=$(grep -hs -A3 '^Types:.*deb' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ {print $2}' | grep -v -e security -e nodesource | grep debian | head -n1 || true)
  if [ -z "$mirror" ]; then
    mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$3 ~ /^bookworm$/ {print $2}' | head -n1 || true)
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
}

ensure_deb_src() {
  local src_list=/etc/apt/sources.list.d/ferry-bookworm-src.sources
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ &&
    ! grep -qs '^deb-src .* bookworm main' /etc/apt/sources.list; then
    log "adding a deb-src source for bookworm main ($src_list)"
    as_root tee "$src_list" >/dev/null <<EOF
Types: deb-src
URIs: $(apt_mirror)
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    as_root apt-get update -qq
  fi
}

built() {
  local b
  for b in $BINARIES; do
    [ -x "$KUBE/$b" ] && "$KUBE/$b" --version 2>/dev/null | grep -q "v$KUBE_VERSION_WANTED" || return 1
  done
}

# --- build ----------------------------------------------------------------------------------------
cmd_build() {
  if built; then
    log "Kubernetes $KUBE_VERSION_WANTED binaries already built in $KUBE"
    return 0
  fi
  ensure_deb_src
  ensure_packages golang-go dpkg-dev jq rsync etcd-server golang-github-modern-go-reflect2-dev
  local work="$KUBE/src"
  mkdir -p "$work"
  local tree
  tree=$(find "$work" -maxdepth 1 -type d -name "kubernetes-*$KUBE_VERSION_WANTED" | head -n1)
  if [ -z "$tree" ]; then
    log "fetching Debian's kubernetes source package"
    # bookworm calls it 1.20.5+really1.20.2: the sources are 1.20.2.
    (cd "$work" && apt-get source -qq kubernetes 2>/dev/null)
    tree=$(find "$work" -maxdepth 1 -type d -name "kubernetes-*$KUBE_VERSION_WANTED" | head -n1)
    [ -n "$tree" ] || die "apt-get source kubernetes did not give version $KUBE_VERSION_WANTED (see $work)"
  fi
  # The vendored reflect2 1.0.1 reads Go runtime internals that changed in Go 1.18: the apiserver
  # segfaults on the first custom-resource write. Debian's 1.0.2 is a drop-in replacement.
  local reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
  local reflect2_dst="$tree/vendor/github.com/modern-go/reflect2"
  [ -d "$reflect2_src" ] || die "$reflect2_src is missing (golang-github-modern-go-reflect2-dev)"
  [ -d "$reflect2_dst" ] || die "$reflect2_dst is missing: not the expected source tree"
  find "$reflect2_dst" -maxdepth 1 -name '*.go' -delete
  find "$reflect2_src" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$reflect2_dst/" \;

  local what="" b
  for b in $BINARIES; do what="$what cmd/$b"; done
  log "building$what $KUBE_VERSION_WANTED (GOPROXY=off; ~9 min on 2 cores)"
  local start=$SECONDS
  (cd "$tree" && CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor make WHAT="${what# }")
  for b in $BINARIES; do
    local out="$tree/_output/bin/$b"
    [ -x "$out" ] || out="$tree/_output/local/bin/linux/$(go env GOARCH)/$b"
    [ -x "$out" ] || die "the build finished without producing $b"
    install -m 0755 "$out" "$KUBE/$b.tmp"
    mv "$KUBE/$b.tmp" "$KUBE/$b"
  done
  # The pause container of every pod sandbox, from the same tree (no registry to pull it from).
  gcc -Os -static -o "$KUBE/pause" "$tree/build/pause/linux/pause.c" -DVERSION=ferry
  strip "$KUBE/pause"
  log "built $BINARIES and pause in $((SECONDS - start)) s: $KUBE"
  # The tree and its build cache take ~2 GiB; a rebuild fetches the sources again.
  rm -rf "$work"
}

# --- up -------------------------------------------------------------------------------------------
bg() { # NAME COMMAND...: runs in the background, its log and pid in $DIR
  local name=$1; shift
  nohup "$@" >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name"
}

is_running() { [ -f "$DIR/pids/$1" ] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

wait_until() { # WHAT TRIES SLEEP COMMAND...
  local what=$1 tries=$2 pause=$3 i; shift 3
  for i in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep "$pause"
  done
  die "$what did not come up; logs in $DIR/logs"
}

ctr_() { ctr --address "$RUN/containerd/containerd.sock" "$@"; }

make_pki() {
  local p=$DIR/pki host=$1 ip=$2
  mkdir -p "$p"; chmod 700 "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN=ferry-kube-ca' \
    -keyout "$p/ca.key" -out "$p/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  leaf() { # NAME CN O SANS
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$2${3:+/O=$3}" -keyout "$p/$1.key" -out "$p/$1.csr" 2>/dev/null
    if [ -n "$4" ]; then
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$4" >"$p/$1.ext"
    else
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$p/$1.ext"
    fi
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
      -extfile "$p/$1.ext" -out "$p/$1.crt" 2>/dev/null
  }
  leaf apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$ip"
  leaf admin admin system:masters ""
  leaf apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  leaf kubelet "system:node:$host" system:nodes ""
  leaf kubelet-serving "$host" "" "DNS:$host,DNS:localhost,IP:127.0.0.1,IP:$ip"
  leaf controller-manager system:kube-controller-manager "" ""
  leaf scheduler system:kube-scheduler "" ""
  leaf kube-proxy system:kube-proxy "" ""
  local n
  for n in admin kubelet controller-manager scheduler kube-proxy; do
    (umask 077; cat >"$p/$n.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry-kube
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: $n
  user:
    client-certificate-data: $(base64 -w0 "$p/$n.crt")
    client-key-data: $(base64 -w0 "$p/$n.key")
contexts:
- name: ferry-kube
  context: {cluster: ferry-kube, user: $n, namespace: default}
current-context: ferry-kube
EOF
    )
  done
}

start_containerd() {
  mkdir -p "$DIR/etc/cni" "$DIR/containerd" "$RUN"
  cat >"$DIR/etc/containerd.toml" <<EOF
version = 2
root = "$DIR/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd/containerd.sock"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "localhost/pause:ferry"
    # These VMs lack CAP_SYS_RESOURCE: the pause sandbox's oom_score_adj=-998 would make runc
    # fail with "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$DIR/etc/cni"
EOF
  cat >"$DIR/etc/cni/10-ferry.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "ferry-kube", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$RUN/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
  bg containerd containerd --config "$DIR/etc/containerd.toml"
  wait_until containerd 100 0.1 ctr_ version
}

# The pause image (FROM scratch) for pod sandboxes.
load_pause() {
  local ctx="$DIR/build/pause"
  mkdir -p "$ctx"
  cp "$KUBE/pause" "$ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
  podman_ build -q -t localhost/pause:ferry "$ctx" >/dev/null
  load_image localhost/pause:ferry
}

podman_() {
  CONTAINERS_CONF="$DIR/etc/containers.conf" podman --root "$DIR/podman" --runroot "$RUN/podman" \
    --storage-driver overlay --cgroup-manager cgroupfs "$@"
}

prepare_podman() {
  mkdir -p "$DIR/etc"
  # podman's default ulimits (nofile/nproc 1048576) exceed what these VMs allow.
  cat >"$DIR/etc/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
}

load_image() { # REF...: from podman's storage into the cluster's containerd
  local tar="$DIR/build/image.tar"
  rm -f "$tar"
  podman_ save -q -m --format docker-archive -o "$tar" "$@"
  ctr_ -n k8s.io images import "$tar" >/dev/null
  rm -f "$tar"
}

# The Debian base image, from a debootstrap root filesystem (cached as a tarball).
base_image() {
  local rootfs_tar="$KUBE/debian-bookworm-rootfs.tar"
  if [ ! -s "$rootfs_tar" ]; then
    ensure_packages debootstrap
    local rootfs="$DIR/build/rootfs"
    log "debootstrap: a minimal Debian bookworm root filesystem for the base image"
    debootstrap --variant=minbase bookworm "$rootfs" "$(apt_mirror)" >"$DIR/logs/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $DIR/logs/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$rootfs"
  fi
  podman_ import -q - localhost/debian:bookworm-slim <"$rootfs_tar" >/dev/null
}

cmd_up() {
  DIR=${1:-}; [ -n "$DIR" ] || die "usage: $0 up DIR"
  [ "$(id -u)" -eq 0 ] || die "the cluster needs root (kubelet, containerd, iptables)"
  built || die "the Kubernetes binaries are not built: run '$0 build' first"
  ensure_packages containerd runc podman debootstrap containernetworking-plugins etcd-server iptables conntrack
  mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/build"
  if [ -e "$RUN/owner" ] && [ "$(cat "$RUN/owner")" != "$DIR" ] && kill -0 "$(cat "$RUN/pid" 2>/dev/null || echo 0)" 2>/dev/null; then
    die "another cluster is running (state in $(cat "$RUN/owner")): stop it with '$0 down $(cat "$RUN/owner")'"
  fi
  mkdir -p "$RUN"; echo "$DIR" >"$RUN/owner"; echo $$ >"$RUN/pid"
  local start=$SECONDS host ip
  host=$(hostname)
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="src") print $(i+1)}' | head -n1)
  [ -n "$ip" ] || ip=$(hostname -I | awk '{print $1}')
  # kubelet, kube-proxy and the bridge change these; `down` puts them back.
  local s
  for s in $SYSCTLS; do printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo)"; done >"$DIR/sysctl.orig"
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

  make_pki "$host" "$ip"
  # An admin bearer token too: the tests' small API client speaks tokens, not client certificates.
  local token; token=$(openssl rand -hex 24)
  (umask 077; printf '%s,admin,admin,"system:masters"\n' "$token" >"$DIR/pki/tokens.csv")
  start_containerd
  prepare_podman
  load_pause

  mkdir -p "$DIR/etcd"; chmod 700 "$DIR/etcd"
  bg etcd etcd --name ferry-kube --data-dir "$DIR/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster ferry-kube=http://127.0.0.1:2380 \
    --listen-metrics-urls '' --unsafe-no-fsync
  wait_until etcd 100 0.2 curl -fsS http://127.0.0.1:2379/health
  local p=$DIR/pki
  bg kube-apiserver "$KUBE/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --advertise-address="$ip" --secure-port=$API_PORT --insecure-port=0 \
    --service-cluster-ip-range=$SERVICE_CIDR --allow-privileged=true \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --token-auth-file="$p/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-priority-and-fairness=false
  export KUBECONFIG=$p/admin.kubeconfig
  wait_until "kube-apiserver's /readyz" 300 0.3 kubectl_ get --raw /readyz
  bg kube-controller-manager "$KUBE/kube-controller-manager" --kubeconfig="$p/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$p/controller-manager.kubeconfig" --authorization-kubeconfig="$p/controller-manager.kubeconfig" \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1
  bg kube-scheduler "$KUBE/kube-scheduler" --kubeconfig="$p/scheduler.kubeconfig" \
    --authentication-kubeconfig="$p/scheduler.kubeconfig" --authorization-kubeconfig="$p/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1
  mkdir -p "$DIR/kubelet"
  cat >"$DIR/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $p/ca.crt}}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
tlsCertFile: $p/kubelet-serving.crt
tlsPrivateKeyFile: $p/kubelet-serving.key
clusterDomain: cluster.local
# No eviction on a shared test machine's disk or memory levels.
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 100
# Pods' status reaches the API server sooner (the default is 10 s).
nodeStatusUpdateFrequency: 4s
EOF
  bg kubelet "$KUBE/kubelet" --config="$DIR/etc/kubelet.yaml" --kubeconfig="$p/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$RUN/containerd/containerd.sock" \
    --root-dir="$DIR/kubelet" --hostname-override="$host" --node-ip="$ip" --v=1
  bg kube-proxy "$KUBE/kube-proxy" --kubeconfig="$p/kube-proxy.kubeconfig" --cluster-cidr=$POD_CIDR \
    --hostname-override="$host" --proxy-mode=iptables --conntrack-max-per-core=0 \
    --metrics-bind-address=127.0.0.1:10249
  wait_until "node $host" 240 0.5 kubectl_ get node "$host"
  kubectl_ wait --for=condition=Ready "node/$host" --timeout=120s >/dev/null
  wait_until "the default service account" 120 0.5 kubectl_ get serviceaccount default
  (umask 077; cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry-kube
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: ferry-kube
  context: {cluster: ferry-kube, user: admin, namespace: default}
current-context: ferry-kube
EOF
  )
  cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
FERRY_KUBE_NODE=$host
FERRY_KUBE_NODE_IP=$ip
FERRY_KUBE_POD_GATEWAY=$(pod_gateway)
EOF
  log "cluster up in $((SECONDS - start)) s: KUBECONFIG=$DIR/kubeconfig (node $host, $ip)"
}

# The host's address on the pod bridge: pods reach the host's own services there.
pod_gateway() { echo "${POD_CIDR%.0/16}.1"; }

kubectl_() { KUBECONFIG=$DIR/pki/admin.kubeconfig kubectl "$@"; }

# --- image ----------------------------------------------------------------------------------------
cmd_image() {
  DIR=${1:-}; local binary=${2:-}; shift 2 || true
  local tag=${1:-}
  [ -n "$DIR" ] && [ -n "$tag" ] && [ -n "$binary" ] || die "usage: $0 image DIR BINARY TAG..."
  DIR=$(cd "$DIR" && pwd)
  [ -x "$binary" ] || die "$binary is not an executable"
  local ort_version ctx start=$SECONDS
  ort_version=$(sed -n 's/^ARG ORT_VERSION=//p' "$ROOT/deploy/Dockerfile")
  [ -f "$ROOT/.ort/libonnxruntime.so.$ort_version" ] || "$ROOT/scripts/fetch-ort.sh"
  prepare_podman
  base_image
  # The `prebuilt` target's context: the binary and ONNX Runtime (what `build` and `ort` make).
  ctx="$DIR/build/image"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$binary" "$ctx/ferry"
  strip "$ctx/ferry" 2>/dev/null || true
  cp "$ROOT/.ort/libonnxruntime.so.$ort_version" "$ctx/"
  log "building $tag from deploy/Dockerfile (target prebuilt) with podman"
  podman_ build -q --network=host --pull=never --target prebuilt \
    --build-arg BASE_IMAGE=localhost/debian:bookworm-slim \
    -f "$ROOT/deploy/Dockerfile" -t "$tag" "$ctx" >"$DIR/logs/image-build.log" 2>&1 ||
    { tail -n 40 "$DIR/logs/image-build.log" >&2; die "podman build failed"; }
  local other
  for other in "${@:2}"; do podman_ tag "$tag" "$other"; done
  load_image "$@"
  rm -rf "$ctx"
  log "image $* built and loaded in $((SECONDS - start)) s"
}

# deploy/redis.Dockerfile on the same base: the chart's in-chart Redis, from Debian's package.
cmd_redis_image() {
  DIR=${1:-}; local tag=${2:-}
  [ -n "$DIR" ] && [ -n "$tag" ] || die "usage: $0 redis-image DIR TAG"
  DIR=$(cd "$DIR" && pwd)
  local start=$SECONDS
  prepare_podman
  base_image
  log "building $tag from deploy/redis.Dockerfile with podman"
  podman_ build -q --network=host --pull=never \
    --build-arg BASE_IMAGE=localhost/debian:bookworm-slim \
    -f "$ROOT/deploy/redis.Dockerfile" -t "$tag" "$ROOT/deploy" >"$DIR/logs/redis-image-build.log" 2>&1 ||
    { tail -n 40 "$DIR/logs/redis-image-build.log" >&2; die "podman build failed"; }
  load_image "$tag"
  log "image $tag built and loaded in $((SECONDS - start)) s"
}

# --- down -----------------------------------------------------------------------------------------
stop_pid() { # NAME
  local f="$DIR/pids/$1" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd_down() {
  DIR=${1:-}; [ -n "$DIR" ] || die "usage: $0 down DIR"
  [ -d "$DIR" ] || return 0
  DIR=$(cd "$DIR" && pwd)
  local n ns c
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$n"; done
  # Every container the kubelet left, then containerd itself.
  if [ -S "$RUN/containerd/containerd.sock" ] && ctr_ version >/dev/null 2>&1; then
    for ns in $(ctr_ namespaces ls -q); do
      for c in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do ctr_ -n "$ns" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
      sleep 1
      for c in $(ctr_ -n "$ns" containers ls -q 2>/dev/null); do
        ctr_ -n "$ns" tasks rm -f "$c" >/dev/null 2>&1 || true
        ctr_ -n "$ns" containers rm "$c" >/dev/null 2>&1 || true
      done
    done
  fi
  stop_pid containerd
  # containerd-shim processes of this cluster (they outlive containerd by design).
  pkill -9 -f "containerd-shim-runc-v2 .*-address $RUN/containerd/containerd.sock" 2>/dev/null || true
  sleep 0.5
  findmnt -rn -o TARGET | grep -E "^($DIR|$RUN|/run/netns/cni-)" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  for ns in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do ip netns del "$ns" 2>/dev/null || true; done
  ip link del "$BRIDGE" 2>/dev/null || true
  # veth ends of pods whose namespaces were deleted go with them; the iptables rules do not.
  local save
  for save in iptables ip6tables; do
    command -v "$save-save" >/dev/null 2>&1 || continue
    if "$save-save" 2>/dev/null | grep -qE 'KUBE-|CNI-'; then
      "$save-save" | grep -vE 'KUBE-|CNI-' | "$save-restore" || true
    fi
  done
  if [ -f "$DIR/sysctl.orig" ]; then
    local line
    while IFS= read -r line; do
      [ -n "${line#*=}" ] && sysctl -qw "$line" 2>/dev/null || true
    done <"$DIR/sysctl.orig"
    rm -f "$DIR/sysctl.orig"
  fi
  rm -rf "$RUN" /var/lib/cni/results/ferry-kube-* /var/lib/cni/networks/ferry-kube
  # podman's storage (overlay layers) and containerd's are inside DIR, now unmounted.
  rm -rf "$DIR/podman" "$DIR/containerd" "$DIR/kubelet" "$DIR/etcd" "$DIR/build" 2>/dev/null || true
}

cmd_check_clean() {
  DIR=${1:-}; [ -n "$DIR" ] || die "usage: $0 check-clean DIR"
  local problems=()
  # Every process of the cluster names its folder or the runtime folder on its command line.
  if pgrep -f -a "$DIR/|$RUN" >/dev/null 2>&1; then
    problems+=("processes: $(pgrep -f -a "$DIR/|$RUN" | tr '\n' ';')")
  fi
  local mounts
  mounts=$(findmnt -rn -o TARGET | grep -E "^($DIR|$RUN|/run/netns/cni-)" || true)
  [ -z "$mounts" ] || problems+=("mounts: $(echo "$mounts" | tr '\n' ' ')")
  ip link show "$BRIDGE" >/dev/null 2>&1 && problems+=("bridge $BRIDGE")
  iptables-save 2>/dev/null | grep -qE 'KUBE-|CNI-' && problems+=("iptables rules: $(iptables-save | grep -cE 'KUBE-|CNI-')")
  ls /run/netns 2>/dev/null | grep -q '^cni-' && problems+=("network namespaces: $(ls /run/netns | grep '^cni-' | tr '\n' ' ')")
  [ -e "$RUN" ] && problems+=("$RUN")
  if [ "${#problems[@]}" -gt 0 ]; then
    printf 'kube-cluster.sh: left behind: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  log "nothing of the cluster is left behind"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up "${2:-}" ;;
  image) shift; cmd_image "$@" ;;
  redis-image) cmd_redis_image "${2:-}" "${3:-}" ;;
  down) cmd_down "${2:-}" ;;
  check-clean) cmd_check_clean "${2:-}" ;;
  *) die "usage: $0 build | up DIR | image DIR BINARY TAG... | redis-image DIR TAG | down DIR | check-clean DIR" ;;
esac
