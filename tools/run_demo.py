#!/usr/bin/env python
"""The demo job (README command 1): generate the embedded shapes data if missing, train the demo
FCOS detector and UperNet segmentor with WTConv (and the same models with plain 3x3 convs)
through the mm training tools, evaluate them with the mm test tools and print one table
(bbox mAP, mIoU, time, work_dirs)."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convzoo_mm.demo.run import custom_data_root, run_demo  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--work-dir', default='work_dirs/demo', help='root of the work_dirs')
    parser.add_argument('--data-root', default='data/demo',
                        help='where the data is generated and read (relative paths from the '
                        'current directory; no spaces or commas)')
    parser.add_argument('--tasks', nargs='+', default=['det', 'seg'], choices=['det', 'seg'])
    parser.add_argument('--no-baselines', action='store_true',
                        help='skip the plain-conv baselines (halves the time)')
    args = parser.parse_args()
    try:
        custom_data_root(os.path.abspath(args.data_root), args.tasks)
    except ValueError as e:
        parser.error(str(e))
    run_demo(args.work_dir, args.data_root, tuple(args.tasks), not args.no_baselines)


if __name__ == '__main__':
    main()
