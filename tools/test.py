#!/usr/bin/env python
"""Evaluate a checkpoint: runs mmdet's or mmseg's own tools/test.py (picked by the config's
default_scope) with the same arguments.

usage: python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
                            [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
`python tools/test.py CONFIG CHECKPOINT --help` prints the underlying tool's full option list.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convzoo_mm.runner import exit_on_usage, run_mm_tool, tool_scope  # noqa: E402

if __name__ == '__main__':
    exit_on_usage(__doc__, sys.argv, 2)
    run_mm_tool('test', sys.argv[1:], tool_scope(sys.argv[1:], 'tools/test.py'))
