#!/usr/bin/env python
"""OctaveConv speed on CPU: the drop-in layer vs the plain conv it replaces, and Oct-R50 vs R50.

Everything is measured side by side in one run: each repeat times every variant once in turn
(interleaved, so machine-load drift hits all alike), and the reported numbers are medians over
the repeats. Ratios < 1 mean OctaveConv is faster.

examples:
    OMP_NUM_THREADS=2 python tools/analysis/bench_octconv.py            # layers + backbones
    python tools/analysis/bench_octconv.py --part backbone --alpha 0.5 0.25 --repeats 15
    python tools/analysis/bench_octconv.py --part layer --batch 8

Layer part: ResNet-50 stage shapes (C64@56², C128@28², C256@14², C512@7²), kernel 3 and 1,
drop-in OctaveConv (alpha_in = alpha_out = alpha) vs ``nn.Conv2d`` with the same weight, forward
and forward+backward (gradients w.r.t. input and weight).
Backbone part: OctResNet-50 (alpha) vs mmdet's ResNet-50 (or OctResNet alpha=0, identical, when
mmdet is missing), batch 2 at 224x224 in train mode, forward+backward of the sum of the outputs.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from convzoo_mm.layers.octconv import OctaveConv  # noqa: E402

STAGES = [('C64@56²', 64, 56), ('C128@28²', 128, 28), ('C256@14²', 256, 14),
          ('C512@7²', 512, 7)]


def _step(model, x, backward):
    if backward:
        out = model(x)
        loss = sum(o.float().sum() for o in out) if isinstance(out, (tuple, list)) else out.sum()
        loss.backward()
    else:
        with torch.no_grad():
            model(x)


CLOCK = time.perf_counter


def time_interleaved(variants, repeats, warmup=2):
    """variants: {name: zero-arg callable}. Median seconds per call, interleaved repeats."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t0 = CLOCK()
            fn()
            times[k].append(CLOCK() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_layers(args):
    print(f'\n## Drop-in OctaveConv vs nn.Conv2d (batch {args.batch}, medians of {args.repeats})')
    print('| shape | k | alpha | plain fwd ms | oct fwd ms | fwd ratio | plain fwd+bwd ms | '
          'oct fwd+bwd ms | fwd+bwd ratio | MAC ratio |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for label, c, hw in STAGES:
        for k in (3, 1):
            for alpha in args.alpha:
                torch.manual_seed(0)
                oct_ = OctaveConv(c, c, k, alpha_in=alpha, alpha_out=alpha, bias=False)
                plain = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
                plain.weight.data.copy_(oct_.weight.data)
                x = torch.randn(args.batch, c, hw, hw, requires_grad=True)
                res = {}
                for bwd in (False, True):
                    res[bwd] = time_interleaved(
                        {'plain': lambda: _step(plain, x, bwd), 'oct': lambda: _step(oct_, x, bwd)},
                        args.repeats)
                macs = oct_.count_flops(tuple(x.shape)) / (
                    args.batch * c * c * hw * hw * k * k)
                f, b = res[False], res[True]
                print(f'| {label} | {k} | {alpha} | {f["plain"] * 1e3:.2f} | {f["oct"] * 1e3:.2f} '
                      f'| {f["oct"] / f["plain"]:.2f} | {b["plain"] * 1e3:.2f} | '
                      f'{b["oct"] * 1e3:.2f} | {b["oct"] / b["plain"]:.2f} | {macs:.3f} |',
                      flush=True)


def _reference_resnet(depth):
    try:
        from mmdet.models.backbones import ResNet
        return ResNet(depth=depth, norm_eval=False), 'mmdet ResNet'
    except ImportError:
        from convzoo_mm.backbones.oct_resnet import OctResNet
        return OctResNet(depth=depth, alpha=0.0, norm_eval=False), 'OctResNet alpha=0 (= ResNet)'


def bench_backbones(args):
    from convzoo_mm.backbones.oct_resnet import OctResNet
    ref, ref_name = _reference_resnet(args.depth)
    models = {'R50': ref}
    for a in args.alpha:
        models[f'Oct-R50 a{a}'] = OctResNet(depth=args.depth, alpha=a, norm_eval=False)
    x = torch.randn(args.batch_backbone, 3, args.size, args.size)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    for m in models.values():
        m.train()  # (mmdet's ResNet.train returns None: no chaining)
        m.to(memory_format=fmt)
    layout = 'channels_last' if args.channels_last else 'NCHW'
    print(f'\n## OctResNet-{args.depth} vs {ref_name}: batch {args.batch_backbone}, '
          f'{args.size}x{args.size}, train mode, {layout}, medians of {args.repeats}')
    print('| model | fwd ms | fwd+bwd ms | fwd ratio | fwd+bwd ratio |')
    print('|---|---|---|---|---|')
    fwd = time_interleaved({k: (lambda m=m: _step(m, x, False)) for k, m in models.items()},
                           args.repeats)
    both = time_interleaved({k: (lambda m=m: _step(m, x, True)) for k, m in models.items()},
                            args.repeats)
    for k in models:
        print(f'| {k} | {fwd[k] * 1e3:.1f} | {both[k] * 1e3:.1f} | {fwd[k] / fwd["R50"]:.3f} | '
              f'{both[k] / both["R50"]:.3f} |', flush=True)


def count_backbone_flops(model, size):
    """MACs of one forward at ``size`` (H, W), batch 1: every conv the forward runs, counted by
    torch's FlopCounterMode (OctaveConv's pooled/upsampled paths at their real resolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, *size))
    return counter.get_total_flops() // 2


def flops_table(args):
    from convzoo_mm.backbones.oct_resnet import OctResNet, OctResNetV1c
    paper = {0.0: 4.1, 0.125: 3.6, 0.25: 3.1, 0.5: 2.4, 0.75: 1.9}
    print(f'\n## FLOPs (GMACs, batch 1) and parameters of ResNet-{args.depth} vs OctResNet-'
          f'{args.depth}')
    print('| backbone | alpha | params (M) | 224x224 (+fc) | paper | 1333x800 (COCO test) | '
          '2048x512 (ADE20K test, V1c) |')
    print('|---|---|---|---|---|---|---|')
    for a in (0.0, 0.125, 0.25, 0.5, 0.75):
        m = OctResNet(depth=args.depth, alpha=a).eval()
        mc = OctResNetV1c(depth=args.depth, alpha=a).eval()
        params = sum(p.numel() for p in m.parameters()) / 1e6
        g224 = (count_backbone_flops(m, (224, 224)) + 2048 * 1000) / 1e9
        gdet = count_backbone_flops(m, (800, 1333)) / 1e9
        gseg = count_backbone_flops(mc, (512, 2048)) / 1e9
        name = 'R50' if a == 0 else 'Oct-R50'
        ref = paper.get(a) if args.depth == 50 else None
        print(f'| {name} | {a} | {params:.2f} | {g224:.2f} | {ref or "-"} | {gdet:.1f} | '
              f'{gseg:.1f} |', flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--part', choices=['layer', 'backbone', 'flops', 'all'], default='all')
    p.add_argument('--alpha', type=float, nargs='+', default=[0.5])
    p.add_argument('--batch', type=int, default=8, help='layer part batch size')
    p.add_argument('--batch-backbone', type=int, default=2)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--depth', type=int, default=50)
    p.add_argument('--repeats', type=int, default=11)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--channels-last', action='store_true', help='backbone part: channels_last')
    p.add_argument('--cpu-time', action='store_true',
                   help='measure process CPU time instead of wall time (steadier on a shared '
                        'machine with --threads 1; not comparable across thread counts)')
    args = p.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {platform.processor() or platform.machine()}, '
          f'{args.threads} threads, {"CPU" if args.cpu_time else "wall"} time, '
          f'{time.strftime("%Y-%m-%d")}, load average {os.getloadavg()[0]:.1f}')
    if args.part in ('flops', 'all'):
        flops_table(args)
    if args.part in ('layer', 'all'):
        bench_layers(args)
    if args.part in ('backbone', 'all'):
        bench_backbones(args)


if __name__ == '__main__':
    main()
