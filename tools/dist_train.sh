#!/usr/bin/env bash
# Distributed training with torchrun, e.g. the paper's F1 recipe on 8 GPUs:
#   bash tools/dist_train.sh configs/nfnet/f1_imagenet.py 8
# Multi-node (run on every node, NODE_RANK 0..NNODES-1):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
# Extra arguments go to tools/train.py. PYTHON selects the interpreter (default: the checkout's .venv, else python).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS_PER_NODE [tools/train.py options]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
# The checkout's virtual environment (tools/setup_env.sh) unless PYTHON says otherwise.
if [ -z "${PYTHON:-}" ] && [ -x "$TOOLS_DIR/../.venv/bin/python" ]; then
    PYTHON="$TOOLS_DIR/../.venv/bin/python"
fi
PYTHON=${PYTHON:-python}

"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
