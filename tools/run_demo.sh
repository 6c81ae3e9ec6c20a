#!/usr/bin/env bash
# The main job on the embedded demo data, on the CPU: generate the demo sets (once), then
#   1. train the demo NFNet classifier with AGC and evaluate its last checkpoint;
#   2. train the demo Mask R-CNN whose NFNet backbone starts from that classifier (the
#      paper's classifier -> detector transfer in miniature), evaluate its COCO box / mask
#      AP and save images with the predicted boxes and masks drawn by MMDetection's
#      visualizer.
#
#   bash tools/run_demo.sh [extra tools/train.py args for the classifier, e.g. --cfg-options ...]
#   DETECTION=0 bash tools/run_demo.sh      # the classifier only
#
# Each run writes into a fresh work dir (WORK_DIR, default work_dirs/nfnet_demo/<timestamp>),
# so earlier runs, checkpoints and logs are never overwritten: the classifier in WORK_DIR,
# the detector in WORK_DIR/mask_rcnn, its drawn predictions in WORK_DIR/mask_rcnn/shown.
#
# Threads: OMP_NUM_THREADS and MKL_NUM_THREADS default to 1 (values you set are kept; the
# script prints the ones it uses). The demo models are tiny: one thread is as fast as two on
# an idle 2-core machine (59 s vs 70 s for the classifier demo), and on a busy one more
# threads than free cores is what makes it slow (5 demo epochs with one other busy process:
# 20-22 s with 1 thread, 42-76 s with 2). A fixed count also keeps the result
# reproducible: the thread count changes the order of floating-point sums.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "no .venv: run 'bash tools/setup_env.sh' first" >&2; exit 1; }
CONFIG=configs/nfnet/nfnet_demo.py
DET_CONFIG=configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py
DETECTION="${DETECTION:-1}"
WORK_DIR="${WORK_DIR:-work_dirs/nfnet_demo/$(date +%Y%m%d_%H%M%S)}"
if [ -e "$WORK_DIR" ]; then
    echo "work dir $WORK_DIR already exists; set WORK_DIR to a new folder" >&2
    exit 1
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS MKL_NUM_THREADS=$MKL_NUM_THREADS" \
     "(set these variables to override)"

"$PY" tools/data/make_demo_data.py --root data/demo
echo "== 1/2: classifier ($CONFIG)"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT="$(cat "$WORK_DIR/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test"
echo "classifier finished: checkpoints, logs and the training-curve plot are in $WORK_DIR"
[ "$DETECTION" = 0 ] && exit 0

echo "== 2/2: Mask R-CNN with the classifier's NFNet as backbone ($DET_CONFIG)"
DET_DIR="$WORK_DIR/mask_rcnn"
"$PY" tools/train.py "$DET_CONFIG" --work-dir "$DET_DIR" \
    --cfg-options model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.prefix=backbone. \
    "model.backbone.init_cfg.checkpoint=$CKPT"
DET_CKPT="$(cat "$DET_DIR/last_checkpoint")"
"$PY" tools/test.py "$DET_CONFIG" "$DET_CKPT" --work-dir "$DET_DIR/test" \
    --show-dir "$DET_DIR/shown"
echo "demo finished: classifier in $WORK_DIR, detector in $DET_DIR, validation images with" \
     "the predicted boxes and masks drawn in $DET_DIR/shown"
