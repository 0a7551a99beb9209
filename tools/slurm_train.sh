#!/usr/bin/env bash
# Training on a slurm cluster (one task per GPU, mm's slurm launcher).
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
# Environment: GPUS (total, default 8), GPUS_PER_NODE (default 8), CPUS_PER_TASK (default 5),
# SRUN_ARGS (extra srun arguments); interpreter as in tools/pick_python.sh (CONVZOO_PYTHON, the
# active env's, .venv's).
set -euo pipefail
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 4 ]; then usage >&2; exit 2; fi
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; WORK_DIR=$4; shift 4
GPUS=${GPUS:-8}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}; CPUS_PER_TASK=${CPUS_PER_TASK:-5}
DIR="$(cd "$(dirname "$0")/.." && pwd)"
source "$DIR/tools/pick_python.sh"
PYTHONPATH="$DIR:${PYTHONPATH:-}" srun -p "$PARTITION" --job-name="$JOB_NAME" \
  --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u "$DIR/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher slurm "$@"
