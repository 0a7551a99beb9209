"""ONNX export of each layer and of a small backbone built with it, run in onnxruntime.

One idea, one helper: :func:`export_and_run` exports a module with torch's TorchScript-based
exporter (``dynamo=False``: still in torch 2.13 and needs no onnxscript; ``onnx`` is used here
only to read the graph's ops) and runs the graph in onnxruntime on *fresh* random inputs (never
the export example), so a graph that constant-folded its output, or baked in the example's data,
fails the comparison with PyTorch (atol 1e-4 on outputs of scale ~1). Batch, height and width
are exported as symbolic and run at other values (odd and even sizes), as mmdeploy's dynamic
shapes need. The last test saves and reloads a ``jit.trace`` (TorchScript) of each layer.
"""
import io
import itertools

import pytest
import torch

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

import convzoo_mm  # noqa: E402,F401  (registers the layers with mmcv / mmdet)
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from convzoo_mm.backbones.oct_resnet import OctResNet  # noqa: E402
from convzoo_mm.backbones.wtconvnext import WTConvNeXt  # noqa: E402
from convzoo_mm.layers.drconv import DRConv  # noqa: E402
from convzoo_mm.layers.octconv import OctaveConv  # noqa: E402
from convzoo_mm.layers.wtconv import WTConv  # noqa: E402

mmdet_backbones = pytest.importorskip('mmdet.models.backbones')
MMDetResNet = mmdet_backbones.ResNet
Bottleneck = mmdet_backbones.resnet.Bottleneck

ATOL = 1e-4


def _dynamic_axes(names):
    return {name: {0: 'batch', 2: 'height', 3: 'width'} for name in names}


def export_and_run(module, inputs, sizes=None, seed=1):
    """Export ``module`` (eval mode) with the example ``inputs`` (a tuple of 4-D tensors),
    batch, height and width as symbolic axes of every input and output, and run the ONNX graph
    in onnxruntime on fresh random inputs: twice at the example's size with one sample more,
    then at each entry of ``sizes`` (per run, the inputs' shapes; default: one sample more and
    the height and width grown by (1, 2), then (2, 1), so both parities of each axis run).
    Every output is checked against PyTorch's on the same input within ``ATOL``; a graph that
    fixed a size or baked in the example's data fails.

    Returns ``(graph, ort_outputs)``: the ``onnx.ModelProto`` and, per run, the list of ORT
    outputs (as tensors), so callers can check the ops in the graph."""
    module.eval()  # (mm backbones' train() returns None)
    with torch.no_grad():
        ref_example = module(*inputs)
    n_out = 1 if torch.is_tensor(ref_example) else len(ref_example)
    in_names = [f'x{i}' for i in range(len(inputs))]
    out_names = [f'y{i}' for i in range(n_out)]
    buf = io.BytesIO()
    torch.onnx.export(module, tuple(inputs), buf, input_names=in_names, output_names=out_names,
                      dynamic_axes=_dynamic_axes(in_names + out_names), dynamo=False)
    graph = onnx.load_from_string(buf.getvalue())
    sess = ort.InferenceSession(buf.getvalue(), providers=['CPUExecutionProvider'])
    if sizes is None:
        assert len(inputs) == 1, 'several inputs: say their sizes for the other runs'
        sizes = [[(n + 1, c, h + dh, w + dw) for n, c, h, w in (x.shape for x in inputs)]
                 for dh, dw in ((1, 2), (2, 1))]
    same = [(x.shape[0] + 1, *x.shape[1:]) for x in inputs]
    g = torch.Generator().manual_seed(seed)
    results = []
    for shapes in [same, same, *sizes]:
        xs = [torch.randn(shape, generator=g, dtype=x.dtype) for shape, x in zip(shapes, inputs)]
        with torch.no_grad():
            ref = module(*xs)
        ref = [ref] if torch.is_tensor(ref) else list(ref)
        got = [torch.from_numpy(y) for y in sess.run(None, dict(zip(in_names,
                                                                     (x.numpy() for x in xs))))]
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
        results.append(got)
    for a, b in zip(results[0], results[1]):  # the graph computes from its input
        assert not torch.allclose(a, b)
    return graph, results


def op_types(graph):
    return [node.op_type for node in graph.graph.node]


def _perturb(model, seed=0):
    """Make every part of ``model`` matter at the 1e-4 tolerance: random BatchNorm affine
    parameters and running statistics (eval mode uses them), WTConv level scales ~1 instead of
    their 0.1 init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, WTConv):
                for scale in m.wavelet_scale:
                    scale.weight.copy_(torch.rand(scale.weight.shape, generator=g) + 0.5)
    return model


class _TupleIn(torch.nn.Module):
    """Takes the (high, low) pair of a split OctaveConv as two graph inputs."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, high, low):
        return self.module((high, low))


