#!/usr/bin/env bash
# Build ./.whl: the pure-Python wheels tools/analysis/gpu_benchmarks.sh installs on a GPU
# machine that has torch (and numpy, PyYAML, OpenCV, Pillow, matplotlib, torchvision) but
# not the OpenMMLab stack or timm.  Carry the folder to the device (run(carry=['.whl'])).
#
#   bash tools/analysis/make_device_wheels.sh        # versions of this .venv
#   TORCHVISION=0.26.0 DEVICE_PYTHON=3.12 bash tools/analysis/make_device_wheels.sh
#
# TORCHVISION (MMPretrain and timm import it) adds that binary wheel, for the device's
# Python, under .whl/if_missing/: gpu_benchmarks.sh installs it only where the device's
# own `import torchvision` fails (it must pair with the device's torch: 0.26 <-> 2.11).
#
# mmcv is built without its compiled ops (MMCV_WITH_OPS=0; pip names the wheel
# mmcv_lite); nothing the benchmark runs needs them.  An existing ./.whl is kept: the
# wheels are added next to what is there.
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
pkgs=(mmengine=="$(version mmengine)" mmpretrain=="$(version mmpretrain)"
      timm=="$(version timm)" addict termcolor yapf platformdirs einops modelindex mat4py
      ordered-set huggingface_hub)
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "${pkgs[@]}"
tmp=$(mktemp -d)
"$PY" -m pip download -q --no-deps --no-binary=:all: -d "$tmp" mmcv=="$(version mmcv)"
MMCV_WITH_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$tmp"/mmcv-*.tar.gz
rm -rf "$tmp"
if [ -n "${TORCHVISION:-}" ]; then
    mkdir -p .whl/if_missing
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl/if_missing \
        --python-version "${DEVICE_PYTHON:-3.12}" --platform manylinux_2_28_x86_64 \
        torchvision=="$TORCHVISION"
fi
ls -la .whl .whl/if_missing 2>/dev/null
du -sh .whl
