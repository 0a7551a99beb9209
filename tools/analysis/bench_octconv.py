#!/usr/bin/env python
"""OctaveConv speed on CPU: the drop-in layer vs the plain conv it replaces, and Oct-R50 vs R50.

Everything is measured side by side in one run: each repeat times every variant once in turn
(interleaved, so machine-load drift hits all alike), and the reported numbers are medians over
the repeats. Ratios < 1 mean OctaveConv is faster.

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

STAGES = [('C64@56²', 64, 56), ('C128@28²', 128, 28), ('C256@14²', 256, 14), ('C512@7²', 512, 7)]


def _step(model, x, backward):
    if backward:
        out = model(x)
        loss = sum(o.float().sum() for o in out) if isinstance(out, (tuple, list)) else out.sum()
        loss.backward()
    else:
        with torch.no_grad():
            model(x)


def time_interleaved(variants, repeats, warmup=2):
    """variants: {name: zero-arg callable}. Median seconds per call, interleaved repeats."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
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
        m.train().to(memory_format=fmt)
    print(f'\n## OctResNet-{args.depth} vs {ref_name}: batch {args.batch_backbone}, '
          f'{args.size}x{args.size}, train mode, {"channels_last" if args.channels_last else "NCHW"}, '
          f'medians of {args.repeats}')
    print('| model | fwd ms | fwd+bwd ms | fwd ratio | fwd+bwd ratio |')
    print('|---|---|---|---|---|')
    fwd = time_interleaved({k: (lambda m=m: _step(m, x, False)) for k, m in models.items()},
                           args.repeats)
    both = time_interleaved({k: (lambda m=m: _step(m, x, True)) for k, m in models.items()},
                            args.repeats)
    for k in models:
        print(f'| {k} | {fwd[k] * 1e3:.1f} | {both[k] * 1e3:.1f} | {fwd[k] / fwd["R50"]:.3f} | '
              f'{both[k] / both["R50"]:.3f} |', flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--part', choices=['layer', 'backbone', 'all'], default='all')
    p.add_argument('--alpha', type=float, nargs='+', default=[0.5])
    p.add_argument('--batch', type=int, default=8, help='layer part batch size')
    p.add_argument('--batch-backbone', type=int, default=2)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--depth', type=int, default=50)
    p.add_argument('--repeats', type=int, default=11)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--channels-last', action='store_true', help='backbone part: channels_last')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {platform.processor() or platform.machine()}, '
          f'{args.threads} threads, {time.strftime("%Y-%m-%d")}')
    if args.part in ('layer', 'all'):
        bench_layers(args)
    if args.part in ('backbone', 'all'):
        bench_backbones(args)


if __name__ == '__main__':
    main()
