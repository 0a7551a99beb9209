"""Host cost of WTConv's fused path: PyTorch dispatcher calls, Triton launches and host time.

On a GPU at small sizes the fused layer is bound by the CPU that launches its kernels (README,
"Layer benchmark (GPU)"): every PyTorch op and every kernel launch costs host time. This module
measures the part that is the layer's own, on any machine: the fused path runs on real tensors
with its Triton kernels replaced by launchers that only record the launch
(:func:`counted_launches` with ``run=False``; the outputs are then garbage, the host work is
real), while :class:`DispatchCounter` counts the ATen ops that reach PyTorch's dispatcher. On a
GPU, ``run=True`` keeps the real launches, and the host time includes Triton's launch cost.

* :func:`layer_host_cost`: one depthwise WTConv layer, forward (no grad) and fwd+bwd: calls,
  launches and host time (fastest and median of interleaved rounds);
* :func:`backbone_calls`: dispatcher calls and launches of one fwd+bwd of WTConvNeXt (fused
  path) against ConvNeXt of the same arch.

CLI: ``tools/analysis/host_probe.py``.
"""
import contextlib
import time
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .benchmark import _sync

__all__ = ['KERNELS', 'FREE_OPS', 'counted_launches', 'DispatchCounter', 'layer_host_cost',
           'backbone_calls', 'host_cost_markdown']

# the Triton kernels of convzoo_mm.ops.haar_wtconv, by the short name a launch is recorded as
KERNELS = {'_analysis_conv_kernel': 'analysis_conv', '_synthesis_kernel': 'synthesis',
           '_weight_grad_kernel': 'weight_grad'}
# ops that run no kernel: views and allocations
FREE_OPS = frozenset({'view', 'slice', 'select', 'permute', 't', 'unsqueeze', 'split_with_sizes',
                      'unbind', 'empty', 'new_empty', 'empty_like', 'empty_strided', 'detach',
                      'alias', 'as_strided', 'expand', 'squeeze', '_unsafe_view'})


class _Launcher:
    """Stands for a Triton kernel: ``kernel[grid](...)`` records the launch, then runs the kernel
    (``run``) or nothing."""

    def __init__(self, kernel, name: str, log: List[str], run: bool):
        self.kernel, self.name, self.log, self.run = kernel, name, log, run

    def __getitem__(self, grid):
        self.log.append(self.name)
        if self.run:
            return self.kernel[grid]
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def counted_launches(run: bool = True) -> Iterator[List[str]]:
    """Record every launch of the fused WTConv path's Triton kernels, in order, into the list
    yielded (short names, see ``KERNELS``); with ``run=False`` the launches do nothing. The
    kernels are restored on exit. Needs Triton (``convzoo_mm.ops.haar_wtconv.AVAILABLE``)."""
    from ..ops import haar_wtconv
    if not haar_wtconv.AVAILABLE:
        raise RuntimeError('counted_launches needs Triton (pip install triton)')
    log: List[str] = []
    saved = {name: getattr(haar_wtconv, name) for name in KERNELS}
    try:
        for name, short in KERNELS.items():
            setattr(haar_wtconv, name, _Launcher(saved[name], short, log, run))
        yield log
    finally:
        for name, kernel in saved.items():
            setattr(haar_wtconv, name, kernel)


