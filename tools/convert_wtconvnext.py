#!/usr/bin/env python
"""Convert an ImageNet WTConvNeXt / ConvNeXt checkpoint for convzoo_mm's ``WTConvNeXt`` backbone.

Sources (detected from the key names, or forced with --format):
  timm        the official WTConvNeXt checkpoints (BGU-CS-VIL/WTConv, timm naming: stem.*,
              stages.{i}.downsample.*, stages.{i}.blocks.{j}.conv_dw.*) and timm ConvNeXt
              checkpoints (conv_dw.weight/bias -> the plain baseline, conv_type='plain')
  fb          facebookresearch/ConvNeXt checkpoints (downsample_layers.*, dwconv, pwconv1/2)
  mmpretrain  mmpretrain ConvNeXt checkpoints (already in our layout: validated, head dropped)

Every source key is mapped or reported as dropped (classifier head, frozen wavelet filters
wt_filter/iwt_filter which WTConv rebuilds); an unknown key is an error. The final ImageNet
LayerNorm (timm head.norm, fb norm) becomes norm3, as in mmpretrain's checkpoints that mmdet's and
mmseg's ConvNeXt configs load; --drop-head-norm drops it instead (what the WTConv authors' mmseg
script does). The output is {'state_dict': {'backbone.<name>': tensor}, 'meta': {...}} for

  init_cfg=dict(type='Pretrained', checkpoint='OUT.pth', prefix='backbone.')

With --arch the result is loaded into WTConvNeXt(arch, conv_type) strictly (missing keys other
than the output norms norm0-2, unexpected keys or shape mismatches are an error).

Examples:
  python tools/convert_wtconvnext.py WTConvNeXt_tiny_5_300e_ema.pth \\
      checkpoints/wtconvnext-tiny_in1k_convzoo.pth --arch tiny
  python tools/convert_wtconvnext.py convnext_tiny_1k_224_ema.pth \\
      checkpoints/convnext-tiny_in1k_convzoo.pth --arch tiny
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='source checkpoint (.pth), loaded with weights_only=True')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--format', choices=['timm', 'fb', 'mmpretrain'], default=None,
                        help='source naming (default: detected from the keys)')
    parser.add_argument('--arch', choices=['tiny', 'small', 'base', 'large'], default=None,
                        help='check the result by loading it into WTConvNeXt(arch) strictly')
    parser.add_argument('--drop-head-norm', action='store_true',
                        help='drop the final ImageNet LayerNorm instead of mapping it to norm3')
    parser.add_argument('--quiet', action='store_true', help='print only the summary line')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from convzoo_mm.backbones.wtconvnext import (WTConvNeXt, check_converted, convert_state_dict,
                                                 load_source_checkpoint)

    src = load_source_checkpoint(args.src)
    new, report = convert_state_dict(src, fmt=args.format,
                                     keep_head_norm=not args.drop_head_norm)
    conv_type = 'wtconv' if any('.wavelet_convs.' in k for k in new) else 'plain'
    if not args.quiet:
        for key in report['dropped_head']:
            print(f'dropped (classifier head): {key}')
        for key in report['dropped_frozen']:
            print(f'dropped (frozen wavelet filter, rebuilt by WTConv): {key}')
    if args.arch:
        model = WTConvNeXt(args.arch, conv_type=conv_type)
        check_converted(model, new)
    meta = dict(source=os.path.basename(args.src), converter='convzoo_mm convert_wtconvnext',
                conv_type=conv_type, arch=args.arch or 'unchecked',
                head_norm='dropped' if args.drop_head_norm else 'norm3')
    out_dir = os.path.dirname(os.path.abspath(args.dst))
    os.makedirs(out_dir, exist_ok=True)
    torch.save({'state_dict': new, 'meta': meta}, args.dst)
    print(f'{args.src} -> {args.dst}: {len(report["mapped"])} keys mapped, '
          f'{len(report["dropped_head"])} head keys dropped, '
          f'{len(report["dropped_frozen"])} frozen filter keys dropped; conv_type={conv_type!r}'
          + (f', loads into WTConvNeXt({args.arch!r})' if args.arch else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
