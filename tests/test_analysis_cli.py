"""The analysis CLIs: --help, clear errors (bad config path, unknown layer), the model benchmark's
bookkeeping with a fake clock, and the tiny layer benchmark end to end."""
import os
import subprocess
import sys

import pytest

import torch

from convzoo_mm.analysis.model_bench import (CONFIG_PAIRS, compare_steps, model_table, pairs_table,
                                             profile_step)
from tests.utils import ROOT, run_tool

TOOLS = ['get_flops.py', 'benchmark_layers.py', 'benchmark_model.py', 'erf.py',
         'visualize_layers.py', 'summarize.py', 'benchmark_wtconvnext.py',
         'benchmark_configs.py', 'host_probe.py', 'bench_drconv.py', 'bench_octconv.py']


@pytest.mark.parametrize('tool', TOOLS)
def test_help(tool):
    proc = run_tool(f'analysis/{tool}', '--help')
    assert 'usage:' in proc.stdout and 'example' in proc.stdout


def test_bad_config_path_and_unknown_layer_are_clear_errors(tmp_path):
    with pytest.raises(AssertionError, match='config file not found: nope.py'):
        run_tool('analysis/get_flops.py', 'nope.py', '--shape', '64', '64')
    with pytest.raises(AssertionError, match=r"unknown layer\(s\) \['Nope'\]; available"):
        run_tool('analysis/benchmark_layers.py', '--layers', 'Nope', '--out-dir', str(tmp_path))
    with pytest.raises(AssertionError, match=r'README.md is not a config file') as info:
        run_tool('analysis/get_flops.py', 'README.md', '--shape', '64', '64')
    assert 'Traceback' not in str(info.value)
    demo = 'configs/demo/fcos_r50-thin_fpn_1xb8-12e_demo.py'
    with pytest.raises(AssertionError, match='config file not found: missing.py') as info:
        run_tool('analysis/benchmark_model.py', demo, '--baseline', 'missing.py',
                 '--out-dir', str(tmp_path))
    assert 'building' not in str(info.value)  # checked before the first model is built
    spec = "dict(type='WTConvNeXt', arch=dict(depths=(1, 1, 1, 1), channels=(8, 8, 8, 8)))"
    with pytest.raises(AssertionError, match=r'out_index must be in \[-4, 3\], got 7') as info:
        run_tool('analysis/erf.py', spec, '--out-index', '7', '--size', '64', '--num-images',
                 '1', '--out', str(tmp_path / 'erf.png'))
    assert 'Traceback' not in str(info.value)


class Clock:
    """A fake timer; ``cost(dt)`` is a step that advances it by dt seconds."""
    now = 0.0

    def __call__(self):
        return self.now

    def cost(self, dt):
        def step():
            self.now += dt
        return step


def test_compare_steps_ratios_from_both_models():
    clock = Clock()
    cost = clock.cost
    steps = {'wt': dict(train=cost(3.0), infer=cost(1.0)),
             'base': dict(train=cost(2.0), infer=cost(2.0))}
    rows = compare_steps(steps, 'base', repeats=3, warmup=1, timer=clock, measure_memory=False,
                         log=lambda s: None)
    by = {(r['model'], r['kind']): r for r in rows}
    assert by[('wt', 'train')]['median'] == 3.0 and by[('base', 'train')]['median'] == 2.0
    assert by[('wt', 'train')]['ratio'] == pytest.approx(1.5)
    assert by[('wt', 'infer')]['ratio'] == pytest.approx(0.5)
    assert by[('base', 'infer')]['ratio'] == 1.0
    table = model_table(rows)
    assert '| wt | train | 3000.0 [3000.0–3000.0] | 1.50× |' in table
    assert '| base (baseline) | infer |' in table
    with pytest.raises(ValueError, match='baseline'):
        compare_steps(steps, 'nope', log=lambda s: None)


def test_compare_steps_warmup_and_memory_ratio():
    """Warmup calls are not timed (a first call of 100 s); peak memory ratios are the step's
    over the baseline's (8000 vs 4000 bytes allocated)."""
    clock = Clock()
    calls = []

    def slow_first():
        calls.append(1)
        clock.now += 100.0 if len(calls) == 1 else 1.0

    def allocate(n):
        def step():
            clock.now += 1.0
            return torch.empty(n)
        return step
    rows = compare_steps({'wt': dict(train=slow_first, infer=allocate(2000)),
                          'base': dict(train=clock.cost(1.0), infer=allocate(1000))}, 'base',
                         repeats=1, warmup=1, timer=clock, log=lambda s: None)
    by = {(r['model'], r['kind']): r for r in rows}
    assert by[('wt', 'train')]['median'] == 1.0
    assert by[('wt', 'infer')]['mem_ratio'] == pytest.approx(2.0)
    assert by[('base', 'infer')]['mem_ratio'] == 1.0


def test_layer_benchmark_cli_tiny(tmp_path):
    proc = run_tool('analysis/benchmark_layers.py', '--preset', 'tiny', '--layers', 'WTConv',
                    '--repeats', '1', '--warmup', '0', '--formats', 'nchw', '--out-dir',
                    str(tmp_path), env=dict(OMP_NUM_THREADS='1'))
    assert '| WTConv | C8@16² L2 | published WTConv2d |' in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ['benchmark_layers.json', 'benchmark_layers.md',
                                            'benchmark_layers.png']


