#!/usr/bin/env python
"""Training and inference speed of the WTConvNeXt backbone against its ConvNeXt baseline.

Both backbones (same arch, ``conv_type='wtconv'`` vs ``'plain'``, fresh init, no drop path) are
built in one process and measured interleaved on the same random images: one train step is
forward + backward of the outputs' randomly weighted means + SGD step; inference is a no_grad
forward. Needs no mmdet/mmseg. Prints a markdown table (ratios to ConvNeXt) and writes
OUT_DIR/benchmark_wtconvnext.{md,json}. ``--profile N`` also profiles N train steps of each model
(torch.profiler, convzoo_mm.analysis.model_bench.profile_step): the host's own CPU time, its time
waiting for the device and the device's kernel time per step, and the most expensive operators
in OUT_DIR/profile_<model>.txt.

examples:
  python tools/analysis/benchmark_wtconvnext.py --device cuda --shape 64 3 224 224
  python tools/analysis/benchmark_wtconvnext.py --device cuda --shape 2 3 800 1216 --autocast bf16
  python tools/analysis/benchmark_wtconvnext.py --device cuda --autocast bf16 --profile 5
  python tools/analysis/benchmark_wtconvnext.py --device cuda --autocast bf16 \\
      --compile reduce-overhead
  python tools/analysis/benchmark_wtconvnext.py --shape 1 3 128 128 --repeats 2     # CPU smoke run
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='examples:' + __doc__.split('examples:')[1])
    parser.add_argument('--arch', default='tiny', help="WTConvNeXt arch (default 'tiny')")
    parser.add_argument('--shape', type=int, nargs=4, default=[64, 3, 224, 224],
                        metavar=('N', 'C', 'H', 'W'), help='input batch (default 64 3 224 224)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--autocast', choices=['bf16', 'fp16'], help='forward under '
                        'torch.autocast with this dtype (as mm AmpOptimWrapper training)')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory pass')
    parser.add_argument('--profile', type=int, default=0, metavar='STEPS',
                        help='also profile STEPS train steps of each model (default 0: off)')
    parser.add_argument('--compile', choices=['default', 'reduce-overhead', 'max-autotune'],
                        help='run both backbones through torch.compile with this mode '
                        "(reduce-overhead: CUDA graphs; WTConv's Triton path is a custom op); "
                        'no peak-memory pass then')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile backend with --compile (default 'inductor')")
    parser.add_argument('--out-dir', default='work_dirs/benchmark_wtconvnext')
    args = parser.parse_args(argv)
    if args.profile < 0:
        parser.error(f'--profile must be >= 0 steps, got {args.profile}')

    import torch
    from convzoo_mm.analysis.benchmark import AUTOCAST_DTYPES, apply_cli_device, machine_info
    from convzoo_mm.analysis.model_bench import (backbone_steps, compare_steps, model_table,
                                                 profile_step)
    from convzoo_mm.backbones import WTConvNeXt

    apply_cli_device(parser, args)
    try:
        WTConvNeXt(arch=args.arch)
    except ValueError as e:
        parser.error(str(e))
    dtype = AUTOCAST_DTYPES.get(args.autocast)
    torch.manual_seed(0)
    images = torch.randn(args.shape, device=args.device)
    compile_cfg = None if args.compile is None else dict(mode=args.compile,
                                                         backend=args.compile_backend)
    names = {'ConvNeXt': 'plain', 'WTConvNeXt': 'wtconv'}
    steps = {f'{name}-{args.arch}': backbone_steps(
        WTConvNeXt(arch=args.arch, conv_type=ct, in_channels=args.shape[1]).to(args.device),
        images, autocast=dtype, compile=compile_cfg) for name, ct in names.items()}
    baseline = f'ConvNeXt-{args.arch}'
    # no peak-memory pass for compiled steps: CUDA graphs allocate nothing new when they
    # replay, so the peak would not be the step's
    rows = compare_steps(steps, baseline, args.repeats, args.warmup, args.device,
                         measure_memory=not args.no_memory and compile_cfg is None,
                         log=lambda s: print(s, file=sys.stderr))
    for r in rows:
        r['images_per_s'] = args.shape[0] / r['median']
    info = machine_info(args.device)
    if dtype is not None:
        info['autocast'] = args.autocast
    if compile_cfg is not None:
        info['compile'] = f'{args.compile} ({args.compile_backend})'
    md = model_table(rows, info, args.shape[2:], args.shape[0], args.repeats)
    md += (f'\nautocast: {args.autocast or "none (fp32)"}; compile: {args.compile or "no"}; '
           f'images/s: '
           + ', '.join(f'{r["model"]} {r["kind"]} {r["images_per_s"]:.1f}' for r in rows) + '\n')
    os.makedirs(args.out_dir, exist_ok=True)
    profiles = {}
    if args.profile:
        md += ('\n| Model | host CPU ms per train step | host waiting for the device, ms | '
               'device kernel ms per train step |\n|---|---|---|---|\n')
        for name, fns in steps.items():
            prof = profile_step(fns['train'], args.profile, args.device)
            with open(os.path.join(args.out_dir, f'profile_{name}.txt'), 'w') as f:
                f.write(prof['table'])
            dev = '-' if prof['device_ms'] is None else f'{prof["device_ms"]:.1f}'
            md += f'| {name} | {prof["cpu_ms"]:.1f} | {prof["wait_ms"]:.1f} | {dev} |\n'
            profiles[name] = dict(cpu_ms=prof['cpu_ms'], wait_ms=prof['wait_ms'],
                                  device_ms=prof['device_ms'], steps=args.profile)
    with open(os.path.join(args.out_dir, 'benchmark_wtconvnext.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(args.out_dir, 'benchmark_wtconvnext.json'), 'w') as f:
        json.dump(dict(info=info, rows=rows, shape=args.shape, arch=args.arch,
                       profiles=profiles), f, indent=1)
    print(md)


if __name__ == '__main__':
    main()
