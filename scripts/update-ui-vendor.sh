#!/usr/bin/env bash
# Updates the web UI's vendored chart library (registry/ui/vendor/) from the npm registry:
#   scripts/update-ui-vendor.sh [VERSION]      (default: the version pinned below)
# It fetches uPlot's published tarball with `npm pack`, checks it against the registry's
# integrity hash, and copies the built files and the license. The Rust build never needs Node:
# the files are committed and compiled into the binary (registry/src/ui.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-1.6.32}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null)
tarball="$work/uplot-$VERSION.tgz"
want=$(npm view "uplot@$VERSION" dist.integrity)
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[ "$want" = "$got" ] || { echo "integrity mismatch for uplot@$VERSION: $got, registry says $want" >&2; exit 1; }
tar xzf "$tarball" -C "$work"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" registry/ui/vendor/
cp "$work/package/LICENSE" registry/ui/vendor/uPlot.LICENSE
sed -i "s/const UPLOT_VERSION: &str = .*/const UPLOT_VERSION: \&str = \"$VERSION\";/" registry/src/ui.rs
echo "uplot@$VERSION vendored in registry/ui/vendor/ ($want)"
