"""Side-by-side speed and memory benchmark of a layer against its references.

A :class:`BenchCase` is one input shape with one module under test (``layer``) and named
references (e.g. the published layer, a 7x7 depthwise conv, a plain conv). Every module of a case
is measured in the same run, interleaved, on the same input:

* ``fwd``: forward under ``torch.no_grad()`` (inference);
* ``fwd+bwd``: forward with an input that requires grad, then ``backward`` of a fixed random
  output gradient (parameter grads are reset to ``None`` before each repeat);
* peak memory of one ``fwd`` and one ``fwd+bwd`` call (:mod:`convzoo_mm.analysis.memory`);
* for references marked ``exact`` (same weights as the layer): the max abs output difference.

Times are medians over ``repeats`` (after ``warmup`` untimed calls), with the 25th/75th percentile
as spread. Each module is tried in every requested memory format (NCHW, channels_last) and the
fastest is reported per metric. Ratios are ``reference median / layer median`` (> 1: the layer is
faster) and ``layer peak / reference peak`` for memory, computed from both sides measured here.
The timer is injectable (``timer=``) so the bookkeeping can be tested with a fake clock.
"""
import copy
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .memory import peak_memory

__all__ = ['BenchCase', 'measure_times', 'benchmark_case', 'run_benchmark', 'ratio_rows',
           'results_markdown', 'plot_ratios', 'machine_info', 'summary_stats', 'FORMATS']

FORMATS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}


@dataclass
class BenchCase:
    """One benchmark point.

    Args:
        layer_name (str): name of the layer under test (e.g. ``'WTConv'``).
        label (str): short description of the shape/options (e.g. ``'C96@56x56 L5'``).
        input_shape (tuple): ``(N, C, H, W)`` of the input.
        make_layer (callable): ``() -> nn.Module``, the layer under test.
        references (dict): name -> ``(layer) -> nn.Module | callable``; a builder receives the
            built layer so that an exact reference can copy its weights.
        exact (sequence): names of references whose output must equal the layer's.
        make_input (callable, optional): ``(shape, generator) -> input`` for layers whose
            input is not one tensor (default: ``torch.randn(shape, generator=generator)``).
    """
    layer_name: str
    label: str
    input_shape: Tuple[int, ...]
    make_layer: Callable[[], nn.Module]
    references: Dict[str, Callable[[nn.Module], Any]]
    exact: Sequence[str] = ()
    make_input: Optional[Callable[..., Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)


AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}   # the CLIs' --autocast


def autocast(device_type: str, dtype: Optional[torch.dtype]):
    """``torch.autocast(device_type, dtype)``, or a context that does nothing for ``None``."""
    return torch.autocast(device_type, dtype or torch.bfloat16, enabled=dtype is not None)


def apply_cli_device(parser, args) -> None:
    """The benchmark CLIs' ``--threads`` (torch CPU threads) and ``--device`` (a CUDA device on a
    machine without CUDA is a usage error)."""
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available')


