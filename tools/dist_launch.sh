#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh / dist_test.sh:
#   bash tools/dist_launch.sh TOOL NPROC [TOOL arguments...]   (TOOL: train.py or test.py)
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node. Interpreter:
# CONVZOO_PYTHON, else the active env's, else .venv's (tools/pick_python.sh). Backend: the
# config's (NCCL) on GPUs; without CUDA, gloo (convzoo_mm patches mmengine 0.10.7's launcher,
# which assumed CUDA; SyncBN needs GPUs).
set -euo pipefail
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 3 ]; then usage >&2; exit 2; fi
TOOL=$1; NPROC=$2; shift 2
DIR="$(cd "$(dirname "$0")/.." && pwd)"
source "$DIR/tools/pick_python.sh"
PYTHONPATH="$DIR:${PYTHONPATH:-}" exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" "$DIR/tools/$TOOL" "$@" --launcher pytorch
