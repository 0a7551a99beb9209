"""Layer benchmark harness: bookkeeping checked with a fake clock (no timing assertions), peak
memory checked against hand-counted allocations, output comparison, table and chart structure."""
import os

import pytest
import torch
import torch.nn as nn

from convzoo_mm.analysis.benchmark import (BenchCase, benchmark_case, ratio_rows,
                                           results_markdown, run_benchmark, summary_stats)
from convzoo_mm.analysis.memory import peak_memory
from convzoo_mm.ops import cpu_kernels


class FakeClock:
    """A clock that only moves when a fake module says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def __deepcopy__(self, memo):  # the harness copies modules; they must share one clock
        return self


class CallLog(list):
    """Names of the fake modules in the order they ran, shared by the harness's copies."""

    def __deepcopy__(self, memo):
        return self


class _Tick(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, cost):
        ctx.cost = cost
        return x * 1.0

    @staticmethod
    def backward(ctx, g):
        cost = ctx.cost
        cost.clock.now += cost.dt_bwd + (cost.first_bwd if cost.backwards == 0 else 0.0)
        cost.backwards += 1
        return g, None


class FakeCost(nn.Module):
    """Forward costs ``dt_fwd`` fake seconds (``dt_fwd_cl`` on a channels_last input), backward
    ``dt_bwd`` (the first backward of each copy ``first_bwd`` more, like a first-call autotune);
    each forward appends ``name`` to ``log``."""

    def __init__(self, clock, dt_fwd, dt_bwd, dt_fwd_cl=None, first_bwd=0.0, name='', log=None):
        super().__init__()
        self.clock, self.dt_fwd, self.dt_bwd = clock, dt_fwd, dt_bwd
        self.dt_fwd_cl, self.first_bwd, self.backwards = dt_fwd_cl, first_bwd, 0
        self.name, self.log = name, CallLog() if log is None else log
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        channels_last = not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        fast = channels_last and self.dt_fwd_cl is not None
        self.clock.now += self.dt_fwd_cl if fast else self.dt_fwd
        self.log.append(self.name)
        return _Tick.apply(x * self.weight, self)


def _fake_case(clock):
    return BenchCase('Fake', 'tiny', (2, 3, 4, 4), lambda: FakeCost(clock, 2.0, 6.0),
                     {'slow': lambda layer: FakeCost(clock, 5.0, 19.0),
                      'fast': lambda layer: FakeCost(clock, 1.0, 1.0)})


def test_ratios_come_from_both_measured_sides():
    clock = FakeClock()
    rows = benchmark_case(_fake_case(clock), repeats=3, warmup=1, timer=clock,
                          formats=('nchw', 'channels_last'), measure_memory=False,
                          log=lambda s: None)
    by_name = {r['module']: r for r in rows}
    assert by_name['Fake']['role'] == 'layer'
    assert by_name['Fake']['fwd']['median'] == 2.0
    assert by_name['Fake']['fwd_bwd']['median'] == 8.0
    assert by_name['slow']['fwd_bwd']['median'] == 24.0
    ratios = {r['reference']: r for r in ratio_rows(rows)}
    assert ratios['slow']['speedup_fwd'] == pytest.approx(5.0 / 2.0)
    assert ratios['slow']['speedup_fwd_bwd'] == pytest.approx(24.0 / 8.0)
    assert ratios['fast']['speedup_fwd'] == pytest.approx(1.0 / 2.0)
    assert ratios['fast']['speedup_fwd_bwd'] == pytest.approx(2.0 / 8.0)
    assert ratios['fast']['speedup_fwd_bwd_spread'] == pytest.approx((0.25, 0.25))


def test_fastest_format_warmup_and_interleaved_repeats():
    """Each module is reported in its fastest memory format; warmup calls (here the one with a
    100 s first backward) are not timed; every repeat visits every (module, format) in turn."""
    clock, log = FakeClock(), CallLog()
    case = BenchCase('L', 'c', (1, 2, 4, 4),
                     lambda: FakeCost(clock, 3.0, 1.0, dt_fwd_cl=1.0, first_bwd=100.0, name='L',
                                      log=log),
                     {'R': lambda layer: FakeCost(clock, 2.0, 1.0, name='R', log=log)})
    rows = {r['module']: r for r in benchmark_case(
        case, repeats=2, warmup=1, timer=clock, formats=('nchw', 'channels_last'),
        measure_memory=False, log=lambda s: None)}
    assert rows['L']['fwd']['median'] == 1.0 and rows['L']['fwd']['format'] == 'channels_last'
    assert rows['L']['fwd_bwd']['median'] == 2.0
    assert rows['R']['fwd']['median'] == 2.0
    # 4 set-up forwards and 4 warmup forwards, then the timed forwards, one per runner a repeat
    assert log[8:16] == ['L', 'L', 'R', 'R'] * 2


