#!/usr/bin/env bash
# kubectl 1.20.2 for the cluster tests: Debian's `kubernetes-client`, built from the same source as
# the test API server (scripts/kube-cluster.sh), so client and server versions match exactly.
# The package is unpacked into the cache rather than installed: installing it would clash with any
# other package that ships /usr/bin/kubectl. Prints the binary's path.
set -euo pipefail
CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}/kube"
BIN="$CACHE/kubectl"
WANTED="v1.20.2"

if [ -x "$BIN" ] && "$BIN" version --client --short 2>/dev/null | grep -q "$WANTED"; then
  echo "$BIN"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
download() { (cd "$work" && apt-get download -qq kubernetes-client 2>/dev/null); }
if ! download; then
  # A machine whose package lists were never fetched.
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
  download
fi
dpkg-deb -x "$work"/kubernetes-client_*.deb "$work/root"
mkdir -p "$CACHE"
install -m 0755 "$work/root/usr/bin/kubectl" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
"$BIN" version --client --short 2>/dev/null | grep -q "$WANTED" ||
  { echo "fetch-kubectl.sh: Debian's kubernetes-client is not $WANTED" >&2; exit 1; }
echo "$BIN"
