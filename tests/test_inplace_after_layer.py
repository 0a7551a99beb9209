"""In-place ops on a layer's output (``y.relu_()``, ``out += identity``), as mmcv's ConvModule
with an in-place ReLU and residual blocks do, train exactly like their out-of-place versions on
every forward path: the C++ CPU kernels, plain PyTorch, the fused Triton path (in Triton's
interpreter without a GPU), NCHW and channels_last. Autograd refuses in-place ops on a view
made inside a custom Function, which the layers' permuted NHWC buffers used to be."""
import copy

import pytest
import torch
from mmcv.cnn import ConvModule

from convzoo_mm.layers import DRConv, OctaveConv, WTConv
from convzoo_mm.layers.wtconv import haar_analysis, haar_synthesis
from convzoo_mm.ops import cpu_kernels
from convzoo_mm.ops import haar_wtconv as fused_ops

X = (2, 8, 9, 11)
SPLIT_X = ((2, 4, 9, 11), (2, 4, 5, 6))  # OctaveConv(8, ..., alpha_in=0.5, split=True)
CASES = {
    'wtconv-depthwise': (lambda: WTConv(8, 8, 5, groups=8, wt_levels=2), X),
    'wtconv-depthwise-nobias': (lambda: WTConv(8, 8, 5, groups=8, wt_levels=2, bias=False), X),
    'wtconv-1x1-after': (lambda: WTConv(8, 16, 3, wt_levels=2, bias=False), X),
    'wtconv-stride2': (lambda: WTConv(8, 8, 5, stride=2, groups=8, wt_levels=2), X),
    'drconv-m8-nobias': (lambda: DRConv(8, 8, 3, padding=1, bias=False), X),
    'drconv-m4-stride2-nobias': (
        lambda: DRConv(8, 8, 3, stride=2, padding=1, num_regions=4, bias=False), X),
    'drconv-basis-nobias': (
        lambda: DRConv(8, 8, 3, padding=1, num_regions=4, generator='basis', bias=False), X),
    'octconv-dropin': (
        lambda: OctaveConv(8, 16, 3, padding=1, alpha_in=0.5, alpha_out=0.5, bias=False), X),
    'octconv-split-1x1': (lambda: OctaveConv(8, 16, 1, alpha_in=0.5, alpha_out=0.5, split=True,
                                             bias=False), SPLIT_X),
    'octconv-split-1x1-to-high': (
        lambda: OctaveConv(8, 16, 1, alpha_in=0.5, alpha_out=0, split=True, bias=False),
        SPLIT_X),
}


def _grads(layer, inputs, inplace, weights):
    """Input and parameter gradients of ``sum(w * relu(2 * y))`` over the layer's outputs."""
    layer.zero_grad()
    xs = [x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
          for x in inputs]
    out = layer(tuple(xs) if len(xs) > 1 else xs[0])
    outs = [y for y in (out if isinstance(out, tuple) else (out,)) if y is not None]
    if inplace:
        outs = [y.mul_(2).relu_() for y in outs]
    else:
        outs = [(y * 2).relu() for y in outs]
    sum((y * w).sum() for y, w in zip(outs, weights)).backward()
    return [x.grad for x in xs] + [p.grad.clone() for p in layer.parameters()]


def _check(make, shapes, channels_last, device='cpu'):
    torch.manual_seed(0)
    layer = make().double().to(device)
    with torch.no_grad():  # random, not initial, weights: every gradient is non-trivial
        for p in layer.parameters():
            p.normal_()
    shapes = shapes if isinstance(shapes[0], tuple) else (shapes,)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    inputs = [torch.randn(s, dtype=torch.float64, device=device).contiguous(memory_format=fmt)
              for s in shapes]
    with torch.no_grad():
        outs = layer(tuple(inputs) if len(inputs) > 1 else inputs[0])
    outs = [y for y in (outs if isinstance(outs, tuple) else (outs,)) if y is not None]
    weights = [torch.randn_like(y) for y in outs]
    expected = _grads(layer, inputs, False, weights)
    got = _grads(copy.deepcopy(layer), inputs, True, weights)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('cpp', [True, False], ids=['cpp-kernels', 'pytorch'])
@pytest.mark.parametrize('case', list(CASES))
def test_inplace_op_on_output_trains_like_out_of_place(case, cpp, channels_last, monkeypatch):
    if cpp and not cpu_kernels.AVAILABLE:
        pytest.skip('C++ extension not built')
    if not cpp:
        monkeypatch.setattr(cpu_kernels, 'AVAILABLE', False)
    make, shapes = CASES[case]
    _check(make, shapes, channels_last)


@pytest.mark.skipif(not fused_ops.AVAILABLE, reason='Triton is not installed')
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_inplace_op_on_fused_wtconv_output(channels_last):
    device = 'cuda' if torch.cuda.is_available() else 'cpu'  # else Triton's interpreter
    _check(lambda: WTConv(8, 8, 5, groups=8, wt_levels=2, bias=False, impl='triton'), X,
           channels_last, device)


@pytest.mark.parametrize('name', ['WTConv', 'OctaveConv', 'DRConv'])
def test_conv_module_inplace_relu_without_norm(name):
    """ConvModule's default act is an in-place ReLU; without a norm it acts on the conv's
    output directly (depthwise, so WTConv takes its published, Function-output form)."""
    torch.manual_seed(0)
    module = ConvModule(8, 8, 3, padding=1, groups=8 if name == 'WTConv' else 1, bias=False,
                        conv_cfg=dict(type=name), norm_cfg=None, act_cfg=dict(type='ReLU'))
    assert module.activate.inplace
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    module(x).square().sum().backward()
    expected = x.grad.clone()
    x.grad = None
    module.activate.inplace = False
    module(x).square().sum().backward()
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize('cpp', [True, False], ids=['cpp-kernels', 'pytorch'])
def test_inplace_op_on_public_haar_transforms(cpp, monkeypatch):
    """The public Haar transforms (custom Functions too) take in-place ops on their outputs."""
    if not cpp:
        monkeypatch.setattr(cpu_kernels, 'AVAILABLE', False)
    elif not cpu_kernels.AVAILABLE:
        pytest.skip('C++ extension not built')
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    w = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    grads = []
    for inplace in (False, True):
        xi = x.clone().requires_grad_()
        bands = haar_analysis(xi)
        bands = bands.mul_(2) if inplace else bands * 2
        y = haar_synthesis(bands, size=(7, 10))
        y = y.relu_() if inplace else y.relu()
        (y * w).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[0], 2 * w * (2 * x > 0))  # synthesis inverts analysis
