#!/usr/bin/env python
"""Pictures of what the layers do: DRConv's argmax regions over the image and OctaveConv's
high/low branch energy, for chosen layers (default: all) of a config's model backbone.

examples:
  python tools/analysis/visualize_layers.py CONFIG --image data/demo/.../x.jpg
  python tools/analysis/visualize_layers.py CONFIG --checkpoint ckpt.pth \\
      --layers layer3.0.conv2 --list
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmdet/mmseg config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--image', help='image file (default: the first image under data/demo, '
                        'else random smooth noise)')
    parser.add_argument('--size', type=int, default=320, help='square input size')
    parser.add_argument('--layers', nargs='+', help='backbone module names (see --list)')
    parser.add_argument('--list', action='store_true', help='list the picturable layers and exit')
    parser.add_argument('--out-dir', default='work_dirs/layer_pictures')
    args = parser.parse_args(argv)

    import numpy as np
    from convzoo_mm.analysis.erf import (IMAGENET_MEAN, IMAGENET_STD, find_images, load_images,
                                         smooth_random_images)
    from convzoo_mm.analysis.layer_pictures import (collect_layer_maps, find_layers,
                                                    plot_layer_pictures)
    from convzoo_mm.analysis.mm_models import backbone_from_config
    try:
        backbone = backbone_from_config(args.config, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')
    layers = find_layers(backbone)
    if args.list:
        for name, kind in layers.items():
            print(f'{name}\t{kind}')
        return
    path = args.image or next(iter(find_images('data/demo')), None)
    if path and not os.path.isfile(path):
        parser.error(f'image not found: {path}')
    if path:
        (x, ) = load_images([path], args.size)
        shown = x * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
    else:
        (x, ) = smooth_random_images(1, args.size)
        shown = (x - x.min()) / (x.max() - x.min()) * 255
    image = np.clip(shown.permute(1, 2, 0).numpy(), 0, 255).astype(np.uint8)
    try:
        maps = collect_layer_maps(backbone, x[None], args.layers)
    except ValueError as e:
        parser.exit(2, f'error: {e}\n')
    print(f'{len(maps)} layers pictured from {path or "random smooth noise"}', file=sys.stderr)
    for p in plot_layer_pictures(maps, image, args.out_dir):
        print(p)


if __name__ == '__main__':
    main()
