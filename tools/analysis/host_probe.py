#!/usr/bin/env python
"""Host cost of WTConv's fused (Triton) path: dispatcher calls, kernel launches, host time.

Where a GPU layer is bound by the CPU that launches its kernels, its speed is its host work.
This tool measures that work on any machine: the fused path runs with its Triton kernels
replaced by launchers that only count (outputs are garbage, the host work is real), while a
TorchDispatchMode counts the PyTorch ops. It prints, for one depthwise WTConv layer, the
dispatcher calls, the ops among them that run a kernel, the Triton launches and the host time
per forward (no grad) and per fwd+bwd; with --models, the calls and launches of one fwd+bwd of
WTConvNeXt against ConvNeXt. On a GPU, --launch keeps the real launches (host time then
includes Triton's launch cost). Writes OUT_DIR/host_probe.{md,json}. Library:
convzoo_mm.analysis.host_probe. Needs Triton (its CPU package is enough without --launch).

examples:
  python tools/analysis/host_probe.py                          # C16@16x16 L5, CPU, stubbed
  python tools/analysis/host_probe.py --models --threads 1
  python tools/analysis/host_probe.py --channels 96 --size 56 56 --device cuda --launch
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], epilog='examples:' + __doc__.split('examples:')[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--channels', type=int, default=16, help='layer width C (default 16)')
    parser.add_argument('--size', type=int, nargs=2, default=[16, 16], metavar=('H', 'W'),
                        help='input height and width (default 16 16)')
    parser.add_argument('--levels', type=int, default=5, help='wavelet levels L (default 5)')
    parser.add_argument('--kernel-size', type=int, default=5, help='k (default 5)')
    parser.add_argument('--batch', type=int, default=1, help='input batch size (default 1)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--launch', action='store_true',
                        help='run the real Triton kernels (needs --device cuda)')
    parser.add_argument('--rounds', type=int, default=40, help='timed rounds (default 40)')
    parser.add_argument('--repeats', type=int, default=20, help='calls per round (default 20)')
    parser.add_argument('--models', action='store_true',
                        help='also count one fwd+bwd of WTConvNeXt against ConvNeXt')
    parser.add_argument('--arch', default='tiny',
                        help="WTConvNeXt / ConvNeXt arch with --models (default 'tiny')")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--out-dir', default='work_dirs/host_probe')
    args = parser.parse_args(argv)
    for name in ('channels', 'levels', 'kernel_size', 'batch', 'rounds', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.kernel_size % 2 == 0:
        parser.error(f'--kernel-size must be odd (the fused path), got {args.kernel_size}')
    if min(args.size) < 1:
        parser.error(f'--size must be positive, got {args.size}')
    if args.launch and not args.device.startswith('cuda'):
        parser.error('--launch runs the Triton kernels and needs --device cuda')

    from convzoo_mm.analysis.benchmark import apply_cli_device, machine_info
    from convzoo_mm.analysis.host_probe import backbone_calls, host_cost_markdown, layer_host_cost
    from convzoo_mm.ops import haar_wtconv

    apply_cli_device(parser, args)
    if not haar_wtconv.AVAILABLE:
        parser.error('the fused path needs Triton: pip install triton')
    if args.models:
        from convzoo_mm.backbones import WTConvNeXt
        try:
            WTConvNeXt(arch=args.arch)
        except ValueError as e:
            parser.error(f'--arch: {e}')
    layer = layer_host_cost(args.channels, args.size, args.levels, args.kernel_size,
                            args.batch, args.device, args.launch, args.rounds, args.repeats)
    models = backbone_calls(args.arch, device=args.device, launch=args.launch) \
        if args.models else None
    info = machine_info(args.device)
    md = host_cost_markdown(layer, models)
    md += f"\n{info['date']}, {info['processor']}, {info['threads']} threads, torch " \
          f"{info['torch']}\n"
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'host_probe.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(args.out_dir, 'host_probe.json'), 'w') as f:
        json.dump(dict(info=info, layer=layer, models=models), f, indent=1)
    print(md)


if __name__ == '__main__':
    main()
