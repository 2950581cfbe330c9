#!/usr/bin/env bash
# Fetches the official ONNX Runtime shared library from the onnxruntime wheel on PyPI into .ort/
# (nothing downloads at build time; Ferry finds it via --onnxruntime, ORT_DYLIB_PATH or .ort/).
set -euo pipefail
VERSION="${ORT_VERSION:-1.31.1}"
DEST="${1:-$(cd "$(dirname "$0")/.." && pwd)/.ort}"
CACHE="${FERRY_CACHE:-$HOME/.cache/ferry}/wheels"

if [ -f "$DEST/libonnxruntime.so.$VERSION" ]; then
  exit 0
fi
mkdir -p "$DEST" "$CACHE"
wheel=$(ls "$CACHE"/onnxruntime-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "fetching onnxruntime==$VERSION from PyPI…" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE" "onnxruntime==$VERSION"
  wheel=$(ls "$CACHE"/onnxruntime-"$VERSION"-*.whl | head -n1)
fi
python3 - "$wheel" "$DEST" "$VERSION" <<'PY'
import sys, zipfile, os
wheel, dest, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if not names:
        sys.exit(f"{wheel} holds no libonnxruntime.so")
    for name in names:
        target = os.path.join(dest, os.path.basename(name))
        with z.open(name) as src, open(target + ".tmp", "wb") as out:
            out.write(src.read())
        os.replace(target + ".tmp", target)
PY
ln -sf "libonnxruntime.so.$VERSION" "$DEST/libonnxruntime.so"
echo "ONNX Runtime $VERSION in $DEST" >&2
