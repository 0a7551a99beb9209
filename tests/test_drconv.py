"""DRConv: exactness against the naive all-m-regions computation, the straight-through gradient,
FLOP/parameter counts, argument checks, mm integration.

The oracle below is written independently of the layer's fast path: it rebuilds the paper's
generator with plain ``F.conv2d`` calls (pool -> 1x1 -> sigmoid -> grouped 1x1) from the
layer's parameters, runs one ``F.conv2d`` per (sample, region) and mixes the m responses with
the straight-through mask ``onehot + softmax - softmax.detach()``, so autograd on it gives the
documented surrogate gradient.
"""
import copy
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from convzoo_mm.layers.drconv import DRConv, drconv_naive, materialize_filters, region_conv
from convzoo_mm.ops import cpu_kernels

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- oracle
def oracle_filters(layer, x):
    """(N, m, out, in/groups, k, k) from the layer's parameters, the paper's way."""
    m, o, k = layer.num_regions, layer.out_channels, layer.kernel_size[0]
    cg = layer.in_channels // layer.groups
    n = x.shape[0]
    if layer.generator == 'full':
        hm = layer.gen_channels // m
        t = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(x, k), layer.gen_hidden.weight,
                                   layer.gen_hidden.bias))
        # gen_bank[r, j, c, o] is weight[r*out*Cg + o*Cg + c, j] of the grouped 1x1 conv
        w2 = layer.gen_bank[:, :hm].permute(0, 3, 2, 1).reshape(m * o * cg, hm, 1, 1)
        b2 = layer.gen_bank[:, hm].permute(0, 2, 1).reshape(-1)
        return F.conv2d(t, w2, b2, groups=m).view(n, m, o, cg, k, k)
    pooled = x.mean((2, 3), keepdim=True)
    hid = F.relu(F.conv2d(pooled, layer.head_hidden.weight, layer.head_hidden.bias))
    coef = torch.sigmoid(F.conv2d(hid, layer.head_out.weight, layer.head_out.bias))
    coef = coef.view(n, m, layer.num_bases)
    kernels = layer.bank.view(-1, k, k, cg, o).permute(0, 4, 3, 1, 2)  # (B, out, Cg, k, k)
    return torch.einsum('nrb,boikl->nroikl', coef, kernels)


def oracle(layer, x, guide_out=None):
    """Surrogate forward: value = one-hot selection, gradient = the paper's."""
    s, p, d, g = layer.stride[0], layer.padding[0], layer.dilation[0], layer.groups
    guide = F.conv2d(x, layer.guide.weight, layer.guide.bias, s, p, d)
    if guide_out is not None:
        guide.retain_grad()
        guide_out.append(guide)
    soft = guide.softmax(1)
    onehot = F.one_hot(guide.argmax(1), layer.num_regions).permute(0, 3, 1, 2).to(x.dtype)
    mask = onehot + soft - soft.detach()
    filters = oracle_filters(layer, x)
    outs = []
    for n in range(x.shape[0]):
        y = 0
        for r in range(layer.num_regions):
            y = y + mask[n:n + 1, r:r + 1] * F.conv2d(x[n:n + 1], filters[n, r], None, s, p, d, g)
        outs.append(y)
    out = torch.cat(outs)
    if layer.bias is not None:
        out = out + layer.bias.view(1, -1, 1, 1)
    return out


def make(in_c=4, out_c=6, k=3, s=1, p=1, d=1, g=1, m=4, gen='full', bias=True, seed=0, **kw):
    torch.manual_seed(seed)
    layer = DRConv(in_c, out_c, k, s, p, d, g, bias, num_regions=m, generator=gen, **kw).double()
    with torch.no_grad():  # non-trivial values everywhere (init zeroes the biases)
        for prm in layer.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
    return layer


CASES = [  # in, out, k, stride, padding, dilation, groups, m, H, W
    (4, 6, 3, 1, 1, 1, 1, 4, 7, 9),
    (4, 6, 3, 2, 1, 1, 2, 3, 9, 8),
    (6, 4, 3, 1, 2, 2, 2, 8, 11, 7),
    (3, 5, 5, 2, 2, 1, 1, 2, 13, 10),
    (4, 4, 1, 1, 0, 1, 4, 5, 5, 6),
    (5, 3, 3, 3, 0, 2, 1, 1, 12, 15),
    (2, 2, 3, 1, 1, 1, 1, 16, 4, 5),
    (16, 8, 3, 1, 1, 1, 8, 8, 6, 7),  # one output channel per group, filters built (B = k*k)
    (12, 4, 1, 1, 0, 1, 4, 4, 5, 6),
]
GENS = ['full', 'basis']


