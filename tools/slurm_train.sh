#!/usr/bin/env bash
# Training on a Slurm cluster (one task per GPU), e.g. F1 on 4 nodes x 8 GPUs:
#   GPUS=32 bash tools/slurm_train.sh PARTITION nfnet-f1 configs/nfnet/f1_imagenet.py \
#       work_dirs/f1_imagenet [tools/train.py options]
# GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS and PYTHON (python) are read
# from the environment.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
# The checkout's virtual environment (tools/setup_env.sh) unless PYTHON says otherwise.
if [ -z "${PYTHON:-}" ] && [ -x "$TOOLS_DIR/../.venv/bin/python" ]; then
    PYTHON="$TOOLS_DIR/../.venv/bin/python"
fi
PYTHON=${PYTHON:-python}

# shellcheck disable=SC2086
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS_DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
