#!/usr/bin/env python
"""FLOPs (multiply-accumulates) and parameters of a detector or segmentor config.

Counts like mmdet's tools/analysis_tools/get_flops.py: backbone + neck + heads (mode='tensor', no
post-processing) on one image of --shape H W, traced with mmengine's FlopAnalyzer; every
convzoo layer (WTConv, OctaveConv, DRConv, ...) is counted by its own count_flops() (the
traced count of these layers is wrong: wavelet transforms, pooled paths and dynamic filters are
partly invisible or counted m times), and convs with padding='same' are counted too.

Two-stage detectors (Standard/Cascade RoI head) are counted by default like mmdet 2.x's get_flops
(model.forward_dummy), the convention of the FLOPs quoted by the papers of that era: backbone +
neck + RPN head, then every bbox head on --rois fixed random proposals (default 1000) and every
mask head on the first --mask-rois of them (default 100), per cascade stage. --rpn-proposals
counts like mmdet 3 instead (RoI and mask heads on however many proposals the untrained RPN
returns, typically ~1000 each). Single-stage detectors and segmentors are not affected.

examples:
  python tools/analysis/get_flops.py configs/demo/<config>.py --shape 1280 800
  python tools/analysis/get_flops.py CONFIG --shape 512 2048 --max-depth 2 --layers
  python tools/analysis/get_flops.py TWO_STAGE_CONFIG --shape 1280 800 --rois 1000 --mask-rois 100
  python tools/analysis/get_flops.py TWO_STAGE_CONFIG --shape 1280 800 --rpn-proposals
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
    parser.add_argument('--rois', type=int, default=1000,
                        help='two-stage detectors: proposals each bbox head (stage) runs on, '
                        'mmdet 2.x / paper convention; default 1000')
    parser.add_argument('--mask-rois', type=int, default=100,
                        help='two-stage detectors: the first M of those RoIs each mask head '
                        '(stage) runs on; default 100')
    parser.add_argument('--rpn-proposals', action='store_true',
                        help="two-stage detectors: count like mmdet 3 (mode='tensor', RoI heads "
                        'on the RPN\'s proposals) instead of on fixed RoIs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 1:
        parser.error('--shape takes H W or one size S')
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if args.rois < 1 or args.mask_rois < 0:
        parser.error('--rois must be >= 1 and --mask-rois >= 0')

    from convzoo_mm.analysis.flops import format_size
    from convzoo_mm.analysis.mm_models import load_config, model_complexity
    try:
        cfg = load_config(args.config, args.cfg_options)
        print(f'counting {args.config} at {shape[0]}x{shape[1]} ...', file=sys.stderr)
        res = model_complexity(cfg, shape, args.max_depth, args.checkpoint,
                               rois=None if args.rpn_proposals else args.rois,
                               mask_rois=args.mask_rois)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')
    line = '=' * 40
    roi_line = ''
    if res['roi_mode'] == 'fixed':
        roi_line = (f'\nRoI heads: fixed RoIs (mmdet 2.x / paper convention): bbox heads on '
                    f'{res["rois"][0]}, mask heads on {res["rois"][1]} per stage')
    elif res['roi_mode'] == 'rpn':
        roi_line = '\nRoI heads: on the RPN proposals (mmdet 3 convention, mode=tensor)'
    print(res['table'])
    if args.layers and res['layers']:
        print('\nconvzoo layers (FLOPs from count_flops; traced = what the jit trace saw):')
        for name, rec in res['layers'].items():
            print(f'  {name:50s} {rec["type"]:12s} {format_size(rec["flops"]):>9s}  '
                  f'(traced {format_size(rec["traced_flops"])})  input {rec["input_shapes"]}')
    unsupported = {k: v for k, v in res['unsupported_ops'].items() if v}
    print(f'{line}\nScope: {res["scope"]}\nInput shape: {tuple(shape)} '
          f'(padded to {res["input_shape"]}){roi_line}\n'
          f'Flops: {res["flops_str"]} ({res["flops"]} MACs)\n'
          f'Params: {res["params_str"]} ({res["params"]})\n'
          f'convzoo layers counted exactly: {len(res["layers"])}\n{line}')
    if unsupported:
        print('ops without a FLOP handle (counted as 0): ' + ', '.join(
            f'{k} x{v}' for k, v in sorted(unsupported.items())))


if __name__ == '__main__':
    main()