@pytest.mark.parametrize('gen', GENS)
@pytest.mark.parametrize('case', CASES)
def test_forward_equals_naive_all_regions(gen, case):
    in_c, out_c, k, s, p, d, g, m, h, w = case
    layer = make(in_c, out_c, k, s, p, d, g, m, gen)
    x = torch.randn(3, in_c, h, w, dtype=torch.double)
    out = layer(x)
    ref = oracle(layer, x)
    assert out.shape == ref.shape == (3, out_c, (h + 2 * p - d * (k - 1) - 1) // s + 1,
                                      (w + 2 * p - d * (k - 1) - 1) // s + 1)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('gen', GENS)
@pytest.mark.parametrize('case', CASES)  # full: both associations (B <= k*k and B > k*k)
def test_gradients_equal_the_surrogate(gen, case):
    """x, generator, guide and bias gradients equal autograd on the naive surrogate."""
    in_c, out_c, k, s, p, d, g, m, h, w = case
    layer = make(in_c, out_c, k, s, p, d, g, m, gen)
    x = torch.randn(2, in_c, h, w, dtype=torch.double, requires_grad=True)
    out = layer(x)
    grad = torch.randn_like(out)
    params = [x] + list(layer.parameters())
    got = torch.autograd.grad(out, params, grad)
    want = torch.autograd.grad(oracle(layer, x), params, grad)
    names = ['x'] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
    if m > 1:  # the guide does learn (with one region its softmax is constant)
        assert got[names.index('guide.weight')].abs().sum() > 0


@pytest.mark.parametrize('gen,m,s,g', [
    ('full', 8, 1, 1),   # B = k*k: forward U @ bank, backward with the filters built
    ('full', 4, 1, 1),   # B < k*k: all in the U form
    ('full', 4, 2, 2),   # groups: batched matmuls (torch.bmm)
    ('basis', 4, 1, 1),  # per-sample im2col path
])
def test_float32_fast_path_equals_float64_oracle(gen, m, s, g, monkeypatch):
    """The float32 path as it runs in training (region matmuls through oneDNN where PyTorch
    has it, the C++ tap mix where built) against the oracle in float64 on the same parameters:
    value and every gradient within float32 rounding of each result's scale (the guide
    gradient, a difference of region responses, loses a few more digits)."""
    calls = []
    real = cpu_kernels._ONEDNN_LINEAR
    if real is not None:
        monkeypatch.setattr(cpu_kernels, '_ONEDNN_LINEAR',
                            lambda *a: calls.append(1) or real(*a))
    layer64 = make(16, 16, 3, s, 1, 1, g, m, gen)
    layer32 = copy.deepcopy(layer64).float()
    x64 = torch.randn(2, 16, 11, 9, dtype=torch.double)
    x32 = x64.float().requires_grad_()
    x64.requires_grad_()
    assert torch.equal(layer32.guide(x32).argmax(1), layer64.guide(x64).argmax(1))
    out32, out64 = layer32(x32), oracle(layer64, x64)
    up = torch.randn_like(out64)
    got = [out32, *torch.autograd.grad(out32, [x32, *layer32.parameters()], up.float())]
    want = [out64, *torch.autograd.grad(out64, [x64, *layer64.parameters()], up)]
    names = ['out', 'x'] + [n for n, _ in layer64.named_parameters()]
    for name, a, b in zip(names, got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        err = (a.double() - b).abs().max() / b.abs().max()
        assert err < 3e-5, (name, err.item())
    if real is not None and g == 1:
        assert calls, 'the region matmuls did not go through oneDNN'


def test_guide_gradient_is_softmax_jacobian_of_region_responses():
    """dL/dguide_r = S_r (a_r - sum_q S_q a_q), a_r = <g, y_r>, computed directly here."""
    layer = make(4, 5, 3, 1, 1, 1, 1, 4, 'full')
    x = torch.randn(2, 4, 6, 7, dtype=torch.double)
    guides = []
    def keep(module, inputs, output):
        output.retain_grad()
        guides.append(output)

    hook = layer.guide.register_forward_hook(keep)
    out = layer(x)
    hook.remove()
    grad = torch.randn_like(out)
    out.backward(grad)
    guide = guides[0].detach()
    soft = guide.softmax(1)
    filters = oracle_filters(layer, x).detach()
    a = torch.stack([torch.stack([(F.conv2d(x[n:n + 1], filters[n, r], None, 1, 1) * grad[n])
                                  .sum(1)[0] for r in range(4)]) for n in range(2)])
    want = soft * (a - (soft * a).sum(1, keepdim=True))
    torch.testing.assert_close(guides[0].grad, want, rtol=1e-9, atol=1e-12)


def test_guide_gradient_of_a_region_that_no_position_takes():
    """A region that wins nowhere still has softmax weight, so its response a_r enters the guide
    gradient: region 3's guide filter is region 0's with a bias 1e-3 lower (it never wins, its
    weight is ~S_0). m=4 < k*k runs the tap-mix backward, which walks the regions present."""
    layer = make(4, 5, 3, 1, 1, 1, 1, 4, 'full')
    with torch.no_grad():
        layer.guide.weight[3] = layer.guide.weight[0]
        layer.guide.bias[3] = layer.guide.bias[0] - 1e-3
    x = torch.randn(2, 4, 6, 7, dtype=torch.double, requires_grad=True)
    assert not (layer.guide(x).argmax(1) == 3).any()
    out = layer(x)
    grad = torch.randn_like(out)
    inputs = [x] + list(layer.parameters())
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(oracle(layer, x), inputs, grad)
    for name, a, b in zip(['x'] + [n for n, _ in layer.named_parameters()], got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize('gen', GENS)
def test_guide_ties_take_the_first_region(gen):
    """Equal guide scores (a zero guide) pick region 0, like argmax, in the fast path and in the
    export form: output and dL/dx are the conv with region 0's filter."""
    layer = make(4, 6, 3, 1, 1, 1, 1, 4, gen)
    with torch.no_grad():
        layer.guide.weight.zero_()
        layer.guide.bias.zero_()
    x = torch.randn(2, 4, 7, 8, dtype=torch.double, requires_grad=True)
    filters = oracle_filters(layer, x)
    want = torch.cat([F.conv2d(x[n:n + 1], filters[n, 0], layer.bias, 1, 1) for n in range(2)])
    grad = torch.randn_like(want)
    want_gx, = torch.autograd.grad(want, x, grad)
    for forward in (layer, layer.forward_naive):
        out = forward(x)
        torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0], want_gx, rtol=1e-10,
                                   atol=1e-10)


def test_mask_is_one_hot_argmax_not_softmax_mixture():
    layer = make(3, 4, 3, 1, 1, 1, 1, 3, 'full')
    x = torch.randn(1, 3, 6, 6, dtype=torch.double)
    out = layer(x) - layer.bias.view(1, -1, 1, 1)
    guide = layer.guide(x)
    filters = oracle_filters(layer, x)
    ys = torch.stack([F.conv2d(x, filters[0, r], None, 1, 1)[0] for r in range(3)])  # (m,o,h,w)
    picked = torch.gather(ys, 0, guide.argmax(1)[:, None].expand(1, 4, 6, 6))[0]
    torch.testing.assert_close(out[0], picked, rtol=1e-10, atol=1e-10)
    mixture = (ys * guide.softmax(1)[0][:, None]).sum(0)
    assert (out[0] - mixture).abs().max() > 1e-3
    # every position equals exactly one region response, and it is the argmax one
    dist = (ys - out[0][None]).abs().amax(1)  # (m, h, w)
    assert torch.equal((dist < 1e-10).double().sum(0), torch.ones(6, 6, dtype=torch.double))


@pytest.mark.parametrize('gen', GENS)
def test_one_region_is_a_conv_with_the_generated_filter(gen):
    layer = make(4, 6, 3, 2, 1, 1, 2, 1, gen)
    x = torch.randn(2, 4, 9, 8, dtype=torch.double, requires_grad=True)
    out = layer(x)
    filters = oracle_filters(layer, x)
    ref = torch.cat([F.conv2d(x[n:n + 1], filters[n, 0], layer.bias, 2, 1, 1, 2)
                     for n in range(2)])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    out.sum().backward()
    assert layer.guide.weight.grad.abs().max() == 0  # softmax over one region is constant


@pytest.mark.parametrize('tapwise,b', [(True, 2), (True, 10), (False, 2)])
@pytest.mark.parametrize('s,d,g', [(1, 1, 1), (2, 2, 2)])
def test_gradcheck_region_conv(tapwise, b, s, d, g):
    """Finite differences (float64) for x and the generator factors (the region map fixed);
    the soft input gets <g, y_r>, checked against autograd on the all-m surrogate. Tapwise with
    b <= k*k and b > k*k covers both associations of the product (see _region_output)."""
    torch.manual_seed(1)
    n, c, o, k, m, h, w = 2, 4, 4, 3, 3, 7, 6
    cg = c // g
    ho, wo = (h + 2 - d * 2 - 1) // s + 1, (w + 2 - d * 2 - 1) // s + 1
    x = torch.randn(n, c, h, w, dtype=torch.double, requires_grad=True)
    guide = torch.randn(n, m, ho, wo, dtype=torch.double)
    region = guide.argmax(1)
    coef = torch.randn(*((n, m, b, k * k) if tapwise else (n, m, b)), dtype=torch.double,
                       requires_grad=True)
    bank = torch.randn(*((m, b, cg * o) if tapwise else (b, k * k * cg * o)),
                       dtype=torch.double, requires_grad=True)

    def f(x_, coef_, bank_):
        return region_conv(x_, guide.softmax(1), region, coef_, bank_, k, o, s, 1, d, g, tapwise)

    assert torch.autograd.gradcheck(f, (x, coef, bank), eps=1e-6, atol=1e-7)

    soft = guide.softmax(1).requires_grad_()
    out = region_conv(x, soft, region, coef, bank, k, o, s, 1, d, g, tapwise)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, soft, grad)[0]
    # filters (N, m, out, Cg, k, k) built with einsum here, all-m surrogate via drconv_naive
    if tapwise:
        wt = torch.einsum('nrbt,rbq->nrtq', coef, bank)
    else:
        wt = torch.einsum('nrb,bq->nrq', coef, bank)
    filt = wt.reshape(n, m, k, k, cg, o).permute(0, 1, 5, 4, 2, 3)
    onehot = F.one_hot(region, m).permute(0, 3, 1, 2).double()
    soft2 = soft.detach().requires_grad_()
    ref = drconv_naive(x, onehot + soft2 - soft2.detach(), filt, s, 1, d, g)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, torch.autograd.grad(ref, soft2, grad)[0], rtol=1e-9,
                               atol=1e-10)


