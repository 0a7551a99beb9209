#!/usr/bin/env python
"""Effective receptive field of one or several backbones, side by side in one PNG.

For each config (its model's backbone, with --checkpoints or as initialised): the gradient of the
central position of the chosen output stage w.r.t. the input, |.| summed over input channels and
averaged over the images (the demo images under data/demo by default, or --images DIR; random
smooth images when there are none). Untrained ConvNeXt (layer scale 1e-6) and mmdet ResNet
(zero_init_residual) have near-zero residual branches, so their ERF is that of the stem and
downsampling only: use trained checkpoints, or the --cfg-options below for the architecture.
Prints and saves the fraction of the map covered by the smallest centred square holding
20% / 50% / 99% of the total (higher = wider ERF).

examples:
  python tools/analysis/erf.py configs/demo/A.py configs/demo/B.py --names R50 R50-WTConv
  python tools/analysis/erf.py "dict(type='WTConvNeXt', conv_type='plain')" \\
      "dict(type='WTConvNeXt')"
      --names ConvNeXt-T WTConvNeXt-T   (inline backbone specs instead of configs)
  python tools/analysis/erf.py CONFIG --checkpoints work_dirs/x/epoch_12.pth \\
      --images data/coco/val2017 --size 512
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+', help='mmdet/mmseg configs (their backbones), or '
                        "inline backbone specs \"dict(type='WTConvNeXt', arch='tiny')\"")
    parser.add_argument('--checkpoints', nargs='+', help="one per config ('none' for none)")
    parser.add_argument('--names', nargs='+', help='panel titles, one per config')
    parser.add_argument('--images', default='data/demo', help='image folder (recursive)')
    parser.add_argument('--num-images', type=int, default=8)
    parser.add_argument('--size', type=int, default=256, help='square input size')
    parser.add_argument('--out-index', type=int, default=-1, help='backbone output (stage)')
    parser.add_argument('--out', default='work_dirs/erf/erf.png', help='figure path')
    parser.add_argument('--seed', type=int, default=0, help='torch seed set before building '
                        'each backbone, so an initialisation (no checkpoint) repeats (default 0)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides for every config, e.g. (ERF of an untrained architecture) '
                        'model.backbone.zero_init_residual=False or '
                        'model.backbone.layer_scale_init_value=1.0')
    args = parser.parse_args(argv)
    n = len(args.configs)
    for opt in ('checkpoints', 'names'):
        if getattr(args, opt) and len(getattr(args, opt)) != n:
            parser.error(f'--{opt} needs one value per config ({n})')

    import torch

    from convzoo_mm.analysis.erf import (compute_erf, erf_area_ratios, find_images, load_images,
                                         plot_erfs, save_erf_image, smooth_random_images)
    from convzoo_mm.analysis.mm_models import backbone_from_config

    files = find_images(args.images)[:args.num_images] if os.path.isdir(args.images) else []
    if files:
        images = load_images(files, args.size)
        source = f'{len(files)} images from {args.images}'
    else:
        images = smooth_random_images(args.num_images, args.size)
        source = f'{args.num_images} random smooth images (no images under {args.images})'
    print(f'ERF on {source}, {args.size}x{args.size}', file=sys.stderr)
    names = args.names or [os.path.splitext(os.path.basename(c))[0] if os.path.isfile(c)
                           else f'backbone{i}' for i, c in enumerate(args.configs)]
    erfs, ratios = {}, {}
    for i, (config, name) in enumerate(zip(args.configs, names)):
        ckpt = args.checkpoints[i] if args.checkpoints else None
        ckpt = None if ckpt in (None, 'none') else ckpt
        print(f'[{i + 1}/{n}] {name}: {config}' + (f' ({ckpt})' if ckpt else ''),
              file=sys.stderr)
        torch.manual_seed(args.seed)
        try:
            backbone = backbone_from_config(config, ckpt, args.cfg_options)
            erfs[name] = compute_erf(backbone, images, args.out_index)
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f'error: {e}\n')
        ratios[name] = erf_area_ratios(erfs[name])
        save_erf_image(erfs[name], os.path.splitext(args.out)[0] + f'_{i}_{name}.png')
    plot_erfs(erfs, args.out, title=f'ERF, output {args.out_index}, {source}')
    with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump({k: {str(t): r for t, r in v.items()} for k, v in ratios.items()}, f, indent=1)
    print('| Backbone | 20% area | 50% area | 99% area |\n|---|---|---|---|')
    for name, r in ratios.items():
        print(f'| {name} | {r[0.2]:.4f} | {r[0.5]:.4f} | {r[0.99]:.4f} |')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
