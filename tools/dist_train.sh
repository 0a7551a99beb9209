#!/usr/bin/env bash
# Distributed training: bash tools/dist_train.sh CONFIG GPUS [train.py options...]
# (one process per GPU; see tools/dist_launch.sh for multi-node variables; gloo on CPU)
usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 2 ]; then usage >&2; exit 2; fi
CONFIG=$1; GPUS=$2; shift 2
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$GPUS" "$CONFIG" "$@"
