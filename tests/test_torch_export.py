"""``torch.export`` (what torch 2.13's default ``torch.onnx.export`` builds on) with batch, height
and width symbolic: each layer and a small backbone export without a guard on the example's
size or parity, and the exported program equals the eager module at other batches and sizes,
odd and even, down to the smallest size the layer supports symbolically.

The smallest sizes: WTConv needs H, W > 2**levels (at 2**levels its deepest level is one pixel,
and torch.export specializes size-1 dims) and > stride (two output pixels); OctaveConv 4
(stride 2: 9, two poolings); DRConv its kernel's reach. Not covered: WTConv with an even kernel
at stride > 1 (its base conv's asymmetric 'same' padding and subsampling guard) and wavelets
other than Haar (per-level pads and crops).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim, export

from convzoo_mm.backbones.oct_resnet import OctResNet
from convzoo_mm.backbones.wtconvnext import WTConvNeXt
from convzoo_mm.layers import DRConv, OctaveConv, WTConv
from convzoo_mm.layers.octconv import octave_pool


def _random_weights(module, seed=0):
    """Every parameter and BatchNorm statistic random (init zeros and ones hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


def export_dynamic(module, channels, example_hw, min_hw, max_hw=1024):
    """``torch.export`` with symbolic batch, height and width (fails on any guard that
    narrows them below the given range)."""
    x = torch.randn(2, channels, *example_hw)
    dims = {0: Dim('batch', max=64), 2: Dim('height', min=min_hw, max=max_hw),
            3: Dim('width', min=min_hw, max=max_hw)}
    return export(module, (x, ), dynamic_shapes={'x': dims})


def assert_equal_to_eager(program, module, channels, sizes, rel=1e-5):
    run = program.module()
    for i, (n, h, w) in enumerate(sizes):
        x = torch.randn(n, channels, h, w, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            want = module(x)
            got = run(x)
        wants = want if isinstance(want, (tuple, list)) else [want]
        gots = got if isinstance(got, (tuple, list)) else [got]
        assert len(gots) == len(wants)
        for a, b in zip(gots, wants):
            assert a.shape == b.shape, (n, h, w)
            assert (a - b).abs().max() <= rel * b.abs().max(), ((n, h, w), (a - b).abs().max())


def _sizes(lo):
    """The smallest size at both parities, then odd/even mixes, another batch."""
    return [(1, lo, lo + 1), (3, lo + 1, lo), (1, 37, 52), (2, 64, 45)]


@pytest.mark.parametrize('kw', [
    dict(levels=1),
    dict(levels=3, stride=2),
    dict(levels=2, out=6, groups=2),              # in != out: the 1x1 after the depthwise part
    dict(levels=4, k=3, dilation=2),
    dict(levels=1, stride=3),
    dict(levels=2, k=3, stride=4, out=6, groups=2),
])
def test_wtconv(kw):
    levels, stride = kw['levels'], kw.get('stride', 1)
    layer = _random_weights(WTConv(4, kw.get('out', 4), kw.get('k', 5), stride,
                                   groups=kw.get('groups', 4), dilation=kw.get('dilation', 1),
                                   wt_levels=levels))
    lo = max(2 ** levels, stride) + 1
    program = export_dynamic(layer, 4, (lo + 20, lo + 31), lo)
    assert_equal_to_eager(program, layer, 4, _sizes(lo))


@pytest.mark.parametrize('kw,lo', [
    (dict(alpha_in=0.5, alpha_out=0.5), 4),
    (dict(alpha_in=0.0, alpha_out=0.25), 4),      # first layer: high in, both out
    (dict(alpha_in=0.5, alpha_out=0.0), 4),       # last layer: both in, high out
    (dict(alpha_in=0.5, alpha_out=0.5, stride=2), 9),
    (dict(alpha_in=0.5, alpha_out=0.5, groups=8, dilation=2), 4),  # depthwise
])
def test_octave_conv(kw, lo):
    layer = _random_weights(OctaveConv(8, 8, 3, **kw))
    program = export_dynamic(layer, 8, (31, 44), lo)
    assert_equal_to_eager(program, layer, 8, _sizes(lo))


@pytest.mark.parametrize('shape', [(3, 5, 6), (2, 3, 6, 7)])
def test_traced_octave_pool_equals_ceil_mode_pool(shape):
    """The recorded form of ``octave_pool`` (pad, means, divided by the padded ones' means)
    equals the ceil-mode average pool at every parity, for (C, H, W) and (N, C, H, W) maps."""
    traced = torch.jit.trace(octave_pool, torch.randn(shape), check_trace=False)
    for dh, dw in ((0, 0), (1, 0), (0, 1), (1, 1), (4, 7)):
        x = torch.randn(*shape[:-2], shape[-2] + dh, shape[-1] + dw)
        want = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
        torch.testing.assert_close(traced(x), want, rtol=0, atol=0)


@pytest.mark.parametrize('generator', ['full', 'basis'])
def test_drconv(generator):
    layer = _random_weights(DRConv(4, 6, 3, padding=1, num_regions=4, generator=generator))
    program = export_dynamic(layer, 4, (13, 18), 3)
    assert_equal_to_eager(program, layer, 4, _sizes(3), rel=1e-4)


def test_wtconvnext_backbone():
    """Stage 1 is at H//4 with 3 levels (> 8 pixels), stage 4 at H//32 with 1 level (> 2
    pixels): H >= 96."""
    model = _random_weights(WTConvNeXt(dict(depths=(1, 1, 1, 1), channels=(8, 16, 16, 16)),
                                       wt_levels=(3, 2, 1, 1)))
    program = export_dynamic(model, 3, (117, 130), 96, 512)
    assert_equal_to_eager(program, model, 3, [(1, 96, 97), (2, 97, 129), (1, 130, 96)], 1e-4)


class _OctResNet14(OctResNet):
    arch_settings = {**OctResNet.arch_settings, 14: (1, 1, 1, 1)}


def test_oct_resnet_backbone():
    model = _random_weights(_OctResNet14(depth=14, alpha=0.5, stem_channels=8, base_channels=8))
    program = export_dynamic(model, 3, (77, 90), 33, 512)
    assert_equal_to_eager(program, model, 3, [(1, 33, 34), (2, 64, 63), (1, 90, 77)], 1e-4)