# ---------------------------------------------------------------------------------- layers
def _wtconv_cases():
    """levels x k x stride x (depthwise-only | in != out with groups): a pairwise-covering
    subset by default, the full product with -m slow."""
    quick = {(0, 3, 1, 'dw'), (0, 5, 2, 'pw'), (1, 3, 2, 'dw'), (1, 5, 1, 'pw'), (3, 5, 2, 'dw'),
             (3, 3, 1, 'pw')}
    return [pytest.param(*case, marks=() if case in quick else pytest.mark.slow)
            for case in itertools.product((0, 1, 3), (3, 5), (1, 2), ('dw', 'pw'))]


@pytest.mark.parametrize('levels,k,stride,kind', _wtconv_cases())
def test_wtconv(levels, k, stride, kind):
    cin, cout, groups = (6, 6, 6) if kind == 'dw' else (6, 10, 2)
    torch.manual_seed(0)
    layer = _perturb(WTConv(cin, cout, k, stride, groups=groups, wt_levels=levels))
    graph, _ = export_and_run(layer, (torch.randn(2, cin, 37, 45),))
    # the base conv, one depthwise conv per level, the 1x1 conv when in != out
    assert op_types(graph).count('Conv') == 1 + levels + (kind == 'pw')


def test_wtconv_exported_at_an_even_size_runs_at_odd_ones():
    """Exported at 32x40 (no pad needed at any of 3 levels), run at 33x42 and 34x41: the graph
    must hold the odd-size pad (an export that took the even-size shortcut failed)."""
    torch.manual_seed(0)
    layer = _perturb(WTConv(6, 6, 5, groups=6, wt_levels=3))
    graph, _ = export_and_run(layer, (torch.randn(2, 6, 32, 40),))
    assert 'Pad' in op_types(graph)


@pytest.mark.parametrize('wt_type,levels', [('db2', 2), ('sym4', 3)])
def test_wtconv_longer_wavelet(wt_type, levels):
    """Longer wavelets (periodic borders); sym4 at level 3 of 37x45 wraps more than once."""
    torch.manual_seed(0)
    layer = _perturb(WTConv(4, 4, 3, groups=4, wt_levels=levels, wt_type=wt_type))
    export_and_run(layer, (torch.randn(2, 4, 37, 45),))


@pytest.mark.parametrize('generator,stride,groups,size', [
    ('full', 1, 1, (9, 10)), ('full', 2, 2, (9, 10)), ('full', 1, 1, (12, 9)),
    ('basis', 2, 1, (11, 10))])
def test_drconv(generator, stride, groups, size):
    """Sizes that the kernel (3) does not divide exercise the generator's pooling."""
    torch.manual_seed(0)
    layer = DRConv(4, 6, 3, stride, 1, 1, groups, num_regions=3, generator=generator)
    graph, _ = export_and_run(layer, (torch.randn(2, 4, *size),))
    assert {'ArgMax', 'Softmax', 'Conv'} <= set(op_types(graph))


@pytest.mark.parametrize('alphas,stride,groups,dilation,size', [
    ((0.5, 0.5), 1, 1, 1, (13, 16)), ((0.5, 0.5), 2, 1, 1, (13, 15)),
    ((0.5, 0.5), 1, 2, 2, (14, 15)), ((0.0, 0.25), 1, 1, 1, (13, 15)),
    ((0.25, 0.0), 2, 1, 1, (14, 16))])
def test_octconv(alphas, stride, groups, dilation, size):
    torch.manual_seed(0)
    layer = OctaveConv(8, 8, 3, stride, dilation=dilation, groups=groups, alpha_in=alphas[0],
                       alpha_out=alphas[1])
    graph, _ = export_and_run(layer, (torch.randn(2, 8, *size),))
    assert 'Conv' in op_types(graph)


def test_octconv_split_pair():
    """Split mode: (high, low) in, (high, low) out."""
    torch.manual_seed(0)
    layer = OctaveConv(8, 8, 3, 1, alpha_in=0.5, alpha_out=0.5, split=True)
    graph, (run, *_) = export_and_run(
        _TupleIn(layer), (torch.randn(2, 4, 13, 15), torch.randn(2, 4, 7, 8)),
        sizes=[[(1, 4, 14, 16), (1, 4, 7, 8)], [(3, 4, 12, 17), (3, 4, 6, 9)]])
    assert [tuple(y.shape) for y in run] == [(3, 4, 13, 15), (3, 4, 7, 8)]
    assert {'AveragePool', 'Resize'} <= set(op_types(graph))


# ------------------------------------------------------------------------------- backbones
class _OctResNet14(OctResNet):
    """One bottleneck per stage (the quick tests); depth=50 is the real one."""
    arch_settings = {**OctResNet.arch_settings, 14: (1, 1, 1, 1)}


class _ResNet14(MMDetResNet):
    arch_settings = {**MMDetResNet.arch_settings, 14: (Bottleneck, (1, 1, 1, 1))}


def _count(graph, op):
    return op_types(graph).count(op)


