#!/usr/bin/env bash
# Distributed evaluation: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options...]
# (one process per GPU; see tools/dist_launch.sh for multi-node variables; gloo on CPU)
usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 3 ]; then usage >&2; exit 2; fi
CONFIG=$1; CHECKPOINT=$2; GPUS=$3; shift 3
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
