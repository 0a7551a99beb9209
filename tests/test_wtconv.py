"""WTConv against independent oracles: the published computation, pywavelets, F.conv2d."""
import itertools

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from convzoo_mm.analysis.references import PublishedWTConv2d
from convzoo_mm.layers.wtconv import (WTConv, haar_analysis, haar_synthesis, wavelet_analysis,
                                      wavelet_filter_bank, wavelet_synthesis)


def _published(channels, k, stride, levels, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = PublishedWTConv2d(channels, k, stride, bias, levels,
                            filter_dtype=torch.float64).double()
    for p in ref.parameters():
        if p.requires_grad:
            p.data.normal_()
    return ref


def _compare_with_published(h, w, levels, k, stride, channels=3):
    ref = _published(channels, k, stride, levels)
    ours = WTConv(channels, channels, k, stride, groups=channels, wt_levels=levels).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, channels, h, w, dtype=torch.float64, requires_grad=True)
    y_ref, y = ref(x), ours(x)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    g = torch.randn_like(y)
    params_ref = [p for p in ref.parameters() if p.requires_grad]
    grads_ref = torch.autograd.grad(y_ref, [x] + params_ref, g)
    named = dict(ours.named_parameters())
    params = [named[n] for n, p in ref.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(y, [x] + params, g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize('levels', [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize('stride', [1, 2])
def test_matches_published_layer_all_sizes(levels, stride):
    sizes = [(1, 1), (1, 6), (2, 2), (3, 7), (8, 8), (13, 10), (17, 31)]
    for (h, w), k in itertools.product(sizes, [3, 4, 5]):
        _compare_with_published(h, w, levels, k, stride)


def test_matches_published_layer_stride_3_and_large_kernel():
    for (h, w), levels in itertools.product([(9, 9), (20, 11)], [1, 3]):
        _compare_with_published(h, w, levels, 7, 3)


def test_haar_analysis_equals_pywavelets():
    x = np.random.default_rng(0).normal(size=(2, 3, 10, 14))
    ours = haar_analysis(torch.from_numpy(x))                     # (N, C, 4, 5, 7)
    ll, (ch, cv, cd) = pywt.dwt2(x, 'haar', axes=(-2, -1))
    # band order LL, high along rows (pywt's horizontal detail cH), high along columns (cV), HH
    for band, ref in enumerate([ll, ch, cv, cd]):
        np.testing.assert_allclose(ours[:, :, band].numpy(), ref, atol=1e-12)
    general = wavelet_analysis(torch.from_numpy(x), wavelet_filter_bank('db1', torch.float64)[0])
    torch.testing.assert_close(general, ours, rtol=0, atol=1e-12)


@pytest.mark.parametrize('wt_type', ['db1', 'db2', 'db4', 'sym4', 'coif1'])
def test_perfect_reconstruction_any_size(wt_type):
    bank, rec = wavelet_filter_bank(wt_type, torch.float64)
    for h, w in [(2, 2), (4, 6), (10, 8), (18, 34)]:
        x = torch.randn(1, 2, h, w, dtype=torch.float64)
        y = wavelet_analysis(x, bank)
        assert y.shape == (1, 2, 4, h // 2, w // 2)
        torch.testing.assert_close(wavelet_synthesis(y, rec), x, rtol=0, atol=1e-10)
        # orthogonal transform: energy is preserved
        torch.testing.assert_close(y.pow(2).sum(), x.pow(2).sum())
    if wt_type == 'db1':
        y = haar_analysis(x)
        torch.testing.assert_close(haar_synthesis(y), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize('wt_type', ['db2', 'sym4'])
def test_long_wavelet_layer_reconstructs_odd_sizes(wt_type):
    """Level conv = identity with scale 1 and base conv = 0: one level returns the input exactly
    (the published zero-padding borders would not)."""
    layer = WTConv(2, 2, 3, groups=2, wt_levels=1, wt_type=wt_type).double()
    with torch.no_grad():
        layer.base_conv.weight.zero_()
        layer.base_conv.bias.zero_()
        layer.wavelet_convs[0].weight.zero_()
        layer.wavelet_convs[0].weight[:, :, 1, 1] = 1
        layer.wavelet_scale[0].weight.fill_(1)
    for h, w in [(1, 1), (5, 9), (17, 6)]:
        x = torch.randn(2, 2, h, w, dtype=torch.float64)
        torch.testing.assert_close(layer(x), x, rtol=0, atol=1e-10)


def test_dropin_is_depthwise_wtconv_then_pointwise():
    torch.manual_seed(0)
    layer = WTConv(4, 8, 3, groups=2, wt_levels=2, bias=True).double()
    ref = PublishedWTConv2d(4, 3, 1, False, 2, filter_dtype=torch.float64).double()
    state = {k: v for k, v in layer.state_dict().items() if not k.startswith('pointwise')}
    ref.load_state_dict(state, strict=False)
    x = torch.randn(2, 4, 11, 9, dtype=torch.float64)
    expected = F.conv2d(ref(x), layer.pointwise.weight, layer.pointwise.bias, groups=2)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-10)
    # parameter count documented in the class docstring: C*k*k + C + L*(4*C*k*k + 4*C) + O*C/g + O
    c, o, k, levels, g = 4, 8, 3, 2, 2
    expected_params = c * k * k + c + levels * (4 * c * k * k + 4 * c) + o * c // g + o
    assert sum(p.numel() for p in layer.parameters()) == expected_params


def test_published_parameter_count_per_channel():
    layer = WTConv(10, 10, 5, groups=10, wt_levels=3)
    assert sum(p.numel() for p in layer.parameters()) == 10 * (27 + 104 * 3)


def test_dilation_dilates_every_depthwise_conv():
    torch.manual_seed(0)
    layer = WTConv(3, 3, 3, dilation=2, padding=2, groups=3, wt_levels=1).double()
    x = torch.randn(1, 3, 12, 12, dtype=torch.float64)
    base = F.conv2d(x, layer.base_conv.weight, layer.base_conv.bias, padding=2, dilation=2,
                    groups=3)
    bands = haar_analysis(x)
    filtered = F.conv2d(bands.reshape(1, 12, 6, 6), layer.wavelet_convs[0].weight,
                        padding=2, dilation=2, groups=12) * layer.wavelet_scale[0].weight
    filtered = filtered.reshape(1, 3, 4, 6, 6)
    torch.testing.assert_close(layer(x), base + haar_synthesis(filtered), rtol=0, atol=1e-10)


def test_filters_are_frozen_buffers_and_published_state_dict_loads():
    ref = PublishedWTConv2d(6, 5, 2, True, 3)
    state = ref.state_dict()
    assert {'wt_filter', 'iwt_filter', 'stride_filter'} <= set(state)   # as published at stride 2
    layer = WTConv(6, 6, 5, 2, groups=6, wt_levels=3)
    result = layer.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    names = [n for n, _ in layer.named_parameters()]
    assert not any('filter' in n for n in names)
    assert not any('filter' in n for n in layer.state_dict())
    assert {n for n, _ in layer.named_buffers()} == {'wt_filter', 'iwt_filter'}
    # filters of another wavelet are rejected with a message naming wt_type
    other = PublishedWTConv2d(6, 5, 1, True, 1, wt_type='db1').state_dict()
    other['wt_filter'] = other['wt_filter'] * 2
    with pytest.raises(RuntimeError, match='wt_type'):
        WTConv(6, 6, 5, groups=6, wt_levels=1).load_state_dict(other)


def test_filters_are_built_beside_the_weights_under_a_default_device():
    """Under ``with torch.device(...)`` / ``torch.set_default_device`` the fixed filters land on
    the weights' device, so a non-Haar layer (which convolves with them) runs there. On a
    machine without a GPU the other device is meta."""
    x = torch.randn(2, 4, 11, 9)
    ref = WTConv(4, 4, 5, groups=4, wt_type='db2', wt_levels=2)
    for device in ['meta'] + (['cuda'] if torch.cuda.is_available() else []):
        with torch.device(device):
            layer = WTConv(4, 4, 5, groups=4, wt_type='db2', wt_levels=2)
        assert layer.wt_filter.device == layer.iwt_filter.device == layer.base_conv.weight.device
        assert layer.base_conv.weight.device.type == device
        if device != 'meta':
            layer.load_state_dict(ref.state_dict())
            torch.testing.assert_close(layer(x.to(device)).cpu(), ref(x))


def test_filters_keep_full_precision_through_dtype_round_trips():
    """The fixed filters are rebuilt from float64 when a dtype conversion changes them, so
    .half().float() (or .to(bfloat16) and back) leaves a db2 layer's filters as a fresh
    .float() layer's, not rounded to half precision; a move keeps their dtype and values."""
    fresh = {dt: WTConv(4, 4, 3, groups=4, wt_levels=2, wt_type='db2').to(dt)
             for dt in (torch.float32, torch.float64, torch.float16)}
    for low in (torch.float16, torch.bfloat16):
        for dt in (torch.float32, torch.float64):
            layer = WTConv(4, 4, 3, groups=4, wt_levels=2, wt_type='db2').to(low).to(dt)
            for name in ('wt_filter', 'iwt_filter'):
                got, want = getattr(layer, name), getattr(fresh[dt], name)
                assert got.dtype == dt and torch.equal(got, want), (low, dt, name)
    half = fresh[torch.float16]
    assert half.wt_filter.dtype == torch.float16
    kept = half.wt_filter.clone()
    half.to('cpu')
    assert half.wt_filter.dtype == torch.float16 and torch.equal(half.wt_filter, kept)
    with torch.device('meta'):  # a conversion under a meta default device builds on the CPU
        half.float()
    assert half.wt_filter.device.type == 'cpu' and torch.equal(
        half.wt_filter, fresh[torch.float32].wt_filter)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_published_half_precision_checkpoint_loads(dtype):
    """A published db2 layer saved in half precision (its filters rounded) loads into a layer
    of that precision; another wavelet's filters are still refused."""
    torch.manual_seed(0)
    ref = PublishedWTConv2d(4, 3, wt_levels=1, wt_type='db2').to(dtype)
    layer = WTConv(4, 4, 3, groups=4, wt_levels=1, wt_type='db2').to(dtype)
    layer.load_state_dict(ref.state_dict())
    assert torch.equal(layer.base_conv.weight, ref.base_conv.weight)
    state = ref.state_dict()
    state['wt_filter'] = state['wt_filter'] * 2
    with pytest.raises(RuntimeError, match='wt_type'):
        WTConv(4, 4, 3, groups=4, wt_levels=1, wt_type='db2').to(dtype).load_state_dict(state)


@pytest.mark.parametrize('out_channels,groups', [(4, 4), (8, 2)])
def test_init_weights_matches_published(out_channels, groups):
    """The published part gets the published init; the 1x1 of the in != out form keeps
    whatever its host set (here: 7)."""
    layer = WTConv(4, out_channels, 5, groups=groups, wt_levels=2)
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(7.0)
    layer.init_weights()
    assert torch.all(layer.base_scale.weight == 1.0)
    assert all(torch.all(s.weight == 0.1) for s in layer.wavelet_scale)
    bound = 1 / np.sqrt(25)   # PyTorch default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for conv in [layer.base_conv, *layer.wavelet_convs]:
        assert conv.weight.abs().max() <= bound and conv.weight.std() > 0.2 * bound
    if layer.pointwise is not None:
        assert all(torch.all(p == 7.0) for p in layer.pointwise.parameters())


def test_channels_last_and_autocast():
    torch.manual_seed(0)
    layer = WTConv(8, 16, 3, wt_levels=2)
    x = torch.randn(2, 8, 19, 22)
    ref = layer(x)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), ref)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = layer(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    low.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_gradcheck_float64():
    for wt_type, stride in [('db1', 1), ('db1', 2), ('db2', 1)]:
        layer = WTConv(2, 2, 3, stride, groups=2, wt_levels=2, wt_type=wt_type).double()
        x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(layer, (x, ))


def test_mmcv_attributes():
    layer = WTConv(4, 8, 3, stride=2, padding=2, dilation=2, groups=1, bias=False)
    assert (layer.in_channels, layer.out_channels, layer.groups) == (4, 8, 1)
    assert layer.kernel_size == (3, 3) and layer.stride == (2, 2)
    assert layer.padding == (2, 2) and layer.dilation == (2, 2)
    assert layer.transposed is False and layer.output_padding == (0, 0)
    assert layer(torch.randn(1, 4, 9, 10)).shape == (1, 8, 5, 5)


def test_count_flops_matches_analytic():
    n, c, h, w, k = 2, 3, 10, 6, 5
    plain = WTConv(c, c, k, groups=c, wt_levels=0)
    assert plain.count_flops((n, c, h, w)) == n * c * k * k * h * w   # = depthwise F.conv2d
    one = WTConv(c, c, k, groups=c, wt_levels=1)
    transform = 4 * c * (h // 2) * (w // 2) * 4                        # 4C outputs x 2x2 taps
    level_conv = 4 * c * (h // 2) * (w // 2) * k * k
    assert one.count_flops((n, c, h, w)) == n * (c * k * k * h * w + 2 * transform + level_conv)


BAD_ARGS = [
    (dict(in_channels=0), 'in_channels'),
    (dict(out_channels=-2), 'out_channels'),
    (dict(kernel_size=0), 'kernel_size'),
    (dict(kernel_size=(3, 5)), 'kernel_size'),
    (dict(stride=0), 'stride'),
    (dict(dilation=0), 'dilation'),
    (dict(wt_levels=-1), 'wt_levels'),
    (dict(wt_levels=1.5), 'wt_levels'),
    (dict(wt_type='nope'), 'wt_type.*pywt.wavelist'),
    (dict(wt_type='bior2.2'), 'wt_type.*orthogonal'),
    (dict(groups=3), 'groups'),
    (dict(padding=0), 'padding'),
    (dict(padding='valid'), 'padding'),
    (dict(kernel_size=4, padding=2), 'padding'),
    (dict(kernel_size=4, padding=1), "padding=1 is not supported.*use padding=None or 'same'"),
    (dict(kernel_size=4, padding=(1, 1)), 'padding=1 is not supported'),   # 'same' is (1, 2)
    (dict(wt_levels=True), r'wt_levels must be an int, got True \(bool\)'),
    (dict(in_channels=True), r'in_channels must be an int, got True \(bool\)'),
    (dict(bias='auto'), "bias must be True or False, got 'auto'"),
    (dict(bias=None), 'bias must be True or False'), (dict(bias=1), 'bias must be True or False'),
]


def test_padding_mode_of_conv_module_is_named_in_the_error():
    """ConvModule with padding_mode='reflect' pads by itself and passes padding=0."""
    from mmcv.cnn import ConvModule
    with pytest.raises(ValueError, match="padding=0 is not supported.*padding_mode='zeros'"):
        ConvModule(4, 8, 3, padding=1, padding_mode='reflect', conv_cfg=dict(type='WTConv'))


@pytest.mark.parametrize('kwargs,match', BAD_ARGS)
def test_bad_arguments(kwargs, match):
    args = dict(in_channels=4, out_channels=8, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        WTConv(**args)


def test_bad_inputs():
    layer = WTConv(4, 4, 3)
    with pytest.raises(ValueError, match='4D'):
        layer(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match='in_channels=4'):
        layer(torch.randn(1, 3, 8, 8))


def test_shape_fuzzing_documented_shape_or_value_error():
    """Any size 1..97, channels, kernel, stride, dilation, groups, levels: the documented output
    shape (N, out, ceil(H/s), ceil(W/s)) or a ValueError, never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(h=st.integers(1, 97), w=st.integers(1, 97), cin=st.integers(0, 6),
           cout=st.integers(0, 6), k=st.integers(0, 6), s=st.integers(0, 3),
           d=st.integers(1, 3), g=st.integers(1, 3), levels=st.integers(-1, 4),
           wt=st.sampled_from(['db1', 'db2', 'haar', 'bogus']))
    def check(h, w, cin, cout, k, s, d, g, levels, wt):
        try:
            layer = WTConv(cin, cout, k, s, dilation=d, groups=g, wt_levels=levels, wt_type=wt)
        except ValueError:
            return
        out = layer(torch.randn(1, cin, h, w))
        assert out.shape == (1, cout, -(-h // s), -(-w // s))
        assert torch.isfinite(out).all()

    check()


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    layer = WTConv(4, 4, 5, groups=4, wt_levels=2)
    x = torch.randn(2, 4, 21, 18, requires_grad=True)
    eager = layer(x)
    (g_eager, ) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(layer)
    out = compiled(x)
    (g_comp, ) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_comp, g_eager, rtol=1e-5, atol=1e-5)