class DispatchCounter(TorchDispatchMode):
    """Counts the ATen ops that reach the dispatcher while active: ``total`` (every call) and
    ``kernel_ops`` (by op name, all but ``FREE_OPS``: the ones that run a kernel)."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.kernel_ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        name = func.overloadpacket.__name__
        if name not in FREE_OPS:
            self.kernel_ops[name] += 1
        return func(*args, **(kwargs or {}))


def _check_launch(device, launch: bool) -> torch.device:
    device = torch.device(device)
    if launch and device.type != 'cuda':
        raise ValueError(f"launch=True runs the Triton kernels and needs device='cuda', "
                         f'got {str(device)!r}')
    return device


def _stats_us(times: Sequence[float]) -> Dict[str, float]:
    ordered = sorted(times)
    return dict(min=ordered[0] * 1e6, median=ordered[len(ordered) // 2] * 1e6)


def layer_host_cost(channels: int = 16, size: Sequence[int] = (16, 16), levels: int = 5,
                    kernel_size: int = 5, batch: int = 1, device: str = 'cpu',
                    launch: bool = False, rounds: int = 40, repeats: int = 20,
                    seed: int = 0) -> Dict[str, Any]:
    """Host cost of one depthwise WTConv (``impl='triton'``, base bias, channels_last input as
    the WTConvNeXt blocks give it) per forward (no grad) and per fwd+bwd (input and every
    parameter gradient).

    Args:
        channels, size, levels, kernel_size, batch: the layer and its input ``(batch, channels,
            *size)``.
        device (str): where the tensors live; ``'cpu'`` needs ``launch=False``.
        launch (bool): run the real kernels (a GPU; the time then includes Triton's launches
            and the device is synchronized once per round only). Default: launches stubbed.
        rounds, repeats: time ``repeats`` calls per round, the passes interleaved round by
            round; report the fastest and median round (per call).

    Returns:
        dict: ``calls`` / ``kernel_ops`` / ``launches`` per pass (``'forward'``, ``'fwd+bwd'``)
        and ``host_us`` per pass (``{'min', 'median'}``), plus the settings.
    """
    from ..layers import WTConv
    device = _check_launch(device, launch)
    torch.manual_seed(seed)
    layer = WTConv(channels, channels, kernel_size, groups=channels, wt_levels=levels,
                   impl='triton').to(device)
    x = torch.randn(batch, channels, *size, device=device).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    params = list(layer.parameters())

    def forward():
        with torch.no_grad():
            layer(x)

    def train():
        out = layer(x)
        torch.autograd.grad(out, [x, *params], out)

    passes = {'forward': forward, 'fwd+bwd': train}
    res: Dict[str, Any] = dict(channels=channels, size=list(size), levels=levels,
                               kernel_size=kernel_size, batch=batch, device=str(device),
                               launch=launch, rounds=rounds, repeats=repeats,
                               calls={}, kernel_ops={}, launches={}, host_us={})
    with counted_launches(run=launch) as log:
        for name, fn in passes.items():
            for _ in range(3):  # warm-up: caches of layouts, Triton's compiled kernels
                fn()
            _sync(device)
            del log[:]
            with DispatchCounter() as counter:
                fn()
            res['calls'][name] = counter.total
            res['kernel_ops'][name] = dict(sorted(counter.kernel_ops.items()))
            res['launches'][name] = dict(Counter(log))
        times: Dict[str, List[float]] = {name: [] for name in passes}
        for _ in range(rounds):
            for name, fn in passes.items():
                _sync(device)
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                times[name].append((time.perf_counter() - start) / repeats)
        _sync(device)
    res['host_us'] = {name: _stats_us(t) for name, t in times.items()}
    return res


def backbone_calls(arch: str = 'tiny', shape: Sequence[int] = (1, 3, 64, 64),
                   device: str = 'cpu', launch: bool = False) -> Dict[str, Dict[str, Any]]:
    """Dispatcher calls and Triton launches of one fwd+bwd (``backward()`` of the sum of the
    output means into fresh ``.grad``; no optimizer step) of WTConvNeXt (``conv_type='wtconv'``, its
    WTConv layers on the fused path) and of ConvNeXt (``'plain'``) of the same ``arch``, after
    two warm-up steps. Calls don't depend on the input size; launches are stubbed unless
    ``launch`` (then ``device`` must be CUDA)."""
    from ..backbones import WTConvNeXt
    from ..layers import WTConv
    device = _check_launch(device, launch)
    x = torch.randn(*shape, device=device)
    out: Dict[str, Dict[str, Any]] = {}
    for name, conv_type in (('WTConvNeXt', 'wtconv'), ('ConvNeXt', 'plain')):
        torch.manual_seed(0)
        model = WTConvNeXt(arch, conv_type=conv_type, in_channels=shape[1]).to(device)
        for m in model.modules():
            if isinstance(m, WTConv):
                m.impl = 'triton'
        params = list(model.parameters())

        def step():
            sum(y.mean() for y in model(x)).backward()
            for p in params:
                p.grad = None
        with counted_launches(run=launch) as log:
            for _ in range(2):
                step()
            del log[:]
            with DispatchCounter() as counter:
                step()
        out[f'{name}-{arch}'] = dict(calls=counter.total, kernel_ops=sum(
            counter.kernel_ops.values()), launches=len(log))
    return out


def host_cost_markdown(layer: Optional[Dict[str, Any]] = None,
                       models: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """Markdown tables of :func:`layer_host_cost` and :func:`backbone_calls` results."""
    lines = []
    if layer is not None:
        launches = 'real' if layer['launch'] else 'stubbed'
        lines += [f"WTConv fused path, C{layer['channels']}@{'x'.join(map(str, layer['size']))} "
                  f"batch {layer['batch']}, L{layer['levels']}, k{layer['kernel_size']}, "
                  f"{layer['device']}, Triton launches {launches}; host time per call, "
                  f"fastest [median] of {layer['rounds']} interleaved rounds of "
                  f"{layer['repeats']}:", '',
                  '| pass | dispatcher calls | of which run a kernel | Triton launches '
                  '| host time (µs) |', '|---|---|---|---|---|']
        for name in ('forward', 'fwd+bwd'):
            t = layer['host_us'][name]
            ops = ', '.join(f'{k} {v}' for k, v in layer['kernel_ops'][name].items()) or '–'
            lines.append(f"| {name} | {layer['calls'][name]} | "
                         f"{sum(layer['kernel_ops'][name].values())} ({ops}) | "
                         f"{sum(layer['launches'][name].values())} | "
                         f"{t['min']:.0f} [{t['median']:.0f}] |")
    if models is not None:
        if lines:
            lines.append('')
        lines += ['One fwd+bwd of each backbone (dispatcher calls do not depend on the input '
                  'size):', '', '| backbone | dispatcher calls | of which run a kernel '
                  '| Triton launches |', '|---|---|---|---|']
        for name, r in models.items():
            lines.append(f"| {name} | {r['calls']} | {r['kernel_ops']} | {r['launches']} |")
    return '\n'.join(lines) + '\n'
