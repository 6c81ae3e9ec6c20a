#!/usr/bin/env bash
# Idempotent setup of the nfnets_mm development environment in <repo>/.venv.
#
#   bash tools/setup_env.sh
#
# Installs the tested, pinned set (requirements/constraints.txt): torch 2.14.1,
# torchvision 0.29.1, mmengine, mmcv 2.1.0 *built from source with ops*, mmpretrain,
# mmdet, pycocotools, and nfnets_mm itself in editable mode with its test extra.
#
# mmcv 2.1.0 ships only as an sdist.  Its setup.py hard-codes `-std=c++17`, but the
# torch 2.14 headers need C++20, so the sdist is patched to C++20 before building.
# The built wheel is cached outside the checkout, keyed by mmcv version, torch version,
# Python tag and machine, so a second setup reuses it and a wheel built against one
# torch is never installed next to another.  pip's own wheel cache is bypassed for
# the build for the same reason (it does not key on the torch version).
#
# Environment knobs:
#   PYTHON            interpreter used to create the venv (default: python3)
#   NFNETS_MM_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/nfnets_mm)
#   MAX_JOBS          parallel compile jobs for mmcv (default: number of cores)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
CACHE_ROOT="${NFNETS_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nfnets_mm}"
MMCV_VERSION="2.1.0"

step() { printf '\n[setup] %s\n' "$*"; }
die() {
    printf '\n[setup] FAILED: %s\n' "$*" >&2
    printf '[setup] The environment in %s is incomplete; fix the cause and rerun %s.\n' \
        "$VENV" "tools/setup_env.sh" >&2
    exit 1
}
trap 'die "command \"${BASH_COMMAND}\" exited with status $? (line ${LINENO})"' ERR

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || die "no '$PY' interpreter on PATH (set PYTHON=...)"
"$PY" - <<'PYEOF' || die "Python >= 3.9 is required"
import sys
sys.exit(0 if sys.version_info >= (3, 9) else 1)
PYEOF

if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment at $VENV"
    "$PY" -m venv "$VENV" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"
# The venv's bin first: torch's extension builder finds ninja there and compiles in parallel.
export PATH="$VENV/bin:$PATH"
PIP=("$VPY" -m pip --disable-pip-version-check)

step "build tooling (pip, setuptools<80 for mmcv's pkg_resources, wheel, ninja)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" pip setuptools wheel ninja

step "torch + torchvision (pinned)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" torch torchvision numpy

TORCH_VERSION="$("$VPY" -c 'import torch; print(torch.__version__)')"
PY_TAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
MACHINE="$(uname -m)"
WHEEL_DIR="$CACHE_ROOT/wheels/mmcv-$MMCV_VERSION/torch-$TORCH_VERSION-$PY_TAG-$MACHINE"

mmcv_ok() {
    "$VPY" - "$MMCV_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
import mmcv
from mmcv.ops import nms, roi_align  # noqa: F401  (compiled ops must import)
import torch
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
sys.exit(0 if mmcv.__version__ == sys.argv[1] and keep.tolist() == [0] else 1)
PYEOF
}

if mmcv_ok; then
    step "mmcv $MMCV_VERSION with ops already installed"
else
    if ! ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        step "building mmcv $MMCV_VERSION with ops against torch $TORCH_VERSION (several minutes)"
        BUILD_DIR="$(mktemp -d)"
        "${PIP[@]}" download -q --no-deps --no-binary :all: --no-cache-dir \
            -d "$BUILD_DIR" "mmcv==$MMCV_VERSION" || die "could not download the mmcv $MMCV_VERSION sdist"
        tar -xzf "$BUILD_DIR"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_DIR"
        SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
        grep -q -- '-std=c++17' "$SRC/setup.py" || die "mmcv setup.py no longer contains -std=c++17; update the C++20 patch"
        sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        mkdir -p "$BUILD_DIR/dist"
        ( cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 FORCE_MLU=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" wheel --no-build-isolation --no-deps --no-cache-dir -w "$BUILD_DIR/dist" . ) \
            || die "mmcv build failed (see compiler output above)"
        mkdir -p "$WHEEL_DIR"
        mv "$BUILD_DIR"/dist/mmcv-*.whl "$WHEEL_DIR/"
        rm -rf "$BUILD_DIR"
    else
        step "reusing cached mmcv wheel from $WHEEL_DIR"
    fi
    # mmcv's runtime requirements (mmengine among them) first, then the wheel itself.
    "${PIP[@]}" install -q -c "$CONSTRAINTS" mmengine addict packaging pillow pyyaml yapf opencv-python
    "${PIP[@]}" install -q --no-deps --force-reinstall --no-cache-dir "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl
    mmcv_ok || die "mmcv $MMCV_VERSION imports but its compiled ops do not work"
fi

step "OpenMMLab stack + nfnets_mm (editable, with test extra)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$ROOT[tests]"

step "verifying the environment"
"$VPY" - <<'PYEOF' || die "import check failed"
import torch, torchvision, mmengine, mmcv, mmpretrain, mmdet, pycocotools, nfnets_mm  # noqa
from mmcv.ops import roi_align, nms  # noqa
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__}, mmpretrain {mmpretrain.__version__}, mmdet {mmdet.__version__}, "
      f"nfnets_mm {nfnets_mm.__version__}")
PYEOF
step "done: activate with 'source .venv/bin/activate'"