def summary_stats(values: Sequence[float]) -> Dict[str, float]:
    """Median and 25th/75th percentiles (inclusive method) of ``values``."""
    values = sorted(values)
    if len(values) == 1:
        return dict(median=values[0], p25=values[0], p75=values[0])
    q = statistics.quantiles(values, n=4, method='inclusive')
    return dict(median=statistics.median(values), p25=q[0], p75=q[2])


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _tensors(x: Any) -> List[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


def _map_tensors(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(_map_tensors(item, fn) for item in x)
    return x


def measure_times(fn: Callable[[], Any], repeats: int, warmup: int = 1,
                  timer: Callable[[], float] = time.perf_counter,
                  device: torch.device = torch.device('cpu'),
                  before: Optional[Callable[[], None]] = None) -> List[float]:
    """Seconds per call of ``fn`` for ``repeats`` timed calls after ``warmup`` untimed ones.

    ``before`` (untimed) runs before every call, e.g. to reset gradients.
    """
    times = []
    for i in range(warmup + repeats):
        if before is not None:
            before()
        _sync(device)
        t0 = timer()
        fn()
        _sync(device)
        t1 = timer()
        if i >= warmup:
            times.append(t1 - t0)
    return times


class _Runner:
    """Forward / forward+backward closures for one module in one memory format."""

    def __init__(self, module: Any, x: Any, memory_format: str, device: torch.device,
                 seed: int = 0, autocast: Optional[torch.dtype] = None) -> None:
        fmt = FORMATS[memory_format]
        self.amp_dtype, self.device_type = autocast, device.type
        if isinstance(module, nn.Module):  # own copy: .to() changes a module in place
            module = copy.deepcopy(module)
            module = module.to(device=device, memory_format=fmt) if fmt is torch.channels_last \
                else module.to(device)
        self.module = module
        self.params = list(module.parameters()) if isinstance(module, nn.Module) else []
        self.x = _map_tensors(x, lambda t: t.to(device).contiguous(memory_format=fmt)
                              if t.dim() == 4 else t.to(device))
        self.x_grad = _map_tensors(
            self.x, lambda t: t.detach().requires_grad_(t.is_floating_point()))
        with torch.no_grad(), self.amp():
            out = self.module(self.x)
        gen = torch.Generator().manual_seed(seed)
        self.grads = _map_tensors(out, lambda t: torch.randn(t.shape, generator=gen).to(
            device=device, dtype=t.dtype).contiguous(
                memory_format=fmt if t.dim() == 4 else torch.contiguous_format))

    def amp(self):
        return autocast(self.device_type, self.amp_dtype)

    def reset(self) -> None:
        for p in self.params:
            p.grad = None
        for t in _tensors(self.x_grad):
            t.grad = None

    def fwd(self) -> Any:
        with torch.no_grad(), self.amp():
            return self.module(self.x)

    def fwd_bwd(self) -> None:
        with self.amp():
            out = self.module(self.x_grad)
        outs, grads = _tensors(out), _tensors(self.grads)
        pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


def benchmark_case(case: BenchCase, repeats: int = 10, warmup: int = 2,
                   formats: Sequence[str] = ('nchw', ), device: str = 'cpu',
                   timer: Callable[[], float] = time.perf_counter, measure_memory: bool = True,
                   atol: float = 1e-5, seed: int = 0, log: Callable[[str], None] = print,
                   autocast: Optional[torch.dtype] = None) -> List[Dict[str, Any]]:
    """Measure the layer and every reference of ``case``; return one row per module.

    Row keys: ``case, layer, module, role ('layer'|'reference'), fwd, fwd_bwd`` (each
    ``dict(median, p25, p75, format)`` in seconds), ``peak_fwd, peak_fwd_bwd`` (bytes or None),
    ``max_abs_diff`` (exact references only) and ``outputs_match`` (``max_abs_diff <= atol``,
    atol relative to the largest output magnitude when above 1).

    ``autocast``: run every module under ``torch.autocast(device, dtype)`` (mixed precision as in
    mm's AmpOptimWrapper); compare with an atol suited to that dtype.
    """
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f'formats must be among {sorted(FORMATS)}, got {fmt!r}')
    dev = torch.device(device)
    torch.manual_seed(seed)
    layer = case.make_layer()
    layer.eval()  # (mm backbones' train() returns None: never chain .eval())
    modules: Dict[str, Any] = {case.layer_name: layer}
    for name, build in case.references.items():
        ref = build(layer)
        if isinstance(ref, nn.Module):
            ref.eval()
        modules[name] = ref
    gen = torch.Generator().manual_seed(seed)
    if case.make_input is not None:
        x = case.make_input(case.input_shape, gen)
    else:
        x = torch.randn(case.input_shape, generator=gen)

    runners = {(name, fmt): _Runner(m, x, fmt, dev, seed, autocast)
               for name, m in modules.items() for fmt in formats}
    times: Dict[Tuple[str, str, str], List[float]] = {}
    # interleave: every repeat visits every module, so slow drifts of the machine hit all alike
    for kind in ('fwd', 'fwd_bwd'):
        for r in runners.values():  # warmup
            for _ in range(warmup):
                r.reset()
                r.fwd() if kind == 'fwd' else r.fwd_bwd()
        for _ in range(repeats):
            for (name, fmt), r in runners.items():
                fn = r.fwd if kind == 'fwd' else r.fwd_bwd
                times.setdefault((name, fmt, kind), []).extend(
                    measure_times(fn, 1, 0, timer, dev, before=r.reset))
    rows = []
    layer_out = runners[(case.layer_name, formats[0])].fwd()
    for name in modules:
        row: Dict[str, Any] = dict(case=case.label, layer=case.layer_name, module=name,
                                   role='layer' if name == case.layer_name else 'reference',
                                   shape=list(case.input_shape))
        for kind in ('fwd', 'fwd_bwd'):
            best = min(formats, key=lambda f: summary_stats(times[(name, f, kind)])['median'])
            row[kind] = dict(summary_stats(times[(name, best, kind)]), format=best)
            if measure_memory:
                r = runners[(name, best)]
                r.reset()
                peak, _ = peak_memory(r.fwd if kind == 'fwd' else r.fwd_bwd, device)
                r.reset()
                row['peak_' + kind] = int(peak)
            else:
                row['peak_' + kind] = None
        if name in case.exact:
            out = runners[(name, formats[0])].fwd()
            pairs = list(zip(_tensors(out), _tensors(layer_out)))
            diffs = [float((a.float() - b.float()).abs().max()) if a.shape == b.shape
                     else float('inf') for a, b in pairs]
            scale = max([1.0] + [float(b.float().abs().max()) for _, b in pairs])
            row['max_abs_diff'] = max(diffs) if diffs else float('inf')
            row['outputs_match'] = row['max_abs_diff'] <= atol * scale
        rows.append(row)
        log(f'  {case.layer_name} {case.label:>22s} {name:>28s}: fwd '
            f'{row["fwd"]["median"] * 1e3:8.2f} ms, '
            f'fwd+bwd {row["fwd_bwd"]["median"] * 1e3:8.2f} ms'
            + (f', peak {row["peak_fwd_bwd"] / 2**20:7.1f} MiB' if measure_memory else ''))
    return rows


def ratio_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per case and reference: speedups (reference / layer, medians) and memory ratios.

    ``*_spread`` is the (low, high) speedup from the quartiles of both sides:
    ``(ref p25 / layer p75, ref p75 / layer p25)``.
    """
    out = []
    by_case: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault((row['layer'], row['case']), []).append(row)
    for (layer_name, label), group in by_case.items():
        layer = [r for r in group if r['role'] == 'layer']
        if len(layer) != 1:
            raise ValueError(f'case {label!r} must have exactly one layer row, got {len(layer)}')
        lay = layer[0]
        for ref in (r for r in group if r['role'] == 'reference'):
            item = dict(layer=layer_name, case=label, reference=ref['module'])
            for kind in ('fwd', 'fwd_bwd'):
                item[f'speedup_{kind}'] = ref[kind]['median'] / lay[kind]['median']
                item[f'speedup_{kind}_spread'] = (ref[kind]['p25'] / lay[kind]['p75'],
                                                  ref[kind]['p75'] / lay[kind]['p25'])
                lp, rp = lay.get('peak_' + kind), ref.get('peak_' + kind)
                item[f'mem_ratio_{kind}'] = (lp / rp) if lp is not None and rp else None
            item['max_abs_diff'] = ref.get('max_abs_diff')
            item['outputs_match'] = ref.get('outputs_match')
            out.append(item)
    return out


def machine_info(device: str = 'cpu') -> Dict[str, Any]:
    info = dict(date=datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
                python=platform.python_version(), torch=torch.__version__,
                machine=platform.machine(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), threads=torch.get_num_threads(), device=device)
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['processor'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.device(device).type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def _ms(stat: Dict[str, float]) -> str:
    return f'{stat["median"] * 1e3:.2f} [{stat["p25"] * 1e3:.2f}–{stat["p75"] * 1e3:.2f}]'


def _mib(nbytes: Optional[int]) -> str:
    return '-' if nbytes is None else f'{nbytes / 2**20:.3g}'


def _x(v: Optional[float]) -> str:
    return '-' if v is None else f'{v:.2f}×'


def results_markdown(rows: Sequence[Dict[str, Any]], info: Optional[Dict[str, Any]] = None,
                     repeats: Optional[int] = None) -> str:
    """Markdown report: a ratio table (the headline) and the raw measurements."""
    lines = []
    if info:
        where = info.get('gpu') or info.get('processor')
        lines.append(f'Measured {info["date"]} on {info["device"]} ({where}, '
                     f'{info["threads"]} threads), torch {info["torch"]}'
                     + (f', autocast {info["autocast"]}' if info.get('autocast') else '')
                     + (f', medians of {repeats} repeats' if repeats else '') + '.')
        lines.append('')
    lines += ['Speedup = reference median time / layer median time (> 1: the layer is faster), '
              'in brackets from the quartiles; memory = layer peak / reference peak (fwd+bwd).', '',
              '| Layer | Shape | Reference | fwd speedup | fwd+bwd speedup | peak mem ratio | '
              'max abs diff |',
              '|---|---|---|---|---|---|---|']
    for r in ratio_rows(rows):
        lo, hi = r['speedup_fwd_spread']
        lo2, hi2 = r['speedup_fwd_bwd_spread']
        diff = '-' if r['max_abs_diff'] is None else f'{r["max_abs_diff"]:.1e}'
        lines.append(f'| {r["layer"]} | {r["case"]} | {r["reference"]} | '
                     f'{r["speedup_fwd"]:.2f}× [{lo:.2f}–{hi:.2f}] | '
                     f'{r["speedup_fwd_bwd"]:.2f}× [{lo2:.2f}–{hi2:.2f}] | '
                     f'{_x(r["mem_ratio_fwd_bwd"])} | {diff} |')
    lines += ['', 'Raw measurements: time in ms, median [25th–75th percentile], fastest memory '
              'format; peak memory in MiB allocated during the call.', '',
              '| Layer | Shape | Module | fwd ms | fwd+bwd ms | format (fwd / fwd+bwd) | '
              'peak fwd MiB | peak fwd+bwd MiB |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["layer"]} | {r["case"]} | {r["module"]} | {_ms(r["fwd"])} | '
                     f'{_ms(r["fwd_bwd"])} | {r["fwd"]["format"]} / {r["fwd_bwd"]["format"]} | '
                     f'{_mib(r["peak_fwd"])} | {_mib(r["peak_fwd_bwd"])} |')
    return '\n'.join(lines) + '\n'


def plot_ratios(rows: Sequence[Dict[str, Any]], path: str, title: str = '') -> str:
    """Bar chart of the speedups (fwd and fwd+bwd) per case and reference, with quartile whiskers;
    saved as PNG at ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    import numpy as np

    ratios = ratio_rows(rows)
    cases = list(dict.fromkeys(f'{r["layer"]}\n{r["case"]}' for r in ratios))
    refs = list(dict.fromkeys(r['reference'] for r in ratios))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(cases) + 4), 4.8), sharey=True)
    width = 0.8 / max(len(refs), 1)
    for ax, kind, name in zip(axes, ('fwd', 'fwd_bwd'), ('forward', 'forward + backward')):
        for j, ref in enumerate(refs):
            xs, ys, lo, hi = [], [], [], []
            for i, c in enumerate(cases):
                match = [r for r in ratios if f'{r["layer"]}\n{r["case"]}' == c
                         and r['reference'] == ref]
                if match:
                    r = match[0]
                    xs.append(i + (j - (len(refs) - 1) / 2) * width)
                    ys.append(r[f'speedup_{kind}'])
                    s = r[f'speedup_{kind}_spread']
                    lo.append(max(ys[-1] - s[0], 0))
                    hi.append(max(s[1] - ys[-1], 0))
            ax.bar(xs, ys, width, yerr=np.array([lo, hi]), capsize=2, label=f'vs {ref}')
        ax.axhline(1.0, color='k', lw=0.8, ls='--')
        ax.set_xticks(range(len(cases)))
        # one word per line below the layer name: long shapes do not run into their neighbours
        ax.set_xticklabels([c.replace(' ', '\n') for c in cases], fontsize=7)
        ax.set_title(name)
        ax.set_yscale('log')
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 3, 5)))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
        ax.tick_params(axis='y', which='minor', labelsize=6)
        ax.set_ylabel('speedup of the layer (reference time / layer time)')
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_benchmark(cases: Sequence[BenchCase], out_dir: Optional[str] = None, repeats: int = 10,
                  warmup: int = 2, formats: Sequence[str] = ('nchw', ), device: str = 'cpu',
                  timer: Callable[[], float] = time.perf_counter, measure_memory: bool = True,
                  name: str = 'benchmark_layers', log: Callable[[str], None] = print,
                  autocast: Optional[torch.dtype] = None, atol: float = 1e-5) -> Dict[str, Any]:
    """Benchmark every case; write ``<name>.md``, ``<name>.json`` and ``<name>.png`` to
    ``out_dir`` (if given). Returns ``dict(rows, ratios, info, markdown, files)``."""
    if not cases:
        raise ValueError('no benchmark cases to run')
    info = machine_info(device)
    if autocast is not None:
        info['autocast'] = str(autocast).replace('torch.', '')
    rows: List[Dict[str, Any]] = []
    result: Dict[str, Any] = dict(info=info, files=[])

    def write():  # after every case, so that an interrupted run keeps what it measured
        md = results_markdown(rows, info, repeats)
        result.update(rows=rows, ratios=ratio_rows(rows), markdown=md)
        if not out_dir:
            return
        os.makedirs(out_dir, exist_ok=True)
        md_path = os.path.join(out_dir, f'{name}.md')
        with open(md_path, 'w') as f:
            f.write(md)
        json_path = os.path.join(out_dir, f'{name}.json')
        with open(json_path, 'w') as f:
            json.dump(dict(info=info, rows=rows, ratios=result['ratios']), f, indent=1)
        png = plot_ratios(rows, os.path.join(out_dir, f'{name}.png'),
                          title=f'{info["device"]} ({info.get("gpu") or info["processor"]}, '
                          f'{info["threads"]} threads), {info["date"]}')
        result['files'] = [md_path, json_path, png]

    for i, case in enumerate(cases):
        log(f'[{i + 1}/{len(cases)}] {case.layer_name} {case.label} '
            f'input {tuple(case.input_shape)}')
        rows += benchmark_case(case, repeats, warmup, formats, device, timer, measure_memory,
                               atol, log=log, autocast=autocast)
        write()
    return result