def test_wtconvnext_benchmark_cli_tiny(tmp_path):
    """Both backbones measured in one run, the ratio to ConvNeXt reported; bad arch is an error."""
    import json
    proc = run_tool('analysis/benchmark_wtconvnext.py', '--shape', '1', '3', '64', '64',
                    '--repeats', '1', '--warmup', '0', '--autocast', 'bf16', '--profile', '1',
                    '--out-dir', str(tmp_path), env=dict(OMP_NUM_THREADS='1'))
    assert '| ConvNeXt-tiny (baseline) | train |' in proc.stdout
    assert '| WTConvNeXt-tiny | train |' in proc.stdout and 'autocast: bf16' in proc.stdout
    saved = json.load(open(tmp_path / 'benchmark_wtconvnext.json'))
    for model in ('ConvNeXt-tiny', 'WTConvNeXt-tiny'):      # --profile: CPU time, top operators
        cpu = saved['profiles'][model]['cpu_ms']
        assert f'| {model} | {cpu:.1f} | 0.0 | - |' in proc.stdout and cpu > 0
        assert 'aten::' in open(tmp_path / f'profile_{model}.txt').read()
    rows = saved['rows']
    wt = {r['kind']: r for r in rows if r['model'] == 'WTConvNeXt-tiny'}
    assert wt['train']['ratio'] == pytest.approx(wt['train']['median'] / next(
        r['median'] for r in rows if r['model'] == 'ConvNeXt-tiny' and r['kind'] == 'train'))
    with pytest.raises(AssertionError, match="arch"):
        run_tool('analysis/benchmark_wtconvnext.py', '--arch', 'huge', '--out-dir', str(tmp_path))


def test_host_probe_cli_counts_the_designs_launches(tmp_path):
    """One layer and both backbones with the Triton launches stubbed: every WTConv of
    WTConvNeXt-T makes 2L + 3 launches per fwd+bwd (L analysis + synthesis forward; L analysis,
    weight gradient, synthesis backward), ConvNeXt none; the tables are the JSON's numbers.
    --launch without a GPU is a usage error."""
    import json
    pytest.importorskip('triton')
    from convzoo_mm.backbones import WTConvNeXt
    from convzoo_mm.layers import WTConv
    proc = run_tool('analysis/host_probe.py', '--levels', '3', '--rounds', '1', '--repeats', '1',
                    '--models', '--out-dir', str(tmp_path), env=dict(OMP_NUM_THREADS='1'))
    saved = json.load(open(tmp_path / 'host_probe.json'))
    layer, models = saved['layer'], saved['models']
    assert layer['launches']['fwd+bwd'] == dict(analysis_conv=6, synthesis=2, weight_grad=1)
    wt = [m for m in WTConvNeXt('tiny').modules() if isinstance(m, WTConv)]
    assert models['WTConvNeXt-tiny']['launches'] == sum(2 * m.wt_levels + 3 for m in wt) > 0
    assert models['ConvNeXt-tiny']['launches'] == 0
    for name, r in models.items():
        assert f"| {name} | {r['calls']} | {r['kernel_ops']} | {r['launches']} |" in proc.stdout
    t = layer['host_us']['fwd+bwd']
    assert f"| fwd+bwd | {layer['calls']['fwd+bwd']} |" in proc.stdout
    assert f"| {t['min']:.0f} [{t['median']:.0f}] |" in proc.stdout
    with pytest.raises(AssertionError, match='--launch .* needs --device cuda'):
        run_tool('analysis/host_probe.py', '--launch', '--out-dir', str(tmp_path))
    with pytest.raises(AssertionError, match="--arch: .*'huge'"):
        run_tool('analysis/host_probe.py', '--models', '--arch', 'huge', '--rounds', '1',
                 '--out-dir', str(tmp_path))


