"""The C++ CPU kernels (convzoo_mm/ops/csrc/cpu_kernels.cpp) against independent oracles:
PyTorch's own conv backward for the depthwise weight gradient, pywavelets and the tensor-op
Haar path for the transforms, avg_pool2d and its autograd adjoint for OctaveConv's resampling,
F.unfold for DRConv's region tap mix, gradcheck for the autograd
wrappers, and the whole WTConv and DRConv layers with the kernels against the layers without
them."""
import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from convzoo_mm.layers import DRConv, OctaveConv, WTConv
from convzoo_mm.layers import drconv as drconv_module
from convzoo_mm.layers import wtconv as wtconv_mod
from convzoo_mm.ops import cpu_kernels


def test_extension_is_built():
    assert cpu_kernels.AVAILABLE, (
        'convzoo_mm._C is not built: run `pip install --no-build-isolation --no-deps -e .` '
        '(tools/setup_env.sh does it; needs a C++ compiler)')


needs_ext = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason='convzoo_mm._C not built '
                               '(test_extension_is_built fails)')


def _aten_weight_grad(g, x, k, d, p):
    return torch.ops.aten.convolution_backward(
        g, x, torch.zeros(x.shape[1], 1, k, k, dtype=x.dtype), None, [1, 1], [p, p], [d, d],
        False, [0, 0], x.shape[1], [False, True, False])[1]


@needs_ext
@pytest.mark.parametrize('k,d', [(1, 1), (3, 1), (3, 3), (5, 1), (5, 2), (7, 1), (9, 1)])
@pytest.mark.parametrize('channels', [1, 7, 8, 13, 40])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_depthwise_weight_grad_equals_pytorch(k, d, channels, dtype):
    """k 3/5/7 run the unrolled kernel, 1 and 9 the generic one; channel counts cover whole
    vectors, tails and fewer channels than a vector; maps smaller than the kernel too."""
    gen = torch.Generator().manual_seed(k * 100 + channels)
    p = d * (k - 1) // 2
    for n, h, w in [(2, 9, 14), (1, 1, 2), (3, 5, 3)]:
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(n, channels, h, w, dtype=dtype, generator=gen).contiguous(
                memory_format=fmt)
            g = torch.randn(n, channels, h, w, dtype=dtype, generator=gen)
            ours = cpu_kernels.depthwise_weight_grad(g, x, k, d, p)
            ref = _aten_weight_grad(g, x, k, d, p)
            assert ours.shape == ref.shape == (channels, 1, k, k)
            tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5,
                                                                                atol=1e-5)
            torch.testing.assert_close(ours, ref, **tol)


@needs_ext
def test_depthwise_conv2d_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: cpu_kernels.depthwise_conv2d(*a, 2, 2), (x, w, b))
    y = cpu_kernels.depthwise_conv2d(x, w, b, 2, 2)
    assert y.grad_fn.name() == '_DepthwiseConv2dBackward'      # the C++ path really ran
    torch.testing.assert_close(y, F.conv2d(x, w, b, 1, 2, 2, 5), rtol=0, atol=0)


def test_depthwise_conv2d_falls_back_off_its_domain():
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    y = cpu_kernels.depthwise_conv2d(x, w, None, 0)          # not 'same' padding: F.conv2d
    assert y.shape == (1, 4, 4, 4) and 'DepthwiseConv2d' not in y.grad_fn.name()
    g = torch.randn_like(y)
    want = F.conv2d(x, w, None, 1, 0, 1, 4)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(want, (x, w), g)):
        torch.testing.assert_close(a, b)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = cpu_kernels.depthwise_conv2d(x, w, None, 1)
    assert 'DepthwiseConv2d' not in y.grad_fn.name()
    y = cpu_kernels.depthwise_conv2d(x.half().detach(), w.half(), None, 1)
    assert 'DepthwiseConv2d' not in y.grad_fn.name()


@needs_ext
@pytest.mark.parametrize('h,w', [(10, 14), (9, 7), (1, 1), (2, 5)])
def test_haar_analysis_kernel_equals_pywavelets(h, w):
    """Odd sizes are zero-padded by one row/column at the bottom/right."""
    x = np.random.default_rng(h * w).normal(size=(2, 3, h, w))
    ours = cpu_kernels.haar_analysis_cl(torch.from_numpy(x)).permute(0, 3, 4, 1, 2).numpy()
    padded = np.pad(x, ((0, 0), (0, 0), (0, h % 2), (0, w % 2)))
    ll, (ch, cv, cd) = pywt.dwt2(padded, 'haar', axes=(-2, -1))
    for band, ref in enumerate([ll, ch, cv, cd]):
        np.testing.assert_allclose(ours[:, :, band], ref, rtol=0, atol=1e-12)