@pytest.mark.parametrize('shift,match', [(2e-3, True), (2e-1, False)])
def test_exactness_tolerance_is_relative_to_the_output_size(shift, match):
    """atol 1e-5 times the largest output: a 2e-3 shift of outputs near 1000 is float rounding
    (2e-6 relative), a 0.2 shift is not."""
    def make():
        conv = nn.Conv2d(4, 4, 1)
        with torch.no_grad():
            conv.bias.fill_(1000.)
        return conv

    def shifted(layer):
        ref = make()
        ref.load_state_dict(layer.state_dict())
        with torch.no_grad():
            ref.bias += shift
        return ref
    case = BenchCase('C', 'c', (1, 4, 4, 4), make, {'ref': shifted}, exact=('ref', ))
    rows = {r['module']: r for r in benchmark_case(case, repeats=1, warmup=0,
                                                    measure_memory=False, log=lambda s: None)}
    assert rows['ref']['max_abs_diff'] == pytest.approx(shift, rel=0.05)
    assert rows['ref']['outputs_match'] is match


def test_ratio_rows_use_medians_and_quartiles():
    def row(module, role, fwd, fb, peak):
        return dict(layer='L', case='c', module=module, role=role, peak_fwd=peak,
                    peak_fwd_bwd=peak, fwd=summary_stats(fwd), fwd_bwd=summary_stats(fb))
    rows = [row('L', 'layer', [1, 2, 3, 4, 100], [2, 2, 2], 10),
            row('R', 'reference', [3, 6, 9, 12, 0.1], [5, 6, 7], 40)]
    (r, ) = ratio_rows(rows)
    assert r['speedup_fwd'] == pytest.approx(6 / 3)          # medians 6 and 3
    q_ref, q_lay = (3, 9), (2, 4)                            # inclusive quartiles
    assert r['speedup_fwd_spread'] == pytest.approx((q_ref[0] / q_lay[1], q_ref[1] / q_lay[0]))
    assert r['speedup_fwd_bwd'] == pytest.approx(6 / 2)
    assert r['mem_ratio_fwd_bwd'] == pytest.approx(10 / 40)


def test_memory_tracker_counts_live_tensors():
    """x (n floats) exists before; y=2x, z=exp(y), w=z*y are alive together, then backward
    creates grad_w(expanded scalar), z*g, y*g, the exp grad and x.grad: peak 6n floats."""
    n = 100_000
    x = torch.randn(n, requires_grad=True)

    def f():
        y = x * 2
        z = y.exp()
        w = z * y
        w.sum().backward()

    peak, _ = peak_memory(f)
    # forward alive: y, z, w (3n); backward: dL/dz = y (n), dL/dy partial = z (n), then exp
    # grad (n) while the two partials live, then the sum dL/dy (n) ... x.grad (n): the live set
    # never exceeds y, z, w + 3 gradient buffers = 6n floats (+ a few scalars)
    assert 6 * 4 * n <= peak < 6 * 4 * n + 64

    def freed_then_smaller():
        a = torch.empty(1000)
        del a
        return torch.empty(500)

    assert peak_memory(freed_then_smaller)[0] == 4000


def test_memory_tracker_skips_existing_tensors_and_sees_extension_allocations():
    """Views and in-place results of tensors that existed before the call (the input, the
    parameters) allocate nothing; a C++ extension's output does."""
    x = torch.randn(256, 1024)
    assert peak_memory(lambda: x.view(-1).add_(1).t()[:10])[0] < 64
    linear = nn.Linear(1024, 1000)
    assert 4000 <= peak_memory(lambda: linear(x[:1]))[0] < 4064  # the output only
    # a block made during an earlier measurement and freed during this one is not this call's:
    # its free must not offset what the call allocates (the allocator remembers its size)
    _, earlier = peak_memory(lambda: torch.empty(1 << 20))
    holder = [earlier]
    del earlier

    def free_then_allocate():
        holder.clear()
        return torch.empty(1 << 18)

    assert peak_memory(free_then_allocate)[0] == 1 << 20
    with torch.profiler.profile():  # would end the outer session's recording
        with pytest.raises(RuntimeError, match='inside another active torch profiler'):
            peak_memory(lambda: None)
    if cpu_kernels.AVAILABLE:  # allocated in C++, no aten op of its own
        y = torch.randn(2, 8, 15, 16)
        assert peak_memory(lambda: cpu_kernels.haar_analysis_cl(y))[0] == 2 * 8 * 8 * 8 * 4 * 4


