#!/usr/bin/env bash
# The main job on the embedded demo data: generate the demo set (once), train the demo
# NFNet classifier with AGC on the CPU, then evaluate its last checkpoint.
#
#   bash tools/run_demo.sh [extra tools/train.py args, e.g. --cfg-options ...]
#
# Each run writes into a fresh work dir (WORK_DIR, default work_dirs/nfnet_demo/<timestamp>),
# so earlier runs, checkpoints and logs are never overwritten.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "no .venv: run 'bash tools/setup_env.sh' first" >&2; exit 1; }
CONFIG=configs/nfnet/nfnet_demo.py
WORK_DIR="${WORK_DIR:-work_dirs/nfnet_demo/$(date +%Y%m%d_%H%M%S)}"
if [ -e "$WORK_DIR" ]; then
    echo "work dir $WORK_DIR already exists; set WORK_DIR to a new folder" >&2
    exit 1
fi

"$PY" tools/data/make_demo_data.py --root data/demo
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT="$(cat "$WORK_DIR/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test"
echo "demo finished: checkpoints, logs and the training-curve plot are in $WORK_DIR"