@pytest.mark.parametrize('generator', ['full', 'basis'])
def test_channels_last_and_batch_independence(generator):
    layer = make(4, 6, 3, 1, 1, 1, 2, 4, generator)
    x = torch.randn(3, 4, 8, 9, dtype=torch.double)
    out = layer(x)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), out)
    torch.testing.assert_close(layer(x[1:2]), out[1:2])  # no cross-sample mixing
    # a model's .to(memory_format=...) restrides 4-D weights, not the matrix banks
    torch.nn.Sequential(layer).to(memory_format=torch.channels_last)
    bank = layer.gen_bank if generator == 'full' else layer.bank
    assert bank.is_contiguous() and layer.guide.weight.is_contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), out)


def test_autocast_bf16_close_to_fp32():
    torch.manual_seed(0)
    layer = DRConv(8, 8, 3, padding=1, num_regions=4)
    x = torch.randn(2, 8, 10, 10)
    ref = layer(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        guide = layer.guide(x)
        out = layer(x)
    # bf16 may flip the argmax where two guide logits are within rounding: compare elsewhere
    top2 = guide.float().topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 0.1)[:, None].expand_as(ref)
    assert out.dtype == torch.bfloat16
    assert clear.float().mean() > 0.5
    err = (out.float() - ref)[clear].abs().max() / ref.abs().max()
    assert err < 3e-2
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------- counts
def test_count_flops_matches_torch_flop_counter():
    """count_flops vs torch's FlopCounterMode (2 FLOPs per MAC) on the paper's ops: the guide
    conv, the generator convs, and one plain conv (one filter per output position)."""
    from torch.utils.flop_counter import FlopCounterMode
    for gen, kw in (('full', {}), ('full', dict(gen_channels=12)), ('basis', dict(num_bases=3))):
        layer = make(6, 8, 3, 2, 2, 2, 2, 4, gen, **kw)
        x = torch.randn(2, 6, 15, 12, dtype=torch.double)
        with FlopCounterMode(display=False) as fc:
            F.conv2d(x, layer.guide.weight, None, 2, 2, 2)
            oracle_filters(layer, x)
            F.conv2d(x, torch.zeros(8, 3, 3, 3, dtype=torch.double), None, 2, 2, 2, 2)
        assert layer.count_flops(tuple(x.shape)) == fc.get_total_flops() // 2


