"""Train-step and inference time and peak memory of a config against a baseline config.

Both models are built in the same process and measured interleaved (every repeat runs one step
of each), on the same random batch size and image size:

* ``train``: ``zero_grad``, ``model(**batch, mode='loss')``, ``parse_losses``, ``backward``,
  ``SGD.step`` (lr 1e-6, so the weights barely move between repeats);
* ``infer``: ``model(**batch, mode='predict')`` under ``torch.no_grad`` in eval mode;
* peak memory of one train step and one inference (:mod:`convzoo_mm.analysis.memory`);
* optionally :func:`profile_step`: host (CPU) time against device kernel time per step, which
  tells a step bound by the CPU that launches kernels from one bound by the kernels themselves.

Ratios are ``model median / baseline median`` (time) and ``model peak / baseline peak``.
:func:`compare_steps` is the generic part (any callables, injectable timer).
"""
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .benchmark import autocast as amp_context
from .benchmark import machine_info, measure_times, summary_stats
from .memory import peak_memory

__all__ = ['compare_steps', 'backbone_steps', 'model_steps', 'benchmark_configs', 'model_table',
           'profile_step']


def compare_steps(steps: Dict[str, Dict[str, Callable[[], Any]]], baseline: str,
                  repeats: int = 5, warmup: int = 1, device: str = 'cpu',
                  timer: Callable[[], float] = time.perf_counter, measure_memory: bool = True,
                  log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Time every ``steps[name][kind]()`` interleaved; one row per (name, kind) with
    ``median/p25/p75`` seconds, ``peak`` bytes and ``ratio``/``mem_ratio`` to ``baseline``."""
    if baseline not in steps:
        raise ValueError(f'baseline {baseline!r} is not among {list(steps)}')
    dev = torch.device(device)
    kinds = list(dict.fromkeys(k for s in steps.values() for k in s))
    times: Dict[tuple, List[float]] = {}
    for kind in kinds:
        for name, s in steps.items():
            for _ in range(warmup):
                s[kind]()
        for r in range(repeats):
            for name, s in steps.items():
                times.setdefault((name, kind), []).extend(measure_times(s[kind], 1, 0, timer, dev))
            log(f'  {kind}: repeat {r + 1}/{repeats}')
    rows = []
    for kind in kinds:
        peaks = {}
        for name, s in steps.items():
            peaks[name] = peak_memory(s[kind], device)[0] if measure_memory else None
        base = summary_stats(times[(baseline, kind)])
        for name in steps:
            st = summary_stats(times[(name, kind)])
            rows.append(dict(model=name, kind=kind, baseline=baseline, **st, peak=peaks[name],
                             ratio=st['median'] / base['median'],
                             mem_ratio=(peaks[name] / peaks[baseline])
                             if measure_memory and peaks[baseline] else None))
    return rows


# runtime calls in which the host waits for the device (a blocking copy such as ``loss.item()``,
# an explicit synchronize): their time is the device's, not the host's own work
_WAITS = ('Synchronize', 'cudaMemcpy', 'aten::_local_scalar_dense')


def profile_step(fn: Callable[[], Any], steps: int = 3, device: str = 'cpu',
                 row_limit: int = 30) -> Dict[str, Any]:
    """Run ``fn`` once untimed, then ``steps`` times under :mod:`torch.profiler`.

    Returns ``dict(cpu_ms, wait_ms, device_ms, ops, table)`` per step:

    * ``cpu_ms``: the host's own work, the summed self CPU time of the recorded events (operator
      dispatch, kernel launches) except those that wait for the device (``wait_ms``: blocking
      copies such as ``loss.item()``, synchronizes); Python time between operators is not
      recorded;
    * ``device_ms``: the summed time of device kernels and copies (None without CUDA), counted
      once (the profiler also attributes each kernel's time to the operator that launched it);
    * ``ops``: {event name: calls per step}; ``table``: the profiler's table of the
      ``row_limit`` most expensive events (by device time on CUDA, else CPU time).

    A step whose ``cpu_ms`` exceeds its ``device_ms`` is bound by the CPU that launches its
    kernels: faster kernels will not make it faster."""
    if steps < 1:
        raise ValueError(f'profile_step: steps must be >= 1, got {steps}')
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.device(device).type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    host = [e for e in events if e.device_type == DeviceType.CPU]
    waits = [e for e in host if cuda and any(w in e.key for w in _WAITS)]
    kernels = [e for e in events if e.device_type != DeviceType.CPU and not e.is_user_annotation]
    return dict(cpu_ms=(sum(e.self_cpu_time_total for e in host)
                        - sum(e.self_cpu_time_total for e in waits)) / steps / 1e3,
                wait_ms=sum(e.self_cpu_time_total for e in waits) / steps / 1e3,
                device_ms=sum(e.self_device_time_total for e in kernels) / steps / 1e3
                if cuda else None,
                ops={e.key: e.count / steps for e in events},
                table=events.table(sort_by='self_device_time_total' if cuda
                                   else 'self_cpu_time_total', row_limit=row_limit))


def backbone_steps(backbone: torch.nn.Module, images: torch.Tensor,
                   optim: Optional[torch.optim.Optimizer] = None,
                   autocast: Optional[torch.dtype] = None,
                   compile: Optional[Dict[str, Any]] = None) -> Dict[str, Callable[[], Any]]:
    """``{'train': fn, 'infer': fn}`` timing only ``backbone`` on ``images``: train = forward,
    backward of the sum of its outputs' means after a fixed random elementwise weighting,
    optimizer step (SGD by default), returns the loss; infer = forward
    under no_grad. ``autocast``: run the forwards under ``torch.autocast`` with that dtype.
    ``compile``: run the forwards through ``torch.compile(backbone, **compile)`` (e.g.
    ``dict(mode='reduce-overhead')``; the first calls compile, so warm up)."""
    if optim is None:
        optim = torch.optim.SGD(backbone.parameters(), lr=1e-6, momentum=0.9)
    forward = backbone if compile is None else torch.compile(backbone, **compile)
    projections: List[torch.Tensor] = []

    def train():
        backbone.train()
        optim.zero_grad(set_to_none=True)
        if compile is not None:     # CUDA graphs (reduce-overhead): a new iteration begins
            torch.compiler.cudagraph_mark_step_begin()
        with amp_context(images.device.type, autocast):
            outs = forward(images)
        outs = outs if isinstance(outs, (tuple, list)) else [outs]
        if not projections:  # fixed random ones: a stage ending in a channel LayerNorm has a
            # constant channel mean (0) and mean square (1), whose gradients are rounding noise
            g = torch.Generator().manual_seed(0)
            projections.extend(torch.randn(o.shape, generator=g).to(o.device) for o in outs)
        loss = sum((o.float() * r).mean() for o, r in zip(outs, projections))
        loss.backward()
        optim.step()
        return float(loss.detach())

    def infer():
        backbone.eval()
        if compile is not None:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad(), amp_context(images.device.type, autocast):
            return forward(images)

    return dict(train=train, infer=infer)


def model_steps(config: str, shape: Sequence[int], batch_size: int = 2, device: str = 'cpu',
                cfg_options: Optional[Dict[str, Any]] = None, part: str = 'model'
                ) -> Dict[str, Callable[[], Any]]:
    """``{'train': fn, 'infer': fn}`` for the model of ``config`` on a random batch.

    ``part='backbone'`` times only ``model.backbone`` (:func:`backbone_steps`)."""
    if part not in ('model', 'backbone'):
        raise ValueError(f"part must be 'model' or 'backbone', got {part!r}")
    from .mm_models import build_model, config_scope, dummy_batch, load_config
    cfg = load_config(config, cfg_options)
    scope = config_scope(cfg)
    model = build_model(cfg, device=device)
    num_classes = _num_classes(cfg.model)
    model.train()
    train_batch = dummy_batch(model, scope, shape, batch_size, with_gt=True,
                              num_classes=num_classes, training=True)
    model.eval()
    with torch.no_grad():
        test_batch = dummy_batch(model, scope, shape, batch_size, training=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=1e-6, momentum=0.9)

    if part == 'backbone':
        return backbone_steps(model.backbone, train_batch['inputs'], optim)

    def train():
        model.train()
        optim.zero_grad(set_to_none=True)
        losses = model(**train_batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        optim.step()
        return float(loss.detach())

    def infer():
        model.eval()
        with torch.no_grad():
            return model(**test_batch, mode='predict')

    return dict(train=train, infer=infer)


def _num_classes(model_cfg) -> int:
    found = []

    def walk(o):
        if hasattr(o, 'items'):
            for k, v in o.items():
                if k == 'num_classes' and isinstance(v, int):
                    found.append(v)
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
    walk(model_cfg)
    return min(found) if found else 1


def benchmark_configs(config: str, baseline: str, shape: Sequence[int], batch_size: int = 2,
                      repeats: int = 5, warmup: int = 1, device: str = 'cpu',
                      measure_memory: bool = True, log: Callable[[str], None] = print,
                      part: str = 'model') -> Dict[str, Any]:
    """Train-step/inference comparison of ``config`` against ``baseline`` (paths); ``part``:
    ``'model'`` (whole detector/segmentor) or ``'backbone'``."""
    import os

    from .mm_models import load_config
    for path in (config, baseline):  # both readable before either model is built
        load_config(path)
    names = [os.path.splitext(os.path.basename(p))[0] for p in (config, baseline)]
    if names[0] == names[1]:
        names = ['model', 'baseline']
    steps = {}
    for name, path in zip(names, (config, baseline)):
        log(f'building {name} ({path})')
        steps[name] = model_steps(path, shape, batch_size, device, part=part)
    rows = compare_steps(steps, names[1], repeats, warmup, device, measure_memory=measure_memory,
                         log=log)
    info = machine_info(device)
    return dict(rows=rows, info=info, markdown=model_table(rows, info, shape, batch_size, repeats))


def model_table(rows: Sequence[Dict[str, Any]], info: Optional[Dict[str, Any]] = None,
                shape: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                repeats: Optional[int] = None) -> str:
    lines = []
    if info:
        lines += [f'Measured {info["date"]} on {info["device"]} '
                  f'({info.get("gpu") or info["processor"]}, {info["threads"]} threads), torch '
                  f'{info["torch"]}' + (f', batch {batch_size} of {shape[0]}x{shape[1]}'
                                        if shape else '')
                  + (f', medians of {repeats} repeats' if repeats else '') + '.', '']
    lines += ['| Model | Step | time ms (median [p25–p75]) | time ratio to baseline | '
              'peak MiB | memory ratio |', '|---|---|---|---|---|---|']
    for r in rows:
        peak = '-' if r['peak'] is None else f'{r["peak"] / 2**20:.1f}'
        mem = '-' if r['mem_ratio'] is None else f'{r["mem_ratio"]:.2f}×'
        lines.append(f'| {r["model"]}{" (baseline)" if r["model"] == r["baseline"] else ""} | '
                     f'{r["kind"]} | {r["median"] * 1e3:.1f} [{r["p25"] * 1e3:.1f}–'
                     f'{r["p75"] * 1e3:.1f}] | {r["ratio"]:.2f}× | {peak} | {mem} |')
    return '\n'.join(lines) + '\n'


_CASCADE_3X = '4conv1fc-giou_amp-ms-crop-3x_coco.py'

# Config pairs (config, baseline) timed by tools/analysis/benchmark_configs.py. The baseline is
# the same detector/segmentor with the plain layer (or ConvNeXt for WTConvNeXt).
CONFIG_PAIRS = {
    'demo': [
        (f'configs/demo/{m}_r50-thin-{layer}{rest}', f'configs/demo/{m}_r50-thin{rest}')
        for m, rest in (('fcos', '_fpn_1xb8-12e_demo.py'),
                        ('upernet', '_1xb8-300i_demo-128x128.py'))
        for layer in ('wtconv-c3-c5', 'octconv-a0.5', 'drconv-m4-c3-c4')
    ] + [('configs/demo/fcos_wtconvnext-demo_fpn_1xb8-12e_demo.py',
          'configs/demo/fcos_r50-thin_fpn_1xb8-12e_demo.py'),
         ('configs/demo/upernet_wtconvnext-demo_1xb8-300i_demo-128x128.py',
          'configs/demo/upernet_r50-thin_1xb8-300i_demo-128x128.py')],
    'paper': [
        *[(f'configs/wtconvnext/cascade-mask-rcnn_wtconvnext-{a}_fpn_{_CASCADE_3X}',
           f'configs/wtconvnext/cascade-mask-rcnn_convnext-{a}_fpn_{_CASCADE_3X}')
          for a in ('t', 's')],
        ('configs/wtconvnext/mask-rcnn_wtconvnext-t_fpn_amp-1x_coco.py',
         'configs/wtconvnext/mask-rcnn_convnext-t_fpn_amp-1x_coco.py'),
        *[(f'configs/wtconvnext/wtconvnext-{a}_upernet_8xb2-amp-160k_ade20k-512x512.py',
           f'configs/wtconvnext/convnext-{a}_upernet_8xb2-amp-160k_ade20k-512x512.py')
          for a in ('tiny', 'small', 'base')],
        *[(f'configs/octconv/mask-rcnn_r50-octconv-a{a}_fpn_1x_coco.py',
           'configs/octconv/mask-rcnn_r50_fpn_1x_coco.py') for a in ('0.5', '0.25', '0.125')],
        ('configs/octconv/faster-rcnn_r50-octconv-a0.5_fpn_1x_coco.py',
         'configs/octconv/faster-rcnn_r50_fpn_1x_coco.py'),
        *[(f'configs/octconv/upernet_r50-octconv-a{a}_4xb4-160k_ade20k-512x512.py',
           'configs/octconv/upernet_r50_4xb4-160k_ade20k-512x512.py') for a in ('0.5', '0.25')],
        ('configs/drconv/faster-rcnn_r50-drconv-m4-c3-c4_fpn_1x_coco.py',
         'configs/drconv/faster-rcnn_r50_fpn_1x_coco_baseline-drconv.py'),
        *[(f'configs/drconv/mask-rcnn_r50-drconv-m4-{s}_fpn_1x_coco.py',
           'configs/drconv/mask-rcnn_r50_fpn_1x_coco_baseline-drconv.py') for s in ('c3-c4', 'c5')],
        ('configs/drconv/upernet_r50-drconv-m4-c3-c4_4xb4-160k_ade20k-512x512.py',
         'configs/drconv/upernet_r50_4xb4-160k_ade20k-512x512_baseline-drconv.py'),
    ],
}


def pairs_table(results: Sequence[Dict[str, Any]]) -> str:
    """One line per config pair from :func:`benchmark_configs` results (``config`` and
    ``baseline`` paths added): train and inference time and their ratios, train peak ratio."""
    import os
    lines = ['| config | baseline | train ms | train ratio | infer ms | infer ratio | '
             'train peak ratio |', '|---|---|---|---|---|---|---|']
    for res in results:
        mine = {r['kind']: r for r in res['rows'] if r['model'] != r['baseline']}
        base = {r['kind']: r for r in res['rows'] if r['model'] == r['baseline']}
        cells = []
        for kind in ('train', 'infer'):
            r = mine.get(kind)
            cells += ['-', '-'] if r is None else [
                f'{r["median"] * 1e3:.0f} (vs {base[kind]["median"] * 1e3:.0f})',
                f'{r["ratio"]:.2f}×']
        mem = mine.get('train', {}).get('mem_ratio')
        name = [os.path.splitext(os.path.basename(p))[0] for p in (res['config'], res['baseline'])]
        lines.append(f'| {name[0]} | {name[1]} | ' + ' | '.join(cells)
                     + f' | {"-" if mem is None else f"{mem:.2f}×"} |')
    return '\n'.join(lines) + '\n'
