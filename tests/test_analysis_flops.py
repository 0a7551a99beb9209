"""FLOP counting: mmengine's traced count with the convzoo layers' own ``count_flops`` swapped in.

Oracles: the plain conv MAC formula (tests.utils), hand-made modules whose true count is known,
and (for WTConv) the traced count of the published layer, which is built only from convs and
transposed convs that mmengine counts exactly, and the Haar WTConv formula of tests.utils.
"""
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo_mm.analysis.flops import get_model_complexity
from tests.utils import conv_macs, haar_wtconv_macs


class Counted(nn.Module):
    """A conv whose forward also runs a transposed conv that the method says to ignore, and whose
    ``count_flops`` is the plain conv formula: the analyzer must use the method."""

    def __init__(self, cin, cout, k=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.k = k

    def forward(self, x):
        y = self.conv(x)
        extra = F.conv_transpose2d(y, torch.ones(y.shape[1], 1, 2, 2), stride=2,
                                   groups=y.shape[1])
        return y + extra[..., ::2, ::2]

    def count_flops(self, input_shape):
        n, c, h, w = input_shape
        return conv_macs(n, c, self.conv.out_channels, self.k, h, w)


class Outer(nn.Module):
    """A counted module holding a counted child: its own count must win for itself."""

    def __init__(self):
        super().__init__()
        self.inner = Counted(4, 4)

    def forward(self, x):
        return self.inner(x) * 2

    def count_flops(self, input_shape):
        return 1000


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block = nn.Sequential(Counted(4, 8), nn.ReLU(), nn.Conv2d(8, 4, 1))
        self.shared = Counted(4, 4, k=1)
        self.outer = Outer()

    def forward(self, x):
        x = self.stem(x)
        x = self.block(x)
        x = self.shared(x)                      # called twice at two sizes
        x = self.shared(F.avg_pool2d(x, 2))
        return self.outer(x)


def test_plain_convs_match_formula():
    # the last conv uses padding='same' (traced as aten::_convolution_mode, which plain
    # mmengine counts as 0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=4),
                          nn.Conv2d(8, 6, 5, padding='same', groups=2))
    res = get_model_complexity(model, torch.randn(2, 3, 17, 16))
    expect = (conv_macs(2, 3, 8, 3, 9, 8) + conv_macs(2, 8, 8, 3, 9, 8, groups=4)
              + conv_macs(2, 8, 6, 5, 9, 8, groups=2))
    assert res['flops'] == expect
    assert res['params'] == sum(p.numel() for p in model.parameters())


def test_counted_modules_replace_traced_counts():
    torch.manual_seed(0)
    res = get_model_complexity(Net(), torch.randn(2, 3, 32, 32), max_depth=4)
    stem = conv_macs(2, 3, 4, 3, 16, 16)
    block_counted = conv_macs(2, 4, 8, 3, 16, 16)
    block_1x1 = conv_macs(2, 8, 4, 1, 16, 16)
    shared = conv_macs(2, 4, 4, 1, 16, 16) + conv_macs(2, 4, 4, 1, 8, 8)
    outer = 1000
    by_module = res['by_module']
    assert by_module['block.0'] == block_counted
    assert by_module['block'] == block_counted + block_1x1
    assert by_module['shared'] == shared
    assert by_module['outer'] == outer
    # the inner counted module keeps its own value, the outer one exactly its own
    assert by_module['outer.inner'] == conv_macs(2, 4, 4, 3, 8, 8)
    assert res['flops'] == by_module[''] == stem + block_counted + block_1x1 + shared + outer
    assert res['by_operator']['Counted'] == block_counted + shared
    assert res['by_operator']['Outer'] == outer
    assert res['by_operator']['conv'] == stem + block_1x1
    assert 'conv_transpose' not in ''.join(res['by_operator'])
    rec = res['layers']['shared']
    assert rec['input_shapes'] == [(2, 4, 16, 16), (2, 4, 8, 8)]
    # the trace also saw the extra op
    assert rec['flops'] == shared and rec['traced_flops'] > shared
    # the per-module table is mmengine's layout with the replaced numbers
    assert '#flops' in res['table'] and 'outer' in res['table']
    from mmengine.analysis.print_helper import _format_size
    assert f"| {_format_size(res['flops'])} " in res['table']


