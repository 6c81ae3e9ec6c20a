#!/usr/bin/env bash
# Build ./.whl: the pure-Python wheels tools/analysis/gpu_benchmarks.sh installs on a GPU
# machine that has torch (and numpy, PyYAML, OpenCV, Pillow, matplotlib, torchvision) but
# not the OpenMMLab stack or timm.  Carry the folder to the device (run(carry=['.whl'])).
#
#   bash tools/analysis/make_device_wheels.sh        # versions of this .venv
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
ls -la .whl
du -sh .whl
