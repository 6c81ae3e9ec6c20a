#!/usr/bin/env bash
# The main job on the embedded demo data: generate the demo set (once), train the demo
# NFNet classifier with AGC on the CPU, then evaluate its last checkpoint.
#
#   bash tools/run_demo.sh [extra tools/train.py args, e.g. --cfg-options ...]
#
# Each run writes into a fresh work dir (WORK_DIR, default work_dirs/nfnet_demo/<timestamp>),
# so earlier runs, checkpoints and logs are never overwritten.
#
# Threads: OMP_NUM_THREADS defaults to the usable cores: those this process may run on
# (`nproc`) less those other processes keep busy (the 1-minute load average, rounded),
# at least 1; MKL_NUM_THREADS defaults to OMP_NUM_THREADS. Values you set are kept, and
# the script prints the ones it uses. More OpenMP threads than free cores is what makes
# a busy machine slow: on 2 cores with one other busy process, 5 demo epochs took 20-22 s
# with 1 thread and 42-76 s with 2.
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

CORES="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # nproc obeys those two
LOAD="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
BUSY="$(awk -v load="$LOAD" 'BEGIN { printf "%d", load + 0.5 }')"
FREE=$(( CORES - BUSY > 1 ? CORES - BUSY : 1 ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$FREE}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS MKL_NUM_THREADS=$MKL_NUM_THREADS" \
     "($CORES cores, load average $LOAD; set these variables to override)"

"$PY" tools/data/make_demo_data.py --root data/demo
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT="$(cat "$WORK_DIR/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test"
echo "demo finished: checkpoints, logs and the training-curve plot are in $WORK_DIR"
