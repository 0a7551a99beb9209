#!/usr/bin/env python
"""Train-step and inference time and peak memory of a config against its baseline config.

Both models are built in one process and measured interleaved on the same random batch
(random images of --shape, random boxes/masks or label maps for the losses): one train step is
forward (mode='loss') + backward + SGD step; inference is mode='predict'. Prints a markdown table
with medians, quartiles and the ratios to the baseline; writes OUT_DIR/benchmark_model.{md,json}.

example:
  python tools/analysis/benchmark_model.py configs/demo/X.py --baseline configs/demo/Y.py \\
      --shape 256 256
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='the config to measure')
    parser.add_argument('--baseline', required=True, help='the config to compare against')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--part', default='model', choices=['model', 'backbone'],
                        help='time the whole model (default) or only its backbone')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_model')
    args = parser.parse_args(argv)

    from convzoo_mm.analysis.benchmark import apply_cli_device
    from convzoo_mm.analysis.model_bench import benchmark_configs
    apply_cli_device(parser, args)
    try:
        res = benchmark_configs(args.config, args.baseline, args.shape, args.batch_size,
                                args.repeats, args.warmup, args.device, not args.no_memory,
                                log=lambda s: print(s, file=sys.stderr), part=args.part)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'benchmark_model.md'), 'w') as f:
        f.write(res['markdown'])
    with open(os.path.join(args.out_dir, 'benchmark_model.json'), 'w') as f:
        json.dump(dict(info=res['info'], rows=res['rows'], config=args.config, part=args.part,
                       baseline=args.baseline, shape=args.shape,
                       batch_size=args.batch_size), f, indent=1)
    print(res['markdown'])


if __name__ == '__main__':
    main()
