"""OctaveConv: exactness against plainly written references, shapes, gradients, FLOPs, errors.

Oracles used here: ``F.conv2d``; a reference of the four paths written in this file with its own
pooling (pad + reshape + sum / valid-pixel count) and upsampling (``repeat_interleave``);
``torch.autograd.gradcheck``; ``torch.utils.flop_counter.FlopCounterMode`` (counts the convs the
forward actually runs); separate ``nn.BatchNorm2d`` modules per branch.
"""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from convzoo_mm.layers.octconv import (OctaveConv, OctaveConvModule, _octave_paths,
                                       octave_conv2d, octave_merge, octave_norm, split_channels)


# ------------------------------------------------------------------ independent reference
def ref_pool(t):
    """2x2 average over the pixels each (ceil-mode) window covers."""
    h, w = t.shape[-2:]
    ph, pw = h % 2, w % 2
    tp = F.pad(t, (0, pw, 0, ph))
    ones = F.pad(torch.ones(1, 1, h, w, dtype=t.dtype), (0, pw, 0, ph))
    hh, ww = (h + ph) // 2, (w + pw) // 2
    s = tp.reshape(*tp.shape[:-2], hh, 2, ww, 2).sum((-1, -3))
    c = ones.reshape(1, 1, hh, 2, ww, 2).sum((-1, -3))
    return s / c


def ref_up(t, size):
    return t.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :size[0], :size[1]]


def ref_paths(xh, xl, w, oh, stride, pad, dil, groups, depthwise):
    """The four paths as four separate convs: dict name -> (branch, tensor)."""
    def conv(x, wt, g):
        return F.conv2d(x, wt, None, 1, pad, dil, g)
    ih = xh.shape[1]
    c = 1 if depthwise else ih // groups
    has_low = oh < w.shape[0]
    paths = {}
    xh_s = xh if stride == 1 else ref_pool(xh)
    paths['HH'] = conv(xh_s, w[:oh, :c] if not depthwise else w[:oh], ih if depthwise else groups)
    if xl is not None and not depthwise:
        lh = conv(xl, w[:oh, c:], groups)
        paths['LH'] = ref_up(lh, paths['HH'].shape[-2:]) if stride == 1 else lh
    if has_low:
        if depthwise:
            paths['LL'] = conv(xl if stride == 1 else ref_pool(xl), w[oh:], xl.shape[1])
        else:
            paths['HL'] = conv(ref_pool(xh_s), w[oh:, :c], groups)
            if xl is not None:
                paths['LL'] = conv(xl if stride == 1 else ref_pool(xl), w[oh:, c:], groups)
    return paths


def ref_octave(xh, xl, w, b, oh, stride, pad, dil, groups, depthwise):
    p = ref_paths(xh, xl, w, oh, stride, pad, dil, groups, depthwise)
    yh = p['HH'] + p.get('LH', 0)
    yl = p['HL'] + p.get('LL', 0) if 'HL' in p else p.get('LL')
    if b is not None:
        yh = yh + b[:oh].view(1, -1, 1, 1)
        yl = None if yl is None else yl + b[oh:].view(1, -1, 1, 1)
    return yh, yl


def ref_dropin(m, x):
    ih, il = m.in_split
    xh, xl = x[:, :ih], (ref_pool(x[:, ih:]) if il else None)
    yh, yl = ref_octave(xh, xl, m.weight, m.bias, m.out_split[0], m.stride[0], m.padding[0],
                        m.dilation[0], m.groups, m.depthwise)
    return yh if yl is None else torch.cat([yh, ref_up(yl, yh.shape[-2:])], 1)


def plain_shape(m, x):
    return F.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups).shape


# (alpha_in, alpha_out), stride, groups ('dw' = depthwise), kernel, dilation, H, W
CASES = [c for c in itertools.product(
    [(0.0, 0.5), (0.5, 0.5), (0.25, 0.0), (0.5, 0.25), (0.25, 0.75)], [1, 2], [1, 2, 'dw'],
    [1, 3], [1, 2], [(7, 10), (8, 5), (8, 12)]) if c[2] != 'dw' or c[0][0] == c[0][1]]


