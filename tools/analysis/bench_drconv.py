#!/usr/bin/env python
"""DRConv speed and memory against a plain conv and the naive all-m-regions form, in one run.

Default case = the issue-7 target: m=8, C 256->256, 28x28, k=3, batch 8. Each module is timed
interleaved with the others (medians and quartiles over --repeats) for forward (no_grad) and
forward+backward, peak tensor memory of one call of each, and the naive form's output is
compared with the layer's (same parameters). Uses the shared harness
(convzoo_mm.analysis.benchmark); writes OUT_DIR/benchmark_layers.{md,json,png}.

examples:
  python tools/analysis/bench_drconv.py                       # target shape, 1 thread
  python tools/analysis/bench_drconv.py --generator basis --num-regions 4 --repeats 10
  python tools/analysis/bench_drconv.py --shape 2x64x56x56 --threads 2
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from convzoo_mm.analysis.layer_suites import parse_shape  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='examples:' + __doc__.split('examples:')[1])
    parser.add_argument('--shape', type=parse_shape, default=(8, 256, 28, 28),
                        help='input NxCxHxW (C -> C, k=3, padding 1); default 8x256x28x28')
    parser.add_argument('--num-regions', type=int, default=8, help='m (default 8)')
    parser.add_argument('--generator', default='full', choices=['full', 'basis'])
    parser.add_argument('--repeats', type=int, default=5, help='timed repeats (default 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls first (default 1)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: on a shared machine, oversubscribed '
                        'OpenMP threads make every timing meaningless)')
    parser.add_argument('--no-naive', action='store_true', help='skip the (slow) naive form')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory pass')
    parser.add_argument('--out-dir', default='work_dirs/bench_drconv')
    args = parser.parse_args(argv)

    import torch
    import torch.nn as nn
    from convzoo_mm.analysis.benchmark import BenchCase, run_benchmark
    from convzoo_mm.analysis.layer_suites import NaiveDRConv
    from convzoo_mm.layers.drconv import DRConv

    torch.set_num_threads(args.threads)
    n, c, h, w = args.shape
    refs = {'plain conv 3x3': lambda layer: nn.Conv2d(c, c, 3, padding=1)}
    if not args.no_naive:
        refs['naive m-conv DRConv'] = NaiveDRConv
    label = f'C{c}@{h}x{w} N{n} m{args.num_regions} {args.generator}'
    case = BenchCase('DRConv', label, args.shape,
                     make_layer=lambda: DRConv(c, c, 3, padding=1, num_regions=args.num_regions,
                                               generator=args.generator),
                     references=refs, exact=() if args.no_naive else ('naive m-conv DRConv', ))
    res = run_benchmark([case], args.out_dir, args.repeats, args.warmup, ['nchw'], 'cpu',
                        measure_memory=not args.no_memory, name='bench_drconv')
    print(res['markdown'])
    print('wrote ' + ', '.join(res['files']))


if __name__ == '__main__':
    main()
