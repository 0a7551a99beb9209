#!/usr/bin/env python
"""Train-step and inference time of every config pair of a suite against its baseline.

Runs tools/analysis/benchmark_model.py's comparison (both models in one process, interleaved,
same random batch) for each (config, baseline) pair of ``convzoo_mm.analysis.model_bench.
CONFIG_PAIRS[SUITE]`` and writes one summary table (OUT_DIR/benchmark_configs.{md,json}),
updated after every pair so a long run keeps what it measured.

examples:
  python tools/analysis/benchmark_configs.py demo --shape 128 128 --batch-size 8 --threads 2
  python tools/analysis/benchmark_configs.py paper --only cascade mask-rcnn_wtconvnext --no-memory
  python tools/analysis/benchmark_configs.py paper --only mask-rcnn_r50 faster   # det pairs
  python tools/analysis/benchmark_configs.py paper --only upernet --batch-size 2   # (BN in PPM)
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main(argv=None):
    from convzoo_mm.analysis.model_bench import CONFIG_PAIRS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog='examples:' +
                                     __doc__.split('examples:')[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('suite', choices=sorted(CONFIG_PAIRS), help='which config pairs')
    parser.add_argument('--only', nargs='+', metavar='TEXT',
                        help='keep the pairs whose config path contains one of these texts')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory pass')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_configs')
    args = parser.parse_args(argv)

    from convzoo_mm.analysis.benchmark import apply_cli_device
    from convzoo_mm.analysis.model_bench import benchmark_configs, pairs_table
    apply_cli_device(parser, args)
    pairs = [p for p in CONFIG_PAIRS[args.suite]
             if not args.only or any(t in p[0] for t in args.only)]
    if not pairs:
        parser.error(f'no pair of suite {args.suite!r} has {args.only!r} in its config path')
    os.makedirs(args.out_dir, exist_ok=True)
    results = []
    for i, (config, baseline) in enumerate(pairs):
        print(f'[{i + 1}/{len(pairs)}] {config}', file=sys.stderr, flush=True)
        res = benchmark_configs(os.path.join(ROOT, config), os.path.join(ROOT, baseline),
                                args.shape, args.batch_size, args.repeats, args.warmup,
                                args.device, not args.no_memory,
                                log=lambda s: print('  ' + s, file=sys.stderr, flush=True))
        results.append(dict(config=config, baseline=baseline, rows=res['rows']))
        md = (f'{res["markdown"].splitlines()[0]}\n\n' + pairs_table(results))
        with open(os.path.join(args.out_dir, 'benchmark_configs.md'), 'w') as f:
            f.write(md)
        with open(os.path.join(args.out_dir, 'benchmark_configs.json'), 'w') as f:
            json.dump(dict(info=res['info'], suite=args.suite, shape=args.shape,
                           batch_size=args.batch_size, results=results), f, indent=1)
    print(md)


if __name__ == '__main__':
    main()
