#!/usr/bin/env bash
# Distributed evaluation with torchrun:
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]
# NNODES / NODE_RANK / MASTER_ADDR / PORT as in dist_train.sh; PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS_PER_NODE [tools/test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
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
    "$TOOLS_DIR/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