def test_backbone_steps_compiled_equal_eager():
    """``backbone_steps(compile=...)`` runs the forwards through torch.compile (the backend is
    called, with WTConv's Triton path as its custom op in the graph: Triton's interpreter here)
    and its train step (loss and every parameter gradient, all of them nonzero: the loss is
    not the outputs' means, which a stage's final LayerNorm makes 0) and inference give what
    the eager ones give."""
    import copy

    from convzoo_mm.analysis.model_bench import backbone_steps
    from convzoo_mm.backbones import WTConvNeXt
    from convzoo_mm.layers import WTConv
    from convzoo_mm.ops import haar_wtconv
    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward
    torch.manual_seed(0)
    net = WTConvNeXt(arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 16, 16]), wt_levels=[2] * 4,
                     layer_scale_init_value=1.0)  # every block matters (default 1e-6)
    if haar_wtconv.AVAILABLE:
        for m in net.modules():
            if isinstance(m, WTConv):
                m.impl = 'triton'
    images = torch.randn(2, 3, 64, 64)
    nets = [copy.deepcopy(net) for _ in range(2)]
    eager = backbone_steps(nets[0], images)
    compiled = backbone_steps(nets[1], images, compile=dict(backend=record))
    assert compiled['train']() == pytest.approx(eager['train'](), rel=1e-5)
    for (name, a), b in zip(nets[1].named_parameters(), nets[0].parameters()):
        assert b.grad.abs().max() > 1e-6, name  # (the means' gradients: 1e-9 to 1e-17)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert graphs and all('haar_wtconv_forward' in g for g in graphs) == haar_wtconv.AVAILABLE
    for a, b in zip(compiled['infer'](), eager['infer']()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_profile_step_counts_operators_per_step():
    a, b = torch.randn(8, 8), torch.randn(8, 8)

    def step():
        for _ in range(3):
            torch.mm(a, b)
        a.mul_(1.0)
    prof = profile_step(step, steps=2)
    assert prof['ops']['aten::mm'] == 3 and prof['ops']['aten::mul_'] == 1
    assert prof['device_ms'] is None and prof['cpu_ms'] > 0 and 'aten::mm' in prof['table']
    assert prof['wait_ms'] == 0                     # no device to wait for
    with pytest.raises(ValueError, match='steps must be >= 1, got 0'):
        profile_step(step, steps=0)


def test_config_pairs_exist_and_pair_a_layer_with_its_baseline():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for suite, pairs in CONFIG_PAIRS.items():
        assert pairs, suite
        for config, baseline in pairs:
            assert os.path.isfile(os.path.join(root, config)), config
            assert os.path.isfile(os.path.join(root, baseline)), baseline
            assert config != baseline
            assert any(t in os.path.basename(config) for t in ('wtconv', 'octconv', 'drconv'))
            assert not any(t in os.path.basename(baseline) for t in ('wtconv', 'octconv-'))


def test_pairs_table_from_fake_rows():
    clock = Clock()
    cost = clock.cost
    rows = compare_steps({'mine': dict(train=cost(0.3), infer=cost(0.1)),
                          'base': dict(train=cost(0.2), infer=cost(0.2))}, 'base', repeats=2,
                         warmup=0, timer=clock, measure_memory=False, log=lambda s: None)
    table = pairs_table([dict(config='configs/x/a_mine.py', baseline='configs/x/a_base.py',
                              rows=rows)])
    assert '| a_mine | a_base | 300 (vs 200) | 1.50× | 100 (vs 200) | 0.50× | - |' in table
    for row in rows:   # the memory column is the train step's ratio, not the inference one's
        row['mem_ratio'] = {'train': 3.0, 'infer': 0.5}[row['kind']]
    table = pairs_table([dict(config='configs/x/a_mine.py', baseline='configs/x/a_base.py',
                              rows=rows)])
    assert table.splitlines()[-1].endswith('| 0.50× | 3.00× |')


def test_config_suite_cli_one_pair(tmp_path):
    """The suite runner end to end on the smallest demo pair, with a filter."""
    import json
    proc = run_tool('analysis/benchmark_configs.py', 'demo', '--only', 'fcos_r50-thin-octconv',
                    '--shape', '64', '64', '--batch-size', '1', '--repeats', '1', '--warmup', '0',
                    '--no-memory', '--out-dir', str(tmp_path), env=dict(OMP_NUM_THREADS='1'))
    assert '| fcos_r50-thin-octconv-a0.5_fpn_1xb8-12e_demo | fcos_r50-thin_fpn_1xb8-12e_demo |' \
        in proc.stdout
    saved = json.load(open(tmp_path / 'benchmark_configs.json'))
    assert [r['config'] for r in saved['results']] == [
        'configs/demo/fcos_r50-thin-octconv-a0.5_fpn_1xb8-12e_demo.py']
    with pytest.raises(AssertionError, match='no pair'):
        run_tool('analysis/benchmark_configs.py', 'demo', '--only', 'nope', '--out-dir',
                 str(tmp_path))


def test_gpu_script_usage_errors_and_machine_without_cuda(tmp_path):
    """``.ci/gpu`` (the GPU checks): no arguments or an unknown step is exit 2 naming the allowed
    steps; on a machine without CUDA and nothing missing it gets as far as importing convzoo_mm,
    then stops with exit 2 at the device check, before running any step."""
    def gpu(*args):
        return subprocess.run(['bash', os.path.join(ROOT, '.ci', 'gpu'), *map(str, args)],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path)))

    proc = gpu()
    assert proc.returncode == 2 and '.ci/gpu OUT [STEP ...]' in proc.stdout
    assert gpu('--help').returncode == 0
    proc = gpu(tmp_path, 'tests', 'nope')
    assert proc.returncode == 2
    assert "unknown step 'nope' (allowed: tests probe layers backbone compile)" in proc.stderr
    if torch.cuda.is_available():
        return
    proc = gpu(tmp_path, 'probe')
    assert proc.returncode == 2
    assert 'convzoo_mm imports' in proc.stderr and 'no CUDA device' in proc.stderr, proc.stderr
    assert 'installing' not in proc.stdout  # this environment lacks nothing
    assert not os.path.exists(tmp_path / 'probe.log')