def _make(alphas, stride, g, k, d, cin=8, cout=8, bias=True, split=False):
    groups = cin if g == 'dw' else g
    torch.manual_seed(0)
    return OctaveConv(cin, cout, k, stride, dilation=d, groups=groups, bias=bias,
                      alpha_in=alphas[0], alpha_out=alphas[1], split=split).double()


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize('stride,groups,k,d,bias', [
    (1, 1, 3, 1, True), (2, 1, 3, 1, False), (1, 2, 3, 2, True), (2, 4, 1, 1, True),
    (1, 8, 3, 1, True), (2, 8, 5, 3, False)])
@pytest.mark.parametrize('split', [False, True])
def test_alpha0_is_conv2d(stride, groups, k, d, bias, split):
    m = OctaveConv(8, 16, k, stride, dilation=d, groups=groups, bias=bias, alpha_in=0,
                   alpha_out=0, split=split)
    x = torch.randn(2, 8, 13, 10)
    ref = F.conv2d(x, m.weight, m.bias, stride, d * (k - 1) // 2, d, groups)
    assert torch.equal(m(x), ref)


@pytest.mark.parametrize('alphas,stride,g,k,d,hw', CASES)
def test_dropin_matches_reference(alphas, stride, g, k, d, hw):
    m = _make(alphas, stride, g, k, d)
    x = torch.randn(2, 8, *hw, dtype=torch.double)
    y = m(x)
    assert y.shape == plain_shape(m, x)
    torch.testing.assert_close(y, ref_dropin(m, x), rtol=0, atol=1e-11)


@pytest.mark.parametrize('path', ['HH', 'LH', 'HL', 'LL'])
@pytest.mark.parametrize('stride,groups', [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_each_path_alone(path, stride, groups):
    """Zero every weight block but one: the layer must give exactly that path."""
    m = _make((0.5, 0.5), stride, groups, 3, 1, cin=8, cout=12, bias=False, split=True)
    oh, c = m.out_split[0], m.in_split[0] // groups
    rows = slice(0, oh) if path[1] == 'H' else slice(oh, None)
    cols = slice(0, c) if path[0] == 'H' else slice(c, None)
    with torch.no_grad():
        keep = torch.zeros_like(m.weight)
        keep[rows, cols] = 1
        m.weight.mul_(keep)
    xh = torch.randn(2, 4, 10, 12, dtype=torch.double)
    xl = torch.randn(2, 4, 5, 6, dtype=torch.double)
    yh, yl = m((xh, xl))
    want = ref_paths(xh, xl, m.weight, oh, stride, 1, 1, groups, False)[path]
    got = yh if path[1] == 'H' else yl
    other = yl if path[1] == 'H' else yh
    torch.testing.assert_close(got, want, rtol=0, atol=1e-11)
    assert torch.count_nonzero(other) == 0


@pytest.mark.parametrize('alphas,stride,g', [((0.5, 0.5), 1, 1), ((0.5, 0.5), 2, 1),
                                             ((0.25, 0.5), 2, 2), ((0.5, 0.0), 1, 1),
                                             ((0.0, 0.5), 2, 1), ((0.5, 0.5), 2, 'dw')])
def test_dropin_and_split_agree(alphas, stride, g):
    m = _make(alphas, stride, g, 3, 1)
    x = torch.randn(2, 8, 11, 14, dtype=torch.double)
    y = m(x)
    m.split = True
    ih = m.in_split[0]
    xs = x if alphas[0] == 0 else (x[:, :ih], ref_pool(x[:, ih:]))
    ys = m(xs)
    torch.testing.assert_close(y, octave_merge(ys), rtol=0, atol=1e-12)
    if alphas[1] > 0:
        oh = m.out_split[0]
        assert ys[0].shape[1] == oh and ys[1].shape[1] == 8 - oh
        assert ys[1].shape[-2:] == ((ys[0].shape[-2] + 1) // 2, (ys[0].shape[-1] + 1) // 2)


@pytest.mark.parametrize('hw', [(15, 9), (16, 10)])
def test_channels_last_and_batch_independence(hw):
    m = _make((0.5, 0.5), 1, 1, 3, 1).float()
    x = torch.randn(3, 8, *hw)
    y = m(x)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), y, atol=1e-5, rtol=0)
    torch.testing.assert_close(m(x[1:2]), y[1:2], atol=1e-5, rtol=0)
    m.split = True
    xs = (x[:, :4].to(memory_format=torch.channels_last), ref_pool(x[:, 4:]))
    yh, yl = m(xs)
    yh.sum().backward()  # fused add on channels_last inputs, with gradients
    torch.testing.assert_close(octave_merge((yh, yl)), y, atol=1e-5, rtol=0)


def test_autocast_bf16_close_to_fp32():
    m = _make((0.5, 0.5), 2, 1, 3, 1).float()
    x = torch.randn(2, 8, 16, 17)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), m(x), atol=0.1, rtol=0.05)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize('stride', [1, 2])
