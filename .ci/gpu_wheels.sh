#!/usr/bin/env bash
# Downloads, on this (CPU) machine, the wheels the device image lacks for .ci/gpu_check.sh into
# .whl/ (ignored by git; carried to the device with carry [".whl"]). The device runs Python 3.12
# and already has torch, numpy, scipy, safetensors, imageio, tqdm, rich, jaxtyping and ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PY=${PYTHON:-python3}
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in gsplat==1.5.3 smplx==0.1.28 OpenEXR==3.3.5; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg"
done
ls -la .whl
du -sh .whl