@needs_ext
def test_haar_analysis_kernel_reads_any_strides():
    """The next level reads the LL band in place (channel stride 4), and NCHW input works."""
    mem = torch.randn(2, 11, 9, 5, 4, dtype=torch.float64)        # bands' memory (N, h, w, C, 4)
    ll = mem.permute(0, 3, 4, 1, 2)[:, :, 0]                       # (2, 5, 11, 9), c stride 4
    assert ll.stride(1) == 4
    torch.testing.assert_close(cpu_kernels.haar_analysis_cl(ll),
                               cpu_kernels.haar_analysis_cl(ll.contiguous()), rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize('size', [(10, 14), (9, 13), (1, 2)])
def test_haar_synthesis_kernel_equals_tensor_ops(size, monkeypatch):
    """Against the tensor-op path (the fallback), with the LL extra, the crop and the add."""
    torch.manual_seed(0)
    hh, ww = size
    h, w = (hh + 1) // 2, (ww + 1) // 2
    y = torch.randn(2, 3, 4, h, w, dtype=torch.float64)
    extra = torch.randn(2, 3, h, w, dtype=torch.float64)
    add = torch.randn(2, 3, hh, ww, dtype=torch.float64)
    fast = [wtconv_mod._haar_synthesis(y, e, size, a) for e, a in
            [(None, None), (extra, None), (extra, add)]]
    monkeypatch.setattr(cpu_kernels, 'AVAILABLE', False)
    slow = [wtconv_mod._haar_synthesis(y, e, size, a) for e, a in
            [(None, None), (extra, None), (extra, add)]]
    for a, b in zip(fast, slow):
        assert a.shape == (2, 3, hh, ww)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@needs_ext
@pytest.mark.parametrize('size', [(8, 6), (7, 9), (1, 1)])
def test_haar_transforms_invert_and_gradcheck(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    bands = wtconv_mod.haar_analysis(x)
    torch.testing.assert_close(wtconv_mod.haar_synthesis(bands, size=size), x, rtol=0, atol=1e-12)
    h, w = bands.shape[-2:]
    extra = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    add = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(wtconv_mod.haar_analysis, (x, ))
    y = bands.detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c: wtconv_mod.haar_synthesis(a, b, size, c), (y, extra, add))


@pytest.mark.parametrize('case', [
    dict(shape=(2, 8, 17, 23), levels=3, k=5),
    dict(shape=(2, 8, 16, 16), levels=2, k=3, dilation=2),
    dict(shape=(1, 6, 13, 10), levels=2, k=5, stride=2),
    dict(shape=(1, 6, 13, 10), levels=1, k=3, stride=3),
    dict(shape=(2, 4, 12, 9), levels=2, k=4),                  # even kernel: conv falls back
    dict(shape=(2, 4, 12, 12), levels=2, k=5, out=6, groups=2),
    dict(shape=(1, 4, 7, 7), levels=0, k=5),
    dict(shape=(1, 4, 9, 9), levels=2, k=5, nchw=True),
])
def test_layer_with_kernels_equals_layer_without(case, monkeypatch):
    """float32 outputs and all gradients, C++ kernels vs plain PyTorch (same module)."""
    torch.manual_seed(0)
    c = case['shape'][1]
    layer = WTConv(c, case.get('out', c), case['k'], case.get('stride', 1),
                   dilation=case.get('dilation', 1), groups=case.get('groups', c),
                   wt_levels=case['levels'], impl='torch')
    for p in layer.parameters():
        p.data.normal_()
    fmt = torch.contiguous_format if case.get('nchw') else torch.channels_last
    x = torch.randn(case['shape']).contiguous(memory_format=fmt).requires_grad_()
    _same_with_and_without_kernels(layer, x, monkeypatch, 2e-5)


def _same_with_and_without_kernels(layer, x, monkeypatch, rel):
    """Output and every gradient of ``layer(x)`` (random upstream gradient) with the C++
    kernels and then with plain PyTorch (same module): equal within ``rel`` of each result's
    scale (float32 sums in another order)."""
    def run():
        y = layer(x)
        up = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        wanted = [t for t in [x] + list(layer.parameters()) if t.requires_grad]
        return [y] + list(torch.autograd.grad(y, wanted, up))

    fast = run()
    monkeypatch.setattr(cpu_kernels, 'AVAILABLE', False)
    slow = run()
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= rel * b.abs().max(), (a - b).abs().max()


def _tap_case(case, dtype, part):
    """Padded channels-last samples (N, 11, 14, C), coefficients (N, B, k*k) and a random
    1/``part`` of the output positions in random order, for a tap-mix test case."""
    gen = torch.Generator().manual_seed(case['c'] * 10 + case['bases'])
    c, k, nb, n = case['c'], case['k'], case['bases'], case.get('n', 3)
    s, d, groups = case.get('stride', 1), case.get('dilation', 1), case.get('groups', 1)
    xp = torch.randn(n, 11, 14, c, dtype=dtype, generator=gen)
    ho, wo = (11 - d * (k - 1) - 1) // s + 1, (14 - d * (k - 1) - 1) // s + 1
    pos = torch.randperm(n * ho * wo, generator=gen)[:max(1, n * ho * wo // part)]
    coef = torch.randn(n, nb, k * k, dtype=dtype, generator=gen)
    return gen, xp, coef, pos, (c, k, nb, n, s, d, groups, ho, wo)


def _unfolded_taps(xp, pos, k, s, d, groups):
    """The taps of positions ``pos`` of padded channels-last ``xp`` from F.unfold (taps ordered
    (ty, tx) per channel): (G, Cg, k*k, J)."""
    n, c = xp.shape[0], xp.shape[-1]
    unf = F.unfold(xp.permute(0, 3, 1, 2), k, dilation=d, stride=s)  # (N, C*k*k, L)
    taps = unf.view(n, groups, c // groups, k * k, -1).permute(1, 2, 3, 0, 4)
    return taps.reshape(groups, c // groups, k * k, -1)[..., pos]


@needs_ext
@pytest.mark.parametrize('case', [
    dict(c=16, k=3, bases=9),                                 # m=8 paper generator: 2 chunks
    dict(c=13, k=3, bases=5, stride=2, n=1),                  # channel tail, m=4, one sample
    dict(c=12, k=3, bases=1, dilation=2, groups=3),           # Cg=4: fewer than a vector
    dict(c=24, k=5, bases=17, groups=2, stride=3, n=2),       # 3 chunks
    dict(c=8, k=1, bases=2),
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_region_tap_mix_equals_unfold(case, dtype):
    """u[g, j, b, c] = sum_t coef[n, b, t] * tap t of position pos[j] (of sample n), against
    F.unfold (taps ordered (ty, tx) per channel) on a random subset of the batch's positions in
    random order; also in the one-sample form (xp 3-D, coef 2-D) and into a reused buffer."""
    gen, xp, coef, pos, (c, k, nb, n, s, d, groups, ho, wo) = _tap_case(case, dtype, 3)
    ours = cpu_kernels.region_tap_mix(xp, pos, coef, k, s, d, (ho, wo), groups)
    taps = _unfolded_taps(xp, pos, k, s, d, groups)
    ref = torch.einsum('jbt,gctj->gjbc', coef[pos // (ho * wo)], taps)
    assert ours.shape == (groups, pos.numel(), nb, c // groups)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, ref, **tol)
    buf = torch.full(ref.shape, float('nan'), dtype=dtype)  # reused buffer: all written
    into = cpu_kernels.region_tap_mix(xp, pos, coef, k, s, d, (ho, wo), groups, out=buf)
    assert into.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(buf, ref, **tol)
    first = pos[pos < ho * wo]  # the one-sample form
    torch.testing.assert_close(
        cpu_kernels.region_tap_mix(xp[0], first, coef[0], k, s, d, (ho, wo), groups),
        ref[:, pos < ho * wo], **tol)


@needs_ext
@pytest.mark.parametrize('case', [
    dict(c=16, k=3, bases=9),                                 # m=8: 2 chunks of bases / taps
    dict(c=13, k=3, bases=5, stride=2, n=1),                  # channel tail, m=4
    dict(c=12, k=3, bases=1, dilation=2, groups=3),           # Cg=4: fewer than a vector
    dict(c=24, k=5, bases=17, groups=2, stride=3, n=2),       # 3 chunks of bases / 25 taps
    dict(c=8, k=1, bases=2),
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_region_tap_mix_adjoints_equal_autograd(case, dtype):
    """The two adjoints of the tap mix against autograd through its tensor-op form (F.unfold and
    an einsum): ``region_tap_mix_grad_input_`` adds dL/dxp into a gradient that already holds
    values (overlapping windows, stride, dilation, groups), ``region_tap_mix_grad_coef`` gives
    each position's coefficient gradient (checked per row with an einsum, and summed per sample
    against autograd's dL/dcoef); positions in random order, some repeated."""
    gen, xp, coef, pos, (c, k, nb, n, s, d, groups, ho, wo) = _tap_case(case, dtype, 2)
    pos = torch.cat([pos, pos[:3]])  # a position twice: its gradient counts twice
    du = torch.randn(groups, pos.numel(), nb, c // groups, dtype=dtype, generator=gen)

    xr, cr = xp.clone().requires_grad_(), coef.clone().requires_grad_()
    taps = _unfolded_taps(xr, pos, k, s, d, groups)
    u = torch.einsum('jbt,gctj->gjbc', cr[pos // (ho * wo)], taps)
    ref_x, ref_coef = torch.autograd.grad(u, [xr, cr], du, retain_graph=True)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-4)

    start = torch.randn(xp.shape, dtype=dtype, generator=gen)
    grad_xp = start.clone()
    cpu_kernels.region_tap_mix_grad_input_(grad_xp, pos, coef, du, k, s, d, (ho, wo), groups)
    torch.testing.assert_close(grad_xp, start + ref_x, **tol)

    rows = cpu_kernels.region_tap_mix_grad_coef(xp, pos, du, k, s, d, (ho, wo), groups)
    assert rows.shape == (pos.numel(), nb, k * k)
    torch.testing.assert_close(rows, torch.einsum('gjbc,gctj->jbt', du, taps.detach()), **tol)
    summed = torch.zeros_like(coef).index_add_(0, pos // (ho * wo), rows)
    torch.testing.assert_close(summed, ref_coef, **tol)

    first = pos[pos < ho * wo]  # the one-sample form (xp 3-D, coef 2-D)
    one = torch.zeros_like(xp[0])
    cpu_kernels.region_tap_mix_grad_input_(one, first, coef[0], du[:, pos < ho * wo].contiguous(),
                                           k, s, d, (ho, wo), groups)
    ref_one = torch.autograd.grad(u, xr, du * (pos < ho * wo).view(1, -1, 1, 1).to(dtype))[0]
    torch.testing.assert_close(one, ref_one[0], **tol)


@needs_ext
def test_region_tap_mix_adjoints_reject_bad_arguments():
    xp, coef = torch.randn(5, 5, 4), torch.randn(3, 9)
    pos = torch.tensor([0, 8])
    with pytest.raises(RuntimeError, match=r'du must be a contiguous \(1, 2, B, 4\) CPU tensor '
                       r"of xp's dtype with B = coef.size\(-2\), got \[1, 2, 2, 4\]"):
        cpu_kernels.region_tap_mix_grad_input_(xp, pos, coef, torch.randn(1, 2, 2, 4), 3, 1, 1,
                                               (3, 3), 1)
    with pytest.raises(RuntimeError, match=r'du must be a contiguous \(2, 2, B, 2\)'):
        cpu_kernels.region_tap_mix_grad_coef(xp, pos, torch.randn(1, 2, 3, 4), 3, 1, 1, (3, 3), 2)
    with pytest.raises(RuntimeError, match='region_tap_mix_grad_coef: position out of range'):
        cpu_kernels.region_tap_mix_grad_coef(xp, torch.tensor([9]), torch.randn(1, 1, 3, 4), 3, 1,
                                             1, (3, 3), 1)
    with pytest.raises(RuntimeError, match=r'grad_input: coef must be \(N, B, k\*k\)'):
        cpu_kernels.region_tap_mix_grad_input_(xp, pos, torch.randn(3, 4), torch.randn(1, 2, 3, 4),
                                               3, 1, 1, (3, 3), 1)


@needs_ext
def test_region_tap_mix_rejects_bad_positions_and_out():
    xp, coef = torch.randn(5, 5, 4), torch.randn(3, 9)
    with pytest.raises(RuntimeError, match='position out of range'):
        cpu_kernels.region_tap_mix(xp, torch.tensor([0, 9]), coef, 3, 1, 1, (3, 3), 1)
    with pytest.raises(RuntimeError, match='position out of range'):  # 2 samples of 9
        cpu_kernels.region_tap_mix(xp.expand(2, 5, 5, 4).contiguous(), torch.tensor([18]),
                                   coef.expand(2, 3, 9), 3, 1, 1, (3, 3), 1)
    with pytest.raises(RuntimeError, match=r'coef must be \(N, B, k\*k\)'):
        cpu_kernels.region_tap_mix(xp[None], torch.tensor([0]), coef, 3, 1, 1, (3, 3), 1)
    with pytest.raises(RuntimeError, match=r'out must be a contiguous \(1, 2, 3, 4\)'):
        cpu_kernels.region_tap_mix(xp, torch.tensor([0, 8]), coef, 3, 1, 1, (3, 3), 1,
                                   out=torch.empty(1, 3, 3, 4))


@needs_ext
@pytest.mark.parametrize('case', [
    dict(m=8),                                          # B = 9 = k*k: the kernel runs
    dict(m=8, channels_last=True, u_block=700),         # NHWC output, U in blocks of 1 row
    dict(m=4, stride=2, dilation=2, groups=2),          # B = 5: batched U-form backward
    dict(m=4, groups=2, channels_last=True, u_block=5000, du_block=1),  # U blocks of 15 rows,
    #                                                     backward one sample per chunk
    dict(m=4, n=3, du_block=90000),                     # backward chunks of 2 + 1 samples
    dict(m=4, du_block=20000),                          # dU in blocks of 62 rows: 3 a sample
    dict(m=8, x_grad=False),                            # no dL/dx
    dict(m=4, x_grad=False, frozen='guide'),            # no guide gradient either
    dict(m=3, k=5, padding=1, groups=4, out=8),         # B = 4
])
def test_drconv_with_kernel_equals_drconv_without(case, monkeypatch):
    """Outputs and every gradient of the paper-generator DRConv, region tap mix (C++) vs the
    im2col + matmul tensor path (same module), and the kernel is really used; the forward's U
    also in blocks of a few rows, the batched backward in chunks of samples, and for
    channels-last inputs."""
    monkeypatch.setattr(drconv_module, '_U_BLOCK_BYTES', case.get('u_block', 16 << 20))
    monkeypatch.setattr(drconv_module, '_DU_BLOCK_BYTES', case.get('du_block', 8 << 20))
    torch.manual_seed(0)
    k = case.get('k', 3)
    layer = DRConv(16, case.get('out', 16), k, case.get('stride', 1),
                   padding=case.get('padding', case.get('dilation', 1)),
                   dilation=case.get('dilation', 1), groups=case.get('groups', 1),
                   num_regions=case['m'])
    x = torch.randn(case.get('n', 2), 16, 13, 10)
    if case.get('channels_last'):
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(case.get('x_grad', True))
    if case.get('frozen'):
        getattr(layer, case['frozen']).requires_grad_(False)
    calls = []  # whether the extension counted as available at each kernel call
    real = cpu_kernels.region_tap_mix
    monkeypatch.setattr(cpu_kernels, 'region_tap_mix',
                        lambda *a, **kw: calls.append(cpu_kernels.AVAILABLE) or real(*a, **kw))
    _same_with_and_without_kernels(layer, x, monkeypatch, 2e-5)
    assert calls and all(calls), 'the region tap mix kernel did not run (only) on the fast pass'


def _octave_maps(h, w, dtype, gen):
    """A channel slice of an NCHW map (rows contiguous, other strides not) and its low size."""
    x = torch.randn(2, 7, h, w, dtype=dtype, generator=gen)[:, 2:6]
    return x, ((h + 1) // 2, (w + 1) // 2)


@needs_ext
@pytest.mark.parametrize('hw', [(8, 12), (7, 5), (1, 1), (2, 9), (13, 1)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_octave_pool_and_spread_equal_pytorch(hw, dtype):
    """Pool = avg_pool2d(2, ceil_mode, count_include_pad=False); spread = nearest x2 upsampling
    cropped (repeat_interleave), written or added, scaled; spread with mean_adjoint = the
    autograd adjoint of that avg_pool2d. Inputs and outputs are channel slices."""
    gen = torch.Generator().manual_seed(hw[0] * 31 + hw[1])
    x, low_size = _octave_maps(*hw, dtype, gen)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    out = torch.zeros(2, 9, *low_size, dtype=dtype)[:, 3:7]
    cpu_kernels.octave_pool_into(x, out)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2, 2, ceil_mode=True,
                                                 count_include_pad=False), **tol)

    low = torch.randn(2, 4, *low_size, dtype=dtype, generator=gen)
    up = low.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :hw[0], :hw[1]]
    big = torch.randn(2, 6, *hw, dtype=dtype, generator=gen)
    dst = big[:, 1:5]
    big_before = big.clone()
    before = dst.clone()
    cpu_kernels.octave_spread(low, dst, alpha=0.7, accumulate=True)
    torch.testing.assert_close(dst, before + 0.7 * up, **tol)
    cpu_kernels.octave_spread(low, dst)
    torch.testing.assert_close(dst, up, **tol)
    assert torch.equal(big[:, 0], big_before[:, 0]) and torch.equal(big[:, 5], big_before[:, 5])

    xr = x.detach().clone().requires_grad_()
    F.avg_pool2d(xr, 2, 2, ceil_mode=True, count_include_pad=False).backward(low)
    adj = torch.full_like(x, float('nan'))
    cpu_kernels.octave_spread(low, adj, mean_adjoint=True)
    torch.testing.assert_close(adj, xr.grad, **tol)


@needs_ext
def test_octave_kernels_reject_bad_maps():
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(RuntimeError, match='contiguous rows'):
        cpu_kernels.octave_pool_into(x.to(memory_format=torch.channels_last),
                                     torch.empty(1, 2, 3, 3))
    with pytest.raises(RuntimeError, match='ceil-half'):
        cpu_kernels.octave_spread(torch.randn(1, 2, 2, 3), x)


@needs_ext
@pytest.mark.parametrize('case', [
    dict(k=1, hw=(12, 10)), dict(k=1, hw=(9, 7), stride=2), dict(k=3, hw=(11, 14)),
    dict(k=1, hw=(5, 6), alphas=(0.5, 0.0)), dict(k=3, hw=(8, 8), alphas=(0.0, 0.5)),
])
def test_octave_dropin_with_kernels_equals_without(case, monkeypatch):
    """The drop-in OctaveConv's output and gradients, C++ resampling vs tensor ops."""
    torch.manual_seed(0)
    ai, ao = case.get('alphas', (0.5, 0.5))
    layer = OctaveConv(8, 8, case['k'], case.get('stride', 1), alpha_in=ai, alpha_out=ao)
    x = torch.randn(3, 8, *case['hw'], requires_grad=True)
    _same_with_and_without_kernels(layer, x, monkeypatch, 1e-5)


def test_matmul_equals_float64_product(monkeypatch):
    """``cpu_kernels.matmul`` (oneDNN for float32 outside autograd) equals the float64 product
    for 2-D and one-batch 3-D operands of any strides; many batches, float64 and operands
    that need autograd, K = 0, mismatched batches and ``torch.backends.mkldnn.flags(enabled=
    False)`` take ``torch.matmul`` (still equal), and oneDNN runs only when it may."""
    calls = []
    real = cpu_kernels._ONEDNN_LINEAR
    if real is not None:
        monkeypatch.setattr(cpu_kernels, '_ONEDNN_LINEAR', lambda *a: calls.append(1) or real(*a))
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 37, 70, generator=gen)
    b = torch.randn(3, 29, 70, generator=gen).transpose(1, 2)  # (3, 70, 29), strided

    def check(x, y, onednn):
        del calls[:]
        got = cpu_kernels.matmul(x, y)
        want = torch.matmul(x.double(), y.double())
        assert got.dtype == x.dtype and got.shape == want.shape
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()
        assert bool(calls) == (onednn and real is not None)
        return got

    check(a[0], b[0], True)
    check(a[1].t().contiguous().t(), b[1], True)  # column-major left operand
    check(a[:1], b[:1], True)
    check(a, b, False)  # several batches: torch.bmm
    check(a[:1], b, False)  # one batch against several: broadcast by torch.matmul
    check(a[0, :, :0], b[0][:0], False)  # K = 0: zeros
    with torch.backends.mkldnn.flags(enabled=False):
        check(a[0], b[0], False)
    check(a[0].double(), b[0].double(), False)
    x = a[0].clone().requires_grad_()
    out = check(x, b[0], False)
    out.sum().backward()  # autograd kept
    torch.testing.assert_close(x.grad, b[0].sum(1).expand(37, 70))
