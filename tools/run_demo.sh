#!/usr/bin/env bash
# The main job on the embedded demo data: generate the demo set (once), train the demo
# NFNet classifier with AGC on the CPU, then evaluate its last checkpoint.
#
#   bash tools/run_demo.sh [extra tools/train.py args, e.g. --cfg-options ...]
#
# Each run writes into a fresh work dir (WORK_DIR, default work_dirs/nfnet_demo/<timestamp>),
# so earlier runs, checkpoints and logs are never overwritten.
#
# Threads: OMP_NUM_THREADS and MKL_NUM_THREADS default to 1 (values you set are kept; the
# script prints the ones it uses). The demo model is tiny (64 px, batch 32): one thread is as
# fast as two on an idle 2-core machine (59 s vs 70 s for the whole demo), and on a busy one
# more threads than free cores is what makes it slow (5 demo epochs with one other busy
# process: 20-22 s with 1 thread, 42-76 s with 2). A fixed count also keeps the result
# reproducible: the thread count changes the order of floating-point sums.
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

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS MKL_NUM_THREADS=$MKL_NUM_THREADS" \
     "(set these variables to override)"

"$PY" tools/data/make_demo_data.py --root data/demo
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT="$(cat "$WORK_DIR/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test"
echo "demo finished: checkpoints, logs and the training-curve plot are in $WORK_DIR"
