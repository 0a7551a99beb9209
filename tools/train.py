#!/usr/bin/env python
"""Train a detector or segmentor: runs mmdet's or mmseg's own tools/train.py (picked by the
config's default_scope) with the same arguments.

usage: python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                             [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
`python tools/train.py CONFIG --help` prints the underlying tool's full option list.
--resume alone continues from the latest checkpoint in the work dir. Only mmdet's tool takes a
CKPT after it; for an mmseg config resume from a given one with
`--resume --cfg-options load_from=CKPT`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convzoo_mm.runner import exit_on_usage, run_mm_tool, tool_scope  # noqa: E402

if __name__ == '__main__':
    exit_on_usage(__doc__, sys.argv, 1)
    run_mm_tool('train', sys.argv[1:], tool_scope(sys.argv[1:], 'tools/train.py'))