def test_all_sizes_1_to_65(stride):
    """Every H, W in 1..65: the drop-in output has the plain conv's shape, and split-mode
    branches have (H', W') and (ceil(H'/2), ceil(W'/2))."""
    torch.manual_seed(0)
    m = OctaveConv(4, 4, 3, stride, alpha_in=0.5, alpha_out=0.5)
    ms = OctaveConv(4, 4, 3, stride, alpha_in=0.5, alpha_out=0.5, split=True)
    ms.load_state_dict(m.state_dict())
    with torch.no_grad():
        for h in range(1, 66):
            x = torch.randn(1, 4, h, 65)
            ref = F.conv2d(x, m.weight, None, stride, 1)
            for w in range(1, 66):
                xw = x[..., :w]
                y = m(xw)
                assert y.shape == ref[..., :(w - 1) // stride + 1].shape, (h, w)
                if w % 8 == 1 or h % 8 == 1:
                    yh, yl = ms((xw[:, :2], ref_pool(xw[:, 2:])))
                    assert yh.shape[-2:] == y.shape[-2:]
                    assert yl.shape[-2:] == ((y.shape[-2] + 1) // 2, (y.shape[-1] + 1) // 2)


def test_fuzz_shapes_hypothesis():
    hyp = pytest.importorskip('hypothesis')
    st = hyp.strategies

    @hyp.settings(max_examples=120, deadline=None, derandomize=True)
    @hyp.given(h=st.integers(1, 97), w=st.integers(1, 97), cin=st.integers(1, 12),
               cout=st.integers(1, 12), k=st.sampled_from([1, 2, 3, 5]),
               stride=st.sampled_from([1, 2, 3]), d=st.integers(1, 3),
               groups=st.sampled_from([1, 2, 3, 4, 'dw']),
               ai=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]),
               ao=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, -0.1]),
               split=st.booleans())
    def check(h, w, cin, cout, k, stride, d, groups, ai, ao, split):
        groups = cin if groups == 'dw' else groups
        try:
            m = OctaveConv(cin, cout, k, stride, dilation=d, groups=groups, alpha_in=ai,
                           alpha_out=ao, split=split)
        except ValueError:
            return
        x = torch.randn(1, cin, h, w)
        ih = m.in_split[0]
        if split and m.in_split[1]:
            x = (x[:, :ih], ref_pool(x[:, ih:]))
        with torch.no_grad():
            y = m(x)
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        if isinstance(y, tuple):
            assert y[0].shape == (1, m.out_split[0], ho, wo)
            assert y[1].shape == (1, m.out_split[1], (ho + 1) // 2, (wo + 1) // 2)
        else:
            want_c = cout if not split or m.out_split[1] == 0 else None
            assert y.shape == (1, want_c, ho, wo)

    check()


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize('alphas,stride,g,split', [
    ((0.5, 0.5), 1, 1, False), ((0.5, 0.5), 2, 1, False), ((0.5, 0.5), 1, 2, True),
    ((0.5, 0.5), 2, 'dw', True), ((0.0, 0.5), 2, 1, True), ((0.5, 0.0), 1, 1, True),
    ((0.5, 0.5), 2, 2, False)])
def test_gradcheck_float64(alphas, stride, g, split):
    m = _make(alphas, stride, g, 3, 1, cin=4, cout=4, split=split)
    ih = m.in_split[0]
    for hw in ((5, 6), (6, 8)):  # odd: generic upsample + crop; even: fused broadcast add
        _gradcheck_one(m, torch.randn(1, 4, *hw, dtype=torch.double, requires_grad=True),
                       ih, split, alphas)


def _gradcheck_one(m, x, ih, split, alphas):
    def fn(x, w, b):
        xs = (x[:, :ih], ref_pool(x[:, ih:])) if split and alphas[0] > 0 else x
        return octave_merge(torch.func.functional_call(m, {'weight': w, 'bias': b}, (xs,)))

    w = m.weight.detach().clone().requires_grad_(True)
    b = m.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ fused fast path
def _fused_and_paths(alphas, stride, k, d, bias, hw, n=3, cin=8, cout=12, dtype=torch.double,
                     memory_format=torch.contiguous_format, need=('x', 'w')):
    """Outputs and gradients of ``octave_conv2d`` (groups 1: the fused path with its hand-written
    backward) and of the path-by-path form under autograd, same inputs and upstream gradients."""
    torch.manual_seed(0)
    m = OctaveConv(cin, cout, k, stride, dilation=d, bias=bias, alpha_in=alphas[0],
                   alpha_out=alphas[1], split=True).to(dtype)
    ih, il = m.in_split
    x = torch.randn(n, cin, *hw, dtype=dtype)
    xs = [x[:, :ih], ref_pool(x[:, ih:]) if il else None]
    xs = [None if t is None else t.contiguous(memory_format=memory_format) for t in xs]
    params = [m.weight.detach().contiguous(memory_format=memory_format),
              None if m.bias is None else m.bias.detach()]
    args = (m.out_split[0], stride, m.padding[0], d, 1, False)
    results = []
    for fn in (octave_conv2d, _octave_paths):
        ins = [None if t is None else t.clone().requires_grad_('x' in need) for t in xs]
        ws = [None if t is None else t.clone().requires_grad_('w' in need) for t in params]
        y = [t for t in fn(*ins, *ws, *args) if t is not None]
        torch.manual_seed(1)
        gs = [torch.randn_like(t) for t in y]
        torch.autograd.backward(y, gs)
        results.append((y, [t.grad for t in ins + ws if t is not None and t.requires_grad]))
    return results


FUSED_CASES = list(itertools.product(
    [(0.5, 0.5), (0.0, 0.5), (0.5, 0.0), (0.25, 0.75)], [1, 2], [(1, 1), (3, 1), (3, 2)],
    [True, False], [(8, 12), (7, 10), (5, 5), (1, 3)]))


@pytest.mark.parametrize('alphas,stride,kd,bias,hw', FUSED_CASES)
def test_fused_path_equals_paths_float64(alphas, stride, kd, bias, hw):
    """The fused groups-1 path (GEMMs for 1x1, 2-3 convs on concatenated inputs, hand-written
    backward) against the four path convs under autograd: outputs, input/weight/bias gradients;
    odd and even sizes, stride 2, dilation, batch 3 (the per-sample GEMM accumulation)."""
    (y, g), (y_ref, g_ref) = _fused_and_paths(alphas, stride, kd[0], kd[1], bias, hw)
    assert len(y) == len(y_ref) and len(g) == len(g_ref)
    for a, b in zip(y + g, y_ref + g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _ref_up(t, size):
    """Nearest x2 upsampling cropped to ``size`` (repeat_interleave: independent of the layer)."""
    return t.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :size[0], :size[1]]


DROPIN_CASES = list(itertools.product(
    [(0.5, 0.5), (0.0, 0.5), (0.5, 0.0), (0.25, 0.75)], [1, 2], [(1, 1), (3, 2)],
    [(8, 12), (7, 5), (1, 3)], [torch.contiguous_format, torch.channels_last]))


@pytest.mark.parametrize('alphas,stride,kd,hw,fmt', DROPIN_CASES)
def test_dropin_fused_equals_reference(alphas, stride, kd, hw, fmt):
    """The drop-in layer's own Function (one pooled map, outputs written into the merged map,
    small 1x1 maps run channels_last inside) against split + pooling + the four path convs +
    upsample + cat under autograd, built from independent pieces (float64): output, input,
    weight and bias gradients, odd sizes, stride 2, both memory formats."""
    torch.manual_seed(0)
    m = OctaveConv(8, 12, kd[0], stride, dilation=kd[1], alpha_in=alphas[0],
                   alpha_out=alphas[1]).double()
    ih, oh = m.in_split[0], m.out_split[0]
    x = torch.randn(3, 8, *hw, dtype=torch.double).contiguous(memory_format=fmt)
    xa, wa, ba = (t.detach().clone().requires_grad_() for t in (x, m.weight, m.bias))
    y = torch.func.functional_call(m, {'weight': wa, 'bias': ba}, (xa,))
    assert type(y.grad_fn).__name__ == '_FusedOctaveDropInBackward'
    xb, wb, bb = (t.detach().clone().requires_grad_() for t in (x, m.weight, m.bias))
    x_l = ref_pool(xb[:, ih:]) if ih < 8 else None
    y_h, y_l = _octave_paths(xb[:, :ih], x_l, wb, bb, oh, stride, m.padding[0], kd[1], 1, False)
    ref = y_h if y_l is None else torch.cat([y_h, _ref_up(y_l, y_h.shape[-2:])], 1)
    assert y.shape == ref.shape
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    for a, b in ((y, ref), (xa.grad, xb.grad), (wa.grad, wb.grad), (ba.grad, bb.grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_path_is_taken():
    m = _make((0.5, 0.5), 1, 1, 1, 1, split=True)
    x = torch.randn(2, 8, 6, 6, dtype=torch.double, requires_grad=True)
    yh, yl = m((x[:, :4], ref_pool(x[:, 4:])))
    assert type(yh.grad_fn).__name__ == '_FusedOctaveConvBackward'
    assert yl.grad_fn is yh.grad_fn
    mg = _make((0.5, 0.5), 1, 2, 1, 1, split=True)  # grouped: the path-by-path form
    assert 'Fused' not in type(mg((x[:, :4], ref_pool(x[:, 4:])))[0].grad_fn).__name__


@pytest.mark.parametrize('need', [('x',), ('w',)])
@pytest.mark.parametrize('stride', [1, 2])
def test_fused_path_partial_gradients(need, stride):
    """Only input gradients (frozen weights) or only weight gradients (constant input)."""
    for k in (1, 3):
        (y, g), (y_ref, g_ref) = _fused_and_paths((0.5, 0.5), stride, k, 1, True, (6, 9),
                                                  need=need)
        assert len(g) == len(g_ref) == 2  # (x_high, x_low) or (weight, bias)
        for a, b in zip(y + g, y_ref + g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('k', [1, 3])
def test_fused_path_channels_last(stride, k):
    """channels_last inputs and weights (1x1: one GEMM over all pixels; channel slices read in
    place) and the drop-in layer on a channels_last map, against NCHW."""
    for hw in ((8, 12), (7, 10)):
        (y, g), (y_ref, g_ref) = _fused_and_paths((0.5, 0.5), stride, k, 1, True, hw,
                                                  dtype=torch.float,
                                                  memory_format=torch.channels_last)
        for a, b in zip(y + g, y_ref + g_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        m = _make((0.5, 0.5), stride, 1, k, 1).float().to(memory_format=torch.channels_last)
        x = torch.randn(2, 8, *hw)
        xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        xn = x.clone().requires_grad_()
        m(xc).square().sum().backward()
        gw = m.weight.grad.clone()
        m.weight.grad = None
        m(xn).square().sum().backward()
        torch.testing.assert_close(xc.grad, xn.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gw, m.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('k', [1, 3])
def test_fused_path_autocast_bf16(stride, k):
    """Under CPU autocast the fused path computes in bfloat16 like autocast's conv2d: bf16
    outputs close to the path-by-path form under autocast, float32 gradients close too."""
    torch.manual_seed(0)
    m = _make((0.5, 0.5), stride, 1, k, 1, split=True).float()
    x = torch.randn(2, 8, 16, 17)
    xs = (x[:, :4].requires_grad_(), ref_pool(x[:, 4:]).requires_grad_())
    out = {}
    for name, fn in (('fused', octave_conv2d), ('paths', _octave_paths)):
        w = m.weight.detach().clone().requires_grad_()
        ins = [t.detach().clone().requires_grad_() for t in xs]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = fn(*ins, w, m.bias, m.out_split[0], stride, m.padding[0], 1, 1, False)
        assert all(t.dtype == torch.bfloat16 for t in y)
        sum(t.float().square().sum() for t in y).backward()
        out[name] = list(y) + [t.grad for t in ins] + [w.grad]
        assert all(t.dtype == torch.float for t in out[name][2:])
    for a, b in zip(out['fused'], out['paths']):
        scale = b.float().abs().max()
        torch.testing.assert_close(a.float() / scale, b.float() / scale, rtol=0, atol=3e-2)


@pytest.mark.parametrize('stride', [1, 2])
def test_fused_path_gradcheck_1x1(stride):
    """float64 gradcheck of the hand-written backward on the GEMM (1x1) paths, with bias."""
    for alphas in ((0.5, 0.5), (0.0, 0.5), (0.5, 0.0)):
        m = _make(alphas, stride, 1, 1, 1, cin=4, cout=4, split=True)
        for hw in ((5, 6), (6, 8)):
            _gradcheck_one(m, torch.randn(2, 4, *hw, dtype=torch.double, requires_grad=True),
                           m.in_split[0], True, alphas)


# ------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize('alphas,stride,g,k', [
    ((0.5, 0.5), 1, 1, 3), ((0.5, 0.5), 2, 1, 3), ((0.0, 0.5), 1, 1, 1), ((0.5, 0.0), 1, 1, 1),
    ((0.5, 0.0), 2, 1, 1), ((0.25, 0.75), 2, 2, 3), ((0.5, 0.5), 1, 'dw', 3), ((0.0, 0.0), 2, 1, 3),
    ((0.125, 0.125), 1, 2, 5)])
@pytest.mark.parametrize('split', [False, True])
def test_count_flops_matches_executed_convs(alphas, stride, g, k, split):
    m = _make(alphas, stride, g, k, 1, cin=16, cout=32 if g != 'dw' else 16, split=split)
    x = torch.randn(2, 16, 29, 22, dtype=torch.double)
    ih = m.in_split[0]
    xs = (x[:, :ih], ref_pool(x[:, ih:])) if split and alphas[0] > 0 else x
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(xs)
    executed = counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC
    assert m.count_flops(tuple(x.shape)) == executed
    if split and alphas[0] > 0:
        assert m.count_flops((tuple(xs[0].shape), tuple(xs[1].shape))) == executed
    out = F.conv2d(x, m.weight, None, stride, m.padding, 1, m.groups)
    plain = out.numel() * m.weight[0].numel()
    if alphas == (0.0, 0.0):
        assert executed == plain
    elif stride == 2 and alphas[1] == 0:
        assert executed == plain  # merging to one full output at stride 2 costs a plain conv
    else:
        assert executed < plain


# ------------------------------------------------------------------ state, init, errors
def test_plain_checkpoint_loads_and_names():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    m = OctaveConv(8, 16, 3, padding=1, alpha_in=0.5, alpha_out=0.5)
    assert set(m.state_dict()) == {'weight', 'bias'}
    m.load_state_dict(conv.state_dict())
    assert torch.equal(m.weight, conv.weight)
    m.init_weights()
    assert torch.count_nonzero(m.bias) == 0 and abs(m.weight.std().item() - (2 / 144) ** .5) < .05
    wide = OctaveConv(64, 256, 1, alpha_in=0.5, alpha_out=0.5)   # fan_out 256, fan_in 64
    wide.init_weights()
    assert abs(wide.weight.std().item() / (2 / 256) ** .5 - 1) < .05


@pytest.mark.parametrize('kwargs,word', [
    (dict(alpha_in=1.0), 'alpha_in'), (dict(alpha_out=-0.1), 'alpha_out'),
    (dict(alpha_in=0.01), 'alpha_in'), (dict(alpha_out=0.99), 'alpha_out'),
    (dict(stride=3), 'stride'), (dict(kernel_size=4), 'kernel_size'),
    (dict(kernel_size=(3, 5)), 'kernel_size'), (dict(padding=0), 'padding'),
    (dict(groups=3), 'groups'), (dict(groups=4, alpha_in=0.25), 'groups'),
    (dict(groups=8, alpha_in=0.5, alpha_out=0.25), 'alpha_out'),
    (dict(in_channels=0), 'in_channels'), (dict(out_channels=2.0), 'out_channels'),
    (dict(split='yes'), 'split'), (dict(dilation=0), 'dilation'),
    (dict(in_channels=1), r'use alpha_in=0 \(one channel cannot be split\)$')])
def test_bad_arguments(kwargs, word):
    args = dict(in_channels=8, out_channels=8, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        OctaveConv(**args)


def test_bad_inputs():
    m = OctaveConv(8, 8, 3)
    for bad in (torch.randn(8, 5, 5), torch.randn(1, 7, 5, 5), (torch.randn(1, 4, 5, 5),) * 2):
        with pytest.raises(ValueError):
            m(bad)
    ms = OctaveConv(8, 8, 3, split=True)
    good_h, good_l = torch.randn(1, 4, 9, 9), torch.randn(1, 4, 5, 5)
    for bad in (torch.randn(1, 8, 9, 9), (good_h, torch.randn(1, 4, 4, 5)),
                (good_h, torch.randn(1, 3, 5, 5)), (good_h,), (good_h, good_l[..., 0])):
        with pytest.raises(ValueError):
            ms(bad)
    with pytest.raises(ValueError, match='alpha_in=0'):
        OctaveConv(8, 8, 3, alpha_in=0, split=True)((good_h, good_l))


@pytest.mark.parametrize('hw', [(6, 8), (7, 8), (6, 9), (1, 1), (3, 4)])
def test_pool_and_fused_upsample_add_match_aten(hw):
    """The fast pooling / fused upsample-add against aten's avg-pool and interpolate, values
    and gradients (float64 gradcheck)."""
    from convzoo_mm.layers.octconv import octave_add_upsampled, octave_pool
    x = torch.randn(2, 3, *hw, dtype=torch.double, requires_grad=True)
    ref = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    torch.testing.assert_close(octave_pool(x), ref, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(octave_pool, (x,))
    low = torch.randn(2, 3, (hw[0] + 1) // 2, (hw[1] + 1) // 2, dtype=torch.double,
                      requires_grad=True)
    torch.testing.assert_close(octave_add_upsampled(x, low), x + ref_up(low, hw), rtol=0,
                               atol=0)
    assert torch.autograd.gradcheck(octave_add_upsampled, (x, low))


def test_split_rule():
    assert split_channels(64, 0.5) == (32, 32)
    assert split_channels(64, 0.125) == (56, 8)
    assert split_channels(10, 0.25) == (8, 2)   # round(2.5) = 2 (banker's), documented rule
    assert split_channels(7, 0.0) == (7, 0)


# ------------------------------------------------------------------ norm per branch
def _batch_norm_xd():
    from mmengine.model.utils import _BatchNormXd  # what revert_sync_batchnorm makes of SyncBN
    return _BatchNormXd


@pytest.mark.parametrize('momentum', [0.3, None])  # None: cumulative average, 1 / steps
@pytest.mark.parametrize('cls', [nn.BatchNorm2d, nn.SyncBatchNorm, 'xd'])
def test_octave_norm_equals_separate_batchnorms(cls, momentum):
    """BN (sliced F.batch_norm), SyncBN (called with sliced state; single process, so it
    normalises like BN) and mmengine's reverted SyncBN against two separate BatchNorm2d
    modules: outputs, running statistics, step count."""
    cls = _batch_norm_xd() if cls == 'xd' else cls
    bn = cls(10, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    bh, bl = nn.BatchNorm2d(6, momentum=momentum), nn.BatchNorm2d(4, momentum=momentum)
    for b, sl in ((bh, slice(0, 6)), (bl, slice(6, 10))):
        b.load_state_dict({k: (v[sl] if v.dim() else v) for k, v in bn.state_dict().items()})
    xh, xl = torch.randn(3, 6, 9, 7) * 2 + 1, torch.randn(3, 4, 5, 4) - 1
    for step in range(3):  # different statistics per step, so the averaging factor matters
        xh_s, xl_s = xh * (step + 1), xl - step
        yh, yl = octave_norm(bn, (xh_s, xl_s))
        torch.testing.assert_close(yh, bh(xh_s))
        torch.testing.assert_close(yl, bl(xl_s))
    torch.testing.assert_close(bn.running_mean, torch.cat([bh.running_mean, bl.running_mean]))
    torch.testing.assert_close(bn.running_var, torch.cat([bh.running_var, bl.running_var]))
    assert int(bn.num_batches_tracked) == int(bl.num_batches_tracked) == 3
    bn.eval(), bh.eval(), bl.eval()
    yh, yl = octave_norm(bn, (xh, xl))
    torch.testing.assert_close(yh, bh(xh))
    torch.testing.assert_close(yl, bl(xl))


@pytest.mark.parametrize('train', [True, False])
def test_octave_norm_without_running_statistics(train):
    """BN with track_running_stats=False normalises with the batch statistics in eval too."""
    bn = nn.BatchNorm2d(10, track_running_stats=False).train(train)
    bh = nn.BatchNorm2d(6, track_running_stats=False).train(train)
    bl = nn.BatchNorm2d(4, track_running_stats=False).train(train)
    xh, xl = torch.randn(2, 6, 8, 8) + 1, torch.randn(2, 4, 4, 4) * 3
    yh, yl = octave_norm(bn, (xh, xl))
    torch.testing.assert_close(yh, bh(xh))
    torch.testing.assert_close(yl, bl(xl))


def test_octave_norm_generic_module_path():
    """GroupNorm is called with its state sliced: per-branch GN."""
    gn = nn.GroupNorm(2, 8)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2)
        gn.bias.uniform_(-1, 1)
    xh, xl = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)
    yh, yl = octave_norm(gn, (xh, xl))
    torch.testing.assert_close(yh, F.group_norm(xh, 2, gn.weight[:4], gn.bias[:4]))
    torch.testing.assert_close(yl, F.group_norm(xl, 2, gn.weight[4:], gn.bias[4:]))


def test_octave_conv_module_split_mode():
    pytest.importorskip('mmcv.cnn')
    torch.manual_seed(0)
    m = OctaveConvModule(8, 12, 3, stride=2, alpha_in=0.5, alpha_out=0.5,
                         norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    assert m.norm_name == 'bn' and m.conv.bias is None
    xh, xl = torch.randn(2, 4, 10, 10), torch.randn(2, 4, 5, 5)
    yh, yl = m((xh, xl))
    ch, cl = m.conv((xh, xl))
    bh = F.batch_norm(ch, None, None, m.bn.weight[:6], m.bn.bias[:6], True)
    bl = F.batch_norm(cl, None, None, m.bn.weight[6:], m.bn.bias[6:], True)
    torch.testing.assert_close(yh, bh.relu())
    torch.testing.assert_close(yl, bl.relu())


# ------------------------------------------------------------------ mm contract
def test_mmcv_contract():
    cnn = pytest.importorskip('mmcv.cnn')
    import convzoo_mm  # noqa: F401  (registration)
    cfg = dict(type='OctaveConv', alpha_in=0.5, alpha_out=0.5)
    conv = cnn.build_conv_layer(cfg, 4, 8, 3, stride=1, padding=2, dilation=2, groups=1,
                                bias=True)
    assert isinstance(conv, OctaveConv)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.transposed, conv.output_padding, conv.groups) == (
        4, 8, (3, 3), (1, 1), (2, 2), (2, 2), False, (0, 0), 1)
    module = cnn.ConvModule(4, 8, 3, padding=2, dilation=2, conv_cfg=cfg,
                            norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    module.init_weights()
    x = torch.randn(2, 4, 11, 12)
    y = module(x)
    assert y.shape == (2, 8, 11, 12)
    ref = F.relu(module.bn(ref_dropin(module.conv, x)))
    torch.testing.assert_close(y, ref)
    down = cnn.ConvModule(4, 8, 3, stride=2, padding=1, conv_cfg=cfg)
    assert down(x).shape == F.conv2d(x, torch.zeros(8, 4, 3, 3), stride=2, padding=1).shape


# ------------------------------------------------------------------ export / compile
@pytest.mark.slow
def test_torch_compile_matches_eager():
    m = _make((0.5, 0.5), 2, 1, 3, 1).float()
    x = torch.randn(2, 8, 13, 16)
    torch.testing.assert_close(torch.compile(m)(x), m(x), atol=1e-5, rtol=1e-5)


def test_dropin_in_mmdet_slots():
    """conv_cfg/dcn slots of mmdet's ResNet (Bottleneck 3x3) and FPN take the drop-in layer:
    same output shapes as the plain model on odd sizes, finite gradients into the octave convs."""
    bb = pytest.importorskip('mmdet.models.backbones')
    necks = pytest.importorskip('mmdet.models.necks')
    import convzoo_mm  # noqa: F401
    cfg = dict(type='OctaveConv', alpha_in=0.5, alpha_out=0.5)
    kw = dict(depth=50, stem_channels=16, base_channels=16)
    oct_bb = bb.ResNet(dcn=cfg, stage_with_dcn=(True, True, True, True), **kw)
    plain_bb = bb.ResNet(**kw)
    fpn = necks.FPN([64, 128, 256, 512], 32, 4, conv_cfg=cfg)
    assert sum(isinstance(m, OctaveConv) for m in oct_bb.modules()) == 16
    x = torch.randn(1, 3, 67, 93)
    outs = oct_bb(x)
    assert [o.shape for o in outs] == [o.shape for o in plain_bb(x)]
    feats = fpn(outs)
    assert [f.shape[-2:] for f in feats] == [o.shape[-2:] for o in outs]
    sum(f.sum() for f in feats).backward()
    grads = [m.weight.grad for m in list(oct_bb.modules()) + list(fpn.modules())
             if isinstance(m, OctaveConv)]
    assert len(grads) == 24 and all(g is not None and torch.isfinite(g).all() for g in grads)
