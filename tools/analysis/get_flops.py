#!/usr/bin/env python
"""FLOPs (multiply-accumulates) and parameters of a detector or segmentor config.

Counts like mmdet's tools/analysis_tools/get_flops.py: backbone + neck + heads (mode='tensor', no
post-processing) on one image of --shape H W, traced with mmengine's FlopAnalyzer; every
convzoo layer (WTConv, OctaveConv, DRConv, ...) is counted by its own count_flops() (the
traced count of these layers is wrong: wavelet transforms, pooled paths and dynamic filters are
partly invisible or counted m times), and convs with padding='same' are counted too.

examples:
  python tools/analysis/get_flops.py configs/demo/<config>.py --shape 1280 800
  python tools/analysis/get_flops.py CONFIG --shape 512 2048 --max-depth 2 --layers
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[1280, 800],
                        help='input H W (one value: square); default 1280 800')
    parser.add_argument('--max-depth', type=int, default=3, help='depth of the per-module table')
    parser.add_argument('--checkpoint', help='optional weights (do not change the count)')
    parser.add_argument('--layers', action='store_true',
                        help='also list every convzoo layer call: count_flops vs traced count')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 1:
        parser.error('--shape takes H W or one size S')
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape

    from convzoo_mm.analysis.flops import format_size
    from convzoo_mm.analysis.mm_models import load_config, model_complexity
    try:
        cfg = load_config(args.config, args.cfg_options)
        print(f'counting {args.config} at {shape[0]}x{shape[1]} ...', file=sys.stderr)
        res = model_complexity(cfg, shape, args.max_depth, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')
    line = '=' * 40
    print(res['table'])
    if args.layers and res['layers']:
        print('\nconvzoo layers (FLOPs from count_flops; traced = what the jit trace saw):')
        for name, rec in res['layers'].items():
            print(f'  {name:50s} {rec["type"]:12s} {format_size(rec["flops"]):>9s}  '
                  f'(traced {format_size(rec["traced_flops"])})  input {rec["input_shapes"]}')
    unsupported = {k: v for k, v in res['unsupported_ops'].items() if v}
    print(f'{line}\nScope: {res["scope"]}\nInput shape: {tuple(shape)} '
          f'(padded to {res["input_shape"]})\nFlops: {res["flops_str"]} ({res["flops"]} MACs)\n'
          f'Params: {res["params_str"]} ({res["params"]})\n'
          f'convzoo layers counted exactly: {len(res["layers"])}\n{line}')
    if unsupported:
        print('ops without a FLOP handle (counted as 0): ' + ', '.join(
            f'{k} x{v}' for k, v in sorted(unsupported.items())))


if __name__ == '__main__':
    main()
