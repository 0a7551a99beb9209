#!/usr/bin/env python
"""Results table (mm README style) and training curves from mm work_dirs.

Reads each WORK_DIR written by tools/train.py (its <config name>.py and the newest
<timestamp>/vis_data/scalars.json), prints the table
  | Backbone | Conv | Lr schd | Mem (GB) | box AP | mask AP | mIoU | Config |
(last validation result, max training memory; '-' where not logged, e.g. memory on CPU) and
writes OUT_DIR/results.md and OUT_DIR/curves.png (training loss, validation metrics).

example:
  python tools/analysis/summarize.py work_dirs/demo_* --out-dir work_dirs/summary
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dirs', nargs='+', help='work_dirs of finished (or running) trainings')
    parser.add_argument('--out-dir', default='work_dirs/summary')
    parser.add_argument('--skip-bad', action='store_true',
                        help='warn about unreadable work_dirs instead of failing')
    args = parser.parse_args(argv)

    from convzoo_mm.analysis.summarize import plot_curves, results_table, summarize_work_dir
    rows = []
    for i, wd in enumerate(args.work_dirs):
        print(f'[{i + 1}/{len(args.work_dirs)}] reading {wd}', file=sys.stderr)
        try:
            rows.append(summarize_work_dir(wd))
        except (FileNotFoundError, ValueError) as e:
            if not args.skip_bad:
                parser.exit(2, f'error: {e}\n')
            print(f'warning: skipping {wd}: {e}', file=sys.stderr)
    if not rows:
        parser.exit(2, 'error: no readable work_dir\n')
    os.makedirs(args.out_dir, exist_ok=True)
    table = results_table(rows)
    md = os.path.join(args.out_dir, 'results.md')
    with open(md, 'w') as f:
        f.write(table)
    png = plot_curves(rows, os.path.join(args.out_dir, 'curves.png'))
    print(table)
    print(f'wrote {md}, {png}')


if __name__ == '__main__':
    main()