def test_exact_reference_outputs_are_compared_and_memory_measured():
    def make():
        return nn.Conv2d(4, 4, 3, padding=1)

    def same_weights(layer):
        ref = make()
        ref.load_state_dict(layer.state_dict())
        return ref

    def perturbed(layer):
        ref = same_weights(layer)
        with torch.no_grad():
            ref.bias += 1e-3
        return ref

    case = BenchCase('Conv', 'c4', (1, 4, 8, 8), make,
                     {'copy': same_weights, 'off': perturbed, 'dw7': lambda layer: nn.Conv2d(
                         4, 4, 7, padding=3, groups=4)}, exact=('copy', 'off'))
    rows = {r['module']: r for r in benchmark_case(case, repeats=2, warmup=0, log=lambda s: None)}
    assert rows['copy']['outputs_match'] and rows['copy']['max_abs_diff'] < 1e-6
    assert not rows['off']['outputs_match']
    assert rows['off']['max_abs_diff'] == pytest.approx(1e-3, rel=1e-3)
    assert 'max_abs_diff' not in rows['dw7']
    out_bytes = 1 * 4 * 8 * 8 * 4
    # a no-grad conv allocates its output, and on some CPU paths an im2col buffer (C*k*k x HW)
    assert out_bytes <= rows['Conv']['peak_fwd'] <= out_bytes + 4 * 9 * 8 * 8 * 4
    assert rows['Conv']['peak_fwd_bwd'] >= 2 * out_bytes


def test_run_benchmark_writes_table_json_and_png(tmp_path):
    clock = FakeClock()
    res = run_benchmark([_fake_case(clock)], str(tmp_path), repeats=2, warmup=0, timer=clock,
                        measure_memory=False, log=lambda s: None)
    names = sorted(os.listdir(tmp_path))
    assert names == ['benchmark_layers.json', 'benchmark_layers.md', 'benchmark_layers.png']
    with open(tmp_path / 'benchmark_layers.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    md = res['markdown']
    ratio_lines = [ln for ln in md.splitlines() if ln.startswith('| Fake | tiny |')]
    # 2 ratio rows (one per reference) + 3 raw rows (layer and two references)
    assert len(ratio_lines) == 5
    assert '| Fake | tiny | slow | 2.50× [2.50–2.50] | 3.00× [3.00–3.00] |' in md
    assert md.splitlines()[0].startswith('Measured ')


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match='formats'):
        benchmark_case(_fake_case(FakeClock()), formats=('nhwc', ), log=lambda s: None)


def test_every_available_layer_runs_through_its_tiny_suite():
    """Each name the tool lists (``--layers``) gives cases the benchmark can run: the layer
    and every reference produce one row each (OctaveConvModule, split by default, is built in
    its tensor mode)."""
    from convzoo_mm.analysis.layer_suites import available_layers, build_cases
    avail = available_layers()
    assert {'WTConv', 'DRConv', 'OctaveConv', 'OctaveConvModule'} <= set(avail)
    for name in avail:
        case = build_cases([name], 'tiny')[0]
        rows = benchmark_case(case, repeats=1, warmup=0, measure_memory=False,
                              formats=('nchw', ), log=lambda s: None)
        assert sorted(r['module'] for r in rows) == sorted({name, *case.references}), name
        assert all(r[k]['median'] > 0 for r in rows for k in ('fwd', 'fwd_bwd')), rows


def test_layer_suites_unknown_layer_and_exact_references():
    from convzoo_mm.analysis.layer_suites import available_layers, build_cases
    with pytest.raises(ValueError, match='unknown layer'):
        build_cases(['NoSuchConv'], 'tiny')
    avail = available_layers()
    for name in ('WTConv', 'DRConv'):
        if name not in avail:
            continue
        # one tiny case per layer: the exact reference (published WTConv2d / naive DRConv, same
        # weights) must give the same output as the layer
        case = build_cases([name], 'tiny')[0]
        rows = benchmark_case(case, repeats=1, warmup=0, measure_memory=False,
                              log=lambda s: None)
        exact = [r for r in rows if r['module'] in case.exact]
        assert exact and all(r['outputs_match'] for r in exact), exact
        assert {r['module'] for r in rows} == {name, *case.references}