def test_wtconvnext_backbone():
    torch.manual_seed(0)
    model = _perturb(WTConvNeXt(dict(depths=(1, 1, 1, 1), channels=(8, 16, 16, 16)),
                                wt_levels=(3, 2, 1, 1), layer_scale_init_value=1.0))
    graph, (run, *_) = export_and_run(model, (torch.randn(1, 3, 61, 75),))
    assert [y.shape[1] for y in run] == [8, 16, 16, 16]
    assert _count(graph, 'Conv') == 4 + 4 + sum((3, 2, 1, 1))  # stem/downsamples, base, levels


DEPTHS = [14, pytest.param(50, marks=pytest.mark.slow)]
WIDTH = {14: 8, 50: 16}  # 50: the thin demo R50 of configs/demo


@pytest.mark.parametrize('depth,norm', [(14, 'BN'), pytest.param(50, 'BN', marks=pytest.mark.slow),
                                        (14, 'GN'), (14, 'SyncBN')])
def test_oct_resnet_backbone(depth, norm):
    """BN runs per branch as F.batch_norm on channel slices; GN and SyncBN (reverted to a
    plain ``_BatchNormXd`` as mm's tools do on CPU) as the module called with its state
    sliced, which must also trace."""
    torch.manual_seed(0)
    norm_cfg = dict(type='GN', num_groups=2) if norm == 'GN' else dict(type=norm)
    model = revert_sync_batchnorm(_OctResNet14(
        depth=depth, alpha=0.5, stem_channels=WIDTH[depth], base_channels=WIDTH[depth],
        norm_cfg=norm_cfg))
    norms = [type(m) for m in model.modules() if 'Norm' in type(m).__name__]
    assert norms and all((t is torch.nn.BatchNorm2d) == (norm == 'BN') for t in norms)
    model = _perturb(model)
    graph, (run, *_) = export_and_run(model, (torch.randn(1, 3, 61, 75),))
    assert len(run) == 4
    assert _count(graph, 'AveragePool') > 0 and _count(graph, 'Resize') > 0


@pytest.mark.parametrize('depth', DEPTHS)
@pytest.mark.parametrize('dcn', [dict(type='DRConv', num_regions=4),
                                 dict(type='WTConv', wt_levels=2)], ids=['DRConv', 'WTConv'])
def test_mmdet_resnet_dcn_slot(dcn, depth):
    """The layer in the Bottleneck 3x3 slot of stages c3-c4 of a thin mmdet ResNet (as in
    configs/demo); DRConv's generator pools 16x16 and 8x8 maps to 3x3 here. Only the layer's
    own convs add Transpose (WTConv's Haar transform) or ArgMax (DRConv's regions)."""
    torch.manual_seed(0)
    model = _perturb(_ResNet14(depth=depth, stem_channels=WIDTH[depth],
                               base_channels=WIDTH[depth], out_indices=(1, 2, 3), dcn=dcn,
                               stage_with_dcn=(False, True, True, False)))
    graph, (run, *_) = export_and_run(model, (torch.randn(1, 3, 64, 64),))
    assert len(run) == 3
    assert _count(graph, 'ArgMax' if dcn['type'] == 'DRConv' else 'Transpose') > 0


def _torchscript_cases():
    torch.manual_seed(0)
    yield 'WTConv', WTConv(8, 8, 5, groups=8, wt_levels=2), (torch.randn(2, 8, 13, 10),)
    yield 'WTConv-db2', WTConv(8, 8, 3, groups=8, wt_levels=2, wt_type='db2'), (
        torch.randn(2, 8, 13, 10),)
    yield 'OctaveConv', OctaveConv(8, 8, 3, padding=1), (torch.randn(2, 8, 13, 10),)
    yield 'DRConv', DRConv(8, 8, 3, padding=1, num_regions=4), (torch.randn(2, 8, 13, 10),)
    yield 'WTConvNeXt', WTConvNeXt(dict(depths=(1, 1, 1, 1), channels=(8, 16, 16, 16)),
                                   wt_levels=(3, 2, 1, 1)), (torch.randn(1, 3, 61, 75),)


@pytest.mark.parametrize('name,module,inputs', list(_torchscript_cases()),
                         ids=[c[0] for c in _torchscript_cases()])
def test_torchscript_trace_saves_and_reloads(name, module, inputs):
    """A ``jit.trace`` of each layer (and of WTConvNeXt) is plain TorchScript ops: no recorded
    Python call (``prim::PythonOp``, e.g. an autograd Function), so ``jit.save`` works and the
    reloaded module gives eager's output on fresh inputs."""
    module = _perturb(module).eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, inputs, check_trace=False)
        python_ops = [n.kind() for n in traced.inlined_graph.nodes()
                      if n.kind() == 'prim::PythonOp']
        assert python_ops == []
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        fresh = tuple(torch.randn_like(x) for x in inputs)
        for got, want in zip(*[o if isinstance(o, (tuple, list)) else (o,)
                               for o in (loaded(*fresh), module(*fresh))]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