def _layer(name):
    file = {'WTConv': 'wtconv', 'OctaveConv': 'octconv', 'DRConv': 'drconv'}[name]
    try:
        module = importlib.import_module(f'convzoo_mm.layers.{file}')
    except ImportError:
        pytest.skip(f'convzoo_mm.layers.{file} has not landed')
    return module


@pytest.mark.parametrize('levels,size', [(1, (16, 16)), (2, (15, 13)), (3, (21, 9))])
def test_wtconv_count_matches_published_trace_and_formula(levels, size):
    """At stride 1 the published layer runs exactly: base dw conv, per level a stride-2 grouped
    conv (transform), a dw conv on 4C channels and a grouped transposed conv: all counted exactly
    by mmengine. Our layer's count_flops must equal that trace and the formula below."""
    wt = _layer('WTConv').WTConv
    from convzoo_mm.analysis.references import PublishedWTConv2d
    n, c, k = 2, 6, 5
    h, w = size
    shape = (n, c, h, w)
    ours = get_model_complexity(wt(c, c, k, groups=c, wt_levels=levels), torch.randn(shape))
    published = get_model_complexity(PublishedWTConv2d(c, k, wt_levels=levels),
                                     torch.randn(shape))
    formula = haar_wtconv_macs(n, c, h, w, k, levels)
    assert ours['flops'] == formula
    assert published['flops'] == formula
    assert ours['params'] == published['params'] - 2 * 4 * c * 4  # published keeps frozen filters


