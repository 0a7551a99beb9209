#!/usr/bin/env python
"""Speed and memory of the convzoo layers against their references, measured side by side.

Per shape: median and quartiles of forward (inference) and forward+backward time, peak memory,
for the layer and each reference (published layer / 7x7 depthwise / plain conv / naive DRConv),
the ratios, and the max output difference to the exact references. Writes
OUT_DIR/benchmark_layers.{md,json,png} and prints the markdown.

examples:
  python tools/analysis/benchmark_layers.py                              # all layers, paper shapes
  python tools/analysis/benchmark_layers.py --layers WTConv --threads 2 --formats nchw channels_last
  python tools/analysis/benchmark_layers.py --layers DRConv --shapes 8x256x28x28 --repeats 20
  python tools/analysis/benchmark_layers.py --preset tiny --repeats 3    # smoke run, seconds
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
    parser.add_argument('--layers', nargs='+', help='layer names (default: every layer in '
                        'convzoo_mm.layers.__all__ with count_flops)')
    parser.add_argument('--preset', default='paper', choices=['paper', 'tiny'])
    parser.add_argument('--shapes', nargs='+', type=parse_shape, help='NxCxHxW shapes replacing '
                        "the preset's (layer options such as WTConv levels from its first case)")
    parser.add_argument('--repeats', type=int, default=10, help='timed repeats (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls first (default 2)')
    parser.add_argument('--formats', nargs='+', default=['nchw', 'channels_last'],
                        choices=['nchw', 'channels_last'],
                        help='memory formats to try; the fastest is reported per module')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'all' (cpu, then "
                        'cuda when available)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory pass')
    parser.add_argument('--autocast', choices=['bf16', 'fp16'], help='run every module under '
                        'torch.autocast with this dtype (outputs compared with atol 3e-2 '
                        'relative to the output scale instead of 1e-5)')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_layers')
    args = parser.parse_args(argv)

    import torch
    from convzoo_mm.analysis.benchmark import AUTOCAST_DTYPES, apply_cli_device, run_benchmark
    from convzoo_mm.analysis.layer_suites import build_cases

    apply_cli_device(parser, args)
    try:
        cases = build_cases(args.layers, args.preset, args.shapes)
    except ValueError as e:
        parser.error(str(e))
    devices = ['cpu', 'cuda'] if args.device == 'all' else [args.device]
    if args.device == 'all' and not torch.cuda.is_available():
        devices = ['cpu']
    dtype = AUTOCAST_DTYPES.get(args.autocast)
    for dev in devices:
        out_dir = args.out_dir if len(devices) == 1 else os.path.join(args.out_dir, dev)
        res = run_benchmark(cases, out_dir, args.repeats, args.warmup, args.formats, dev,
                            measure_memory=not args.no_memory, autocast=dtype,
                            atol=3e-2 if dtype else 1e-5)
        print(res['markdown'])
        print('wrote ' + ', '.join(res['files']))


if __name__ == '__main__':
    main()