@pytest.mark.parametrize('gen,kw', [('full', {}), ('full', dict(gen_channels=8)),
                                    ('basis', {}), ('basis', dict(num_bases=2, head_channels=5))])
def test_parameter_count_formula(gen, kw):
    c, o, k, g, m = 16, 8, 3, 2, 4
    layer = DRConv(c, o, k, padding=1, groups=g, num_regions=m, generator=gen, **kw)
    cg = c // g
    guide = m * c * k * k + m
    if gen == 'full':
        h = kw.get('gen_channels', m * m)
        want = c * h + h + h * o * cg + m * o * cg
    else:
        b, hc = kw.get('num_bases', m), kw.get('head_channels', max(c // 16, 8))
        want = b * o * cg * k * k + c * hc + hc + hc * m * b + m * b
    assert sum(p.numel() for p in layer.parameters()) == want + guide + o


@pytest.mark.parametrize('saved,built,words', [
    (dict(), dict(gen_channels=8), 'gen_channels=4, this layer was built with gen_channels=8'),
    (dict(generator='basis', num_bases=3), dict(generator='basis', num_bases=5),
     'num_bases=3, this layer was built with num_bases=5'),
    (dict(generator='basis', head_channels=8), dict(generator='basis', head_channels=12),
     'head_channels=8, this layer was built with head_channels=12'),
    (dict(), dict(generator='basis'), "generator='full', this layer was built with "
                                      "generator='basis'"),
])
def test_checkpoint_with_other_generator_options_names_them(saved, built, words):
    """The shapes of a checkpoint imply the generator's options; a mismatch names them (in
    the load error when shapes differ, in a warning before torch's key lists otherwise)."""
    src = DRConv(4, 6, 3, padding=1, num_regions=2, **saved)
    dst = DRConv(4, 6, 3, padding=1, num_regions=2, **built)
    with pytest.raises(RuntimeError) as error, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        dst.load_state_dict(src.state_dict())
    said = [str(error.value)] + [str(w.message) for w in caught]
    assert any(re.search('saved with .*' + words, text) for text in said), said


@pytest.mark.parametrize('gen', GENS)
def test_init_gives_kaiming_scaled_filters(gen):
    torch.manual_seed(0)
    layer = DRConv(64, 64, 3, padding=1, num_regions=8, generator=gen)
    x = torch.randn(4, 64, 16, 16)
    with torch.no_grad():
        std = oracle_filters(layer, x).std().item()
        target = math.sqrt(2 / (64 * 9))
        assert 0.6 * target < std < 1.6 * target
        regions = layer.guide(x).argmax(1)
    # the documented std of the generator's last layer: the generated filter sums `terms`
    # products with sigmoid outputs near 0.5, so terms * 0.25 * std**2 = 2 / (Cg * k * k)
    if gen == 'full':
        terms, bank = layer.gen_channels // 8, layer.gen_bank[:, :-1]
        assert torch.count_nonzero(layer.gen_bank[:, -1]) == 0   # its bias row
    else:
        terms, bank = layer.num_bases, layer.bank
    assert abs(bank.std().item() / math.sqrt(target ** 2 / (0.25 * terms)) - 1) < 0.02
    assert len(regions.unique()) >= 4  # the guide splits the plane from the start


# ----------------------------------------------------------------------------- checks
@pytest.mark.parametrize('kwargs,word', [
    (dict(num_regions=0), 'num_regions'),
    (dict(num_regions=2.5), 'num_regions'),
    (dict(groups=3), 'groups'),
    (dict(in_channels=6, out_channels=9, groups=2), 'out_channels'),
    (dict(kernel_size=(3, 5)), 'kernel_size'),
    (dict(stride=0), 'stride'),
    (dict(padding=-1), 'padding'),
    (dict(generator='dense'), 'generator'),
    (dict(gen_channels=6), 'gen_channels'),
    (dict(generator='basis', gen_channels=16), 'gen_channels'),
    (dict(num_bases=2), 'num_bases'),
    (dict(generator='basis', num_bases=0), 'num_bases'),
    (dict(bias='yes'), 'bias'),
    (dict(bias='auto'), 'bias must be True or False'), (dict(bias=1), 'bias'),
    (dict(padding='same', stride=2), "padding='same' needs stride=1"),
    (dict(padding='same', kernel_size=2), "padding='same' needs.*even dilation"),
    (dict(padding='valid'), 'padding'),
])
def test_bad_arguments_raise_value_error(kwargs, word):
    args = dict(in_channels=4, out_channels=4, kernel_size=3, num_regions=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        DRConv(**args)


@pytest.mark.parametrize('k,d', [(3, 1), (5, 2), (2, 2)])
def test_same_padding_is_the_symmetric_int_padding(k, d):
    """padding='same' (as nn.Conv2d at stride 1) keeps the size and equals the int padding."""
    same, plain = make(4, 6, k, 1, 'same', d), make(4, 6, k, 1, d * (k - 1) // 2, d)
    assert same.padding == plain.padding == (d * (k - 1) // 2,) * 2
    x = torch.randn(2, 4, 9, 7, dtype=torch.double)
    assert same(x).shape == (2, 6, 9, 7)
    torch.testing.assert_close(same(x), plain(x), rtol=0, atol=0)


def test_bad_inputs_raise_value_error():
    layer = DRConv(4, 4, 3, num_regions=2)
    with pytest.raises(ValueError, match='4D'):
        layer(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match='in_channels'):
        layer(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match='too small'):
        layer(torch.randn(1, 4, 2, 5))


def test_shape_fuzzing():
    hypothesis = pytest.importorskip('hypothesis')
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
    @hypothesis.given(h=st.integers(1, 97), w=st.integers(1, 97), n=st.integers(1, 2),
                      cg=st.integers(1, 3), og=st.integers(1, 3), g=st.integers(1, 2),
                      k=st.sampled_from([1, 3, 5]), s=st.integers(1, 3), d=st.integers(1, 2),
                      p=st.integers(0, 3), m=st.integers(1, 9), gen=st.sampled_from(GENS))
    def check(h, w, n, cg, og, g, k, s, d, p, m, gen):
        layer = DRConv(cg * g, og * g, k, s, p, d, g, num_regions=m, generator=gen)
        x = torch.randn(n, cg * g, h, w)
        ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
        wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
        if ho < 1 or wo < 1:
            with pytest.raises(ValueError, match='too small'):
                layer(x)
            return
        out = layer(x)
        assert out.shape == (n, og * g, ho, wo)
        assert torch.isfinite(out).all()

    check()


# ----------------------------------------------------------------------------- mm integration
def test_mmcv_conv_contract():
    """build_conv_layer(cfg, 4, 8, 3, dilation=2) and ConvModule read the attributes back and
    keep our init (ConvModule skips Kaiming when the conv has init_weights)."""
    pytest.importorskip('mmcv')
    from mmcv.cnn import ConvModule, build_conv_layer
    import convzoo_mm  # noqa: F401  (registers DRConv)
    conv = build_conv_layer(dict(type='DRConv', num_regions=3), 4, 8, 3, stride=1, padding=2,
                            dilation=2, groups=1, bias=False)
    assert isinstance(conv, DRConv)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.transposed, conv.output_padding) == (
        4, 8, (3, 3), (1, 1), (2, 2), (2, 2), 1, False, (0, 0))
    assert conv.bias is None
    torch.manual_seed(0)
    module = ConvModule(4, 8, 3, padding=2, dilation=2, conv_cfg=dict(type='DRConv', num_regions=3),
                        norm_cfg=dict(type='BN'))
    torch.manual_seed(0)
    fresh = DRConv(4, 8, 3, padding=2, dilation=2, bias=False, num_regions=3)
    torch.testing.assert_close(module.conv.gen_bank, fresh.gen_bank)  # no Kaiming overwrite
    x = torch.randn(2, 4, 9, 11)
    out = module(x)
    assert out.shape == (2, 8, 9, 11)
    out.sum().backward()


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    layer = DRConv(4, 6, 3, 1, 1, num_regions=3)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    compiled = torch.compile(layer)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    g = torch.autograd.grad(out.sum(), x)[0]
    torch.testing.assert_close(g, torch.autograd.grad(layer(x).sum(), x)[0])


# ----------------------------------------------------------------------------- configs
R50_BACKBONE_PARAMS = 23_508_032  # mmdet ResNet(depth=50) without the fc head


@pytest.mark.parametrize('rel,stages,delta', [
    ('configs/drconv/mask-rcnn_r50-drconv-m4-c3-c4_fpn_1x_coco.py', (1, 2), 5_152_968),
    ('configs/drconv/mask-rcnn_r50-drconv-m4-c5_fpn_1x_coco.py', (3, ), 8_730_684),
    ('configs/drconv/faster-rcnn_r50-drconv-m4-c3-c4_fpn_1x_coco.py', (1, 2), 5_152_968),
    ('configs/drconv/upernet_r50-drconv-m4-c3-c4_4xb4-160k_ade20k-512x512.py', (1, 2), 5_152_968),
])
def test_config_backbones_place_drconv_and_count_params(rel, stages, delta):
    """DRConv sits exactly in the Bottleneck 3x3 of the named stages; the parameter delta over
    R50 is the one documented (planes p per stage: DRConv(p, p, m=4) minus p*p*9, per block);
    the backbone runs forward and backward."""
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    import os
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from tests.utils import ROOT
    import convzoo_mm  # noqa: F401
    cfg = Config.fromfile(os.path.join(ROOT, rel))
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    bcfg = cfg.model.backbone.copy()
    bcfg.pop('init_cfg', None)
    bcfg.pop('pretrained', None)
    backbone = MODELS.build(bcfg)
    blocks = (3, 4, 6, 3)
    for s in range(4):
        layer = getattr(backbone, f'layer{s + 1}')
        kinds = {type(b.conv2).__name__ for b in layer}
        assert kinds == ({'DRConv'} if s in stages else {'Conv2d'}), (s, kinds)
    plain = sum(blocks[s] * (64 * 2**s)**2 * 9 for s in stages)
    want = sum(blocks[s] * sum(p.numel() for p in DRConv(64 * 2**s, 64 * 2**s, 3, padding=1,
                                                             bias=False, num_regions=4)
                               .parameters()) for s in stages) - plain
    assert want == delta
    plain_cfg = bcfg.copy()
    plain_cfg.update(dcn=None, stage_with_dcn=(False, ) * 4)
    base = sum(p.numel() for p in MODELS.build(plain_cfg).parameters())
    if cfg.default_scope == 'mmdet':
        assert base == R50_BACKBONE_PARAMS
    assert sum(p.numel() for p in backbone.parameters()) - base == delta
    backbone.train()
    x = torch.randn(1, 3, 64, 64)
    outs = backbone(x)
    sum(o.float().mean() for o in outs).backward()
    drs = [m for m in backbone.modules() if isinstance(m, DRConv)]
    assert all(m.guide.weight.grad is not None and m.gen_bank.grad.abs().sum() > 0 for m in drs)


@pytest.mark.slow  # ~30 s on one core
def test_demo_config_trains_through_mm_tools(tmp_path):
    """mmdet's own tools/train.py on the generated data, 2 iterations (2 epochs of 1): losses
    finite, and the guide conv of a DRConv layer moved by its gradient (the straight-through
    gradient reaches it in real training; AdamW's decay alone would move it parallel to w)."""
    pytest.importorskip('mmdet')
    import json
    import os

    from convzoo_mm.demo import make_demo_data
    from tests.utils import ROOT, train_demo_briefly
    make_demo_data(os.path.join(ROOT, 'data', 'demo'))
    work = tmp_path / 'work'
    sds = train_demo_briefly(
        'configs/demo/fcos_r50-thin-drconv-m4-c3-c4_fpn_1xb8-12e_demo.py', work)
    keys = [k for k in sds[0] if k.endswith('conv2.guide.weight')]
    assert len(keys) == 4 + 6
    for key in keys:
        w0, w1 = sds[0][key].flatten(), sds[1][key].flatten()
        delta = w1 - w0
        assert delta.abs().max() > 0
        assert F.cosine_similarity(delta, -w0, dim=0) < 0.99
    logs = [json.loads(line) for path in work.rglob('scalars.json') for line in open(path)]
    losses = [rec['loss'] for rec in logs if 'loss' in rec]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize('gen', GENS)
@pytest.mark.parametrize('case', CASES[:4])
def test_forward_naive_equals_the_oracle(gen, case):
    """The plain-tensor-op form (export, the benchmark's naive reference): all filters at
    once (:meth:`DRConv.filters`, batched) and the all-m surrogate, value and every gradient."""
    in_c, out_c, k, s, p, d, g, m, h, w = case
    layer = make(in_c, out_c, k, s, p, d, g, m, gen)
    x = torch.randn(3, in_c, h, w, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(layer.filters(x), oracle_filters(layer, x), rtol=1e-12,
                               atol=1e-12)
    out, ref = layer.forward_naive(x), oracle(layer, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    params = [x, *layer.parameters()]
    for a, b in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_materialize_filters_names_bad_shapes():
    """A per-region bank needs (N, m, B, k*k) coefficients; out= takes one (sample, region)."""
    with pytest.raises(ValueError, match=r'needs coef of shape \(N, m=9'):
        materialize_filters(torch.randn(9, 2, 9), torch.randn(9, 2, 4), True, 4)
    with pytest.raises(ValueError, match='out= takes one'):
        materialize_filters(torch.randn(2, 3, 4), torch.randn(4, 36), False, 4,
                            out=torch.empty(9, 4))


def test_traced_export_path_is_exact_at_any_batch_and_size():
    """Under tracing (ONNX export, FlopAnalyzer) the layer runs the naive form as plain tensor
    ops: the traced graph must give the eager output on a *new* input (a traced data-dependent
    region loop would replay the first input's regions), also of another batch and size (the
    eager naive form folds the batch into a conv's groups, a constant of a graph). The im2col
    takes the layer's kernel size, not a traced one (no TracerWarning about it)."""
    torch.manual_seed(0)
    x1 = torch.randn(2, 4, 9, 10)
    for layer in (DRConv(4, 6, 3, 2, 1, 1, 2, num_regions=3).eval(),
                  DRConv(4, 6, 3, 1, 2, 2, num_regions=3).eval()):          # dilation 2
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', torch.jit.TracerWarning)
            traced = torch.jit.trace(layer, (x1, ), check_trace=False)
        assert not [w for w in caught if 'Python integer' in str(w.message)], [
            f'{w.filename}:{w.lineno}' for w in caught]
        with torch.no_grad():
            for x in (torch.randn(2, 4, 9, 10), torch.randn(3, 4, 12, 7)):
                torch.testing.assert_close(traced(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dcn,error,word', [
    (dict(type='DRConv', num_regions=0), ValueError, 'num_regions'),
    (dict(type='DRConv', regions=4), TypeError, 'regions'),
    (dict(type='DRConv', generator='dense'), ValueError, 'generator'),
    (dict(type='DRConv', generator='full', num_bases=2), ValueError, 'num_bases'),
])
def test_bad_layer_options_in_a_config_fail_at_build(dcn, error, word):
    """A mistyped DRConv option in the backbone's dcn slot fails when the model is built, with
    the option's name in the message (not in a forward pass)."""
    pytest.importorskip('mmdet')
    import convzoo_mm  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = dict(type='ResNet', depth=50, dcn=dcn, stage_with_dcn=(False, True, False, False))
    with pytest.raises(error, match=word):
        MODELS.build(cfg)