@pytest.mark.parametrize('wt_type', ['db1', 'db2'])
@pytest.mark.parametrize('levels,size', [(1, (16, 12)), (2, (15, 13)), (1, (5, 7))])
def test_wtconv_stride_2_count_is_the_published_trace_less_the_skipped_work(wt_type, levels, size):
    """At stride 2 the published layer computes everything at full resolution, then keeps every
    second pixel with a strided 1x1 conv of ones (traced). Ours runs the base conv at the kept
    pixels only, ceil(H/2) x ceil(W/2) of them, and with Haar the top-level inverse for them only,
    a quarter of it."""
    wt = _layer('WTConv').WTConv
    from convzoo_mm.analysis.references import PublishedWTConv2d
    n, c, k = 2, 3, 5
    h, w = size
    ho, wo = -(-h // 2), -(-w // 2)
    layer = wt(c, c, k, 2, groups=c, wt_levels=levels, wt_type=wt_type)
    ours = get_model_complexity(layer, torch.randn(n, c, h, w))['flops']
    published = get_model_complexity(
        PublishedWTConv2d(c, k, 2, True, levels, wt_type=wt_type), torch.randn(n, c, h, w))
    skipped = n * c * ho * wo + n * c * k * k * (h * w - ho * wo)   # stride conv, base conv
    if wt_type == 'db1':
        top_inverse = n * c * (h + h % 2) * (w + w % 2) * 4
        skipped += top_inverse - top_inverse // 4
        assert ours == haar_wtconv_macs(n, c, h, w, k, levels, stride=2)
    assert ours == published['flops'] - skipped


def test_wtconv_stride_2_without_levels_is_a_strided_depthwise_conv():
    """Odd sizes at stride 2: ceil(H/2) x ceil(W/2) outputs, each k*k MACs per channel, as
    torch's FlopCounterMode counts the layer's own convolution."""
    from torch.utils.flop_counter import FlopCounterMode
    layer = _layer('WTConv').WTConv(6, 6, 5, 2, groups=6, wt_levels=0)
    x = torch.randn(1, 6, 15, 13)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        y = layer(x)
    assert y.shape == (1, 6, 8, 7)
    assert layer.count_flops(tuple(x.shape)) == counter.get_total_flops() // 2 == y.numel() * 25


def test_inputs_of_a_split_octave_layer_are_recorded_per_branch():
    """A split-mode OctaveConv takes a (high, low) pair: the record keeps both shapes."""
    oc = _layer('OctaveConv').OctaveConv

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.oc = oc(8, 8, 3, padding=1, alpha_in=0.5, alpha_out=0.5, split=True)

        def forward(self, x):
            return self.oc((x[:, :4], x[:, 4:, ::2, ::2]))
    res = get_model_complexity(Wrap(), torch.randn(1, 8, 16, 16), show_table=False)
    assert res['layers']['oc']['input_shapes'] == [((1, 4, 16, 16), (1, 4, 8, 8))]


def test_wtconv_in_a_model_plus_pointwise():
    wt = _layer('WTConv').WTConv
    model = nn.Sequential(nn.Conv2d(3, 8, 1), wt(8, 16, 3, wt_levels=1))
    res = get_model_complexity(model, torch.randn(1, 3, 8, 8))
    base = 1 * 8 * 8 * 8 * 9
    level = 8 * 8 * 8 * (4 + 9 + 4)
    pointwise = conv_macs(1, 8, 16, 1, 8, 8)
    assert res['flops'] == conv_macs(1, 3, 8, 1, 8, 8) + base + level + pointwise
    assert res['by_module']['1'] == base + level + pointwise


@pytest.mark.parametrize('stride,size', [(1, (14, 14)), (1, (15, 11)), (2, (15, 12))])
def test_octaveconv_count_is_the_four_paths(stride, size):
    """Four convs: HH at full resolution, LH/HL/LL at half resolution ceil(n/2) (stride 2: every
    path one octave lower). The traced convs of the layer must add up to the same."""
    oc = _layer('OctaveConv').OctaveConv
    n, c_in, c_out, k = 2, 8, 12, 3
    h, w = size
    layer = oc(c_in, c_out, k, stride=stride, padding=1, alpha_in=0.5, alpha_out=0.25)
    res = get_model_complexity(nn.Sequential(layer), torch.randn(n, c_in, h, w))
    hi_in, lo_in = 4, 4
    lo_out = round(0.25 * c_out)
    hi_out = c_out - lo_out

    def half(v):
        return (v + 1) // 2

    hh, hw = (h, w) if stride == 1 else (half(h), half(w))    # high-branch output size
    lh, lw = half(hh), half(hw)                                # low-branch output size
    expect = (conv_macs(n, hi_in, hi_out, k, hh, hw)           # H -> H
              + conv_macs(n, lo_in, hi_out, k, lh, lw) * (stride == 1)  # L -> H (then upsample)
              + conv_macs(n, lo_in, hi_out, k, hh, hw) * (stride == 2)  # L -> H at stride 2
              + conv_macs(n, hi_in, lo_out, k, lh, lw)         # H -> L (pooled first)
              + conv_macs(n, lo_in, lo_out, k, lh, lw))        # L -> L
    assert res['flops'] == expect
    # the convs mmengine's plain trace sees add up to the same (upsampling is counted apart)
    from mmengine.analysis import FlopAnalyzer
    traced = FlopAnalyzer(layer, (torch.randn(n, c_in, h, w), ))
    traced.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert traced.by_operator()['conv'] == expect


def test_octaveconv_alpha0_is_a_plain_conv():
    oc = _layer('OctaveConv').OctaveConv
    res = get_model_complexity(oc(6, 10, 3, stride=2, padding=1, alpha_in=0., alpha_out=0.),
                               torch.randn(1, 6, 9, 9))
    assert res['flops'] == conv_macs(1, 6, 10, 3, 5, 5)


def test_drconv_count_is_guide_generator_and_one_conv():
    """DRConv = guide conv (C -> m) + generator (1x1 C -> h on the k x k pooled map, grouped
    1x1 h -> m*out*C/g) + ONE conv's worth of region filtering (not m: the naive form, which the
    trace sees, costs m convs)."""
    dr = _layer('DRConv').DRConv
    n, c, o, k, m, h, w = 2, 8, 6, 3, 4, 10, 9
    layer = dr(c, o, k, stride=1, padding=1, num_regions=m)
    res = get_model_complexity(nn.Sequential(layer), torch.randn(n, c, h, w))
    hid = m * m
    expect = (conv_macs(n, c, m, k, h, w)                       # guide
              + conv_macs(n, c, hid, 1, k, k)                   # generator hidden 1x1
              + conv_macs(n, hid, m * o * c, 1, k, k, groups=m)  # generator output, grouped
              + conv_macs(n, c, o, k, h, w))                    # region conv = one conv
    assert res['flops'] == expect
    naive_extra = (m - 1) * conv_macs(n, c, o, k, h, w)
    assert res['layers']['0']['traced_flops'] >= expect + naive_extra
