"""WTConv: wavelet convolution (Finder et al., "Wavelet Convolutions for Large Receptive Fields",
ECCV 2024, arXiv 2407.05848).

A depthwise k x k conv on the input plus, per wavelet level, a depthwise k x k conv on the four
subbands of a 2-D wavelet transform of the previous level's low-pass band; the filtered subbands
are recombined from the deepest level up with the inverse transform. The receptive field grows
about 2^L * k while the parameters grow linearly in L.

Layout: subbands are kept as (N, C, 4, h, w) with band order LL, high-along-rows,
high-along-columns, HH, so ``reshape(N, 4C, h, w)`` gives the published channel order c*4 + band.

Borders: an odd height/width is zero-padded by one row/column at the bottom/right before each
transform and the reconstruction is cropped back (as published). Haar/db1 (2 taps) needs nothing
else. Longer orthogonal wavelets (db2, sym4, coif1, ...) use *periodic* extension, which keeps the
transform orthogonal, so analysis followed by synthesis returns the input exactly at any size (the
published layer zero-pads them by L/2-1 on each side, which is not invertible at the borders).

Fast path (why it is fast): for Haar the transform and its inverse are add/subtract butterflies
over the four pixels of each 2x2 block (one pass each in the C++ CPU kernels, else a few tensor
ops on strided views) instead of stride-2 grouped (transposed) convs; the learnable per-channel
scales are folded into the depthwise conv weights (a scale after a depthwise conv is a scale of
its kernel), so no extra full-size elementwise passes run; the deeper reconstruction is added
into the LL band in place of a concatenation; and with stride 2 only the even output pixels of
the top-level inverse transform are formed. Every other wavelet takes
the general conv-based path. Both paths are tested against the straightforward published
computation (``convzoo_mm.analysis.references.PublishedWTConv2d``).
"""
import functools
import math
from typing import Dict, Optional, Tuple

import pywt
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import cpu_kernels, crop, owned, pad_to_multiple, tracing
from ..ops.cpu_kernels import depthwise_conv2d
from ..registry import register
from .checks import (check_bool, check_divides, check_input, check_int, check_same_padding,
                     check_square, empty_batch, empty_batch_forward, known_options,
                     same_padding)
from .state_dict import LayerStateDict

__all__ = ['WTConv', 'wavelet_filter_bank', 'wavelet_analysis', 'wavelet_synthesis',
           'haar_analysis', 'haar_synthesis']

# ----------------------------------------------------------------------------- the math
def check_wavelet(wt_type) -> pywt.Wavelet:
    """Return ``pywt.Wavelet(wt_type)`` for an orthogonal discrete wavelet, else ValueError."""
    names = pywt.wavelist(kind='discrete')
    if not isinstance(wt_type, str) or wt_type not in names:
        raise ValueError(f"wt_type={wt_type!r} is not a discrete wavelet known to pywavelets; "
                         f"use an orthogonal one such as 'db1' (Haar), 'db2', 'sym4', 'coif1' "
                         f"(all names: pywt.wavelist(kind='discrete'))")
    w = pywt.Wavelet(wt_type)
    if not w.orthogonal:
        raise ValueError(f'wt_type={wt_type!r} is not orthogonal (biorthogonal wavelets are not '
                         f"supported); use e.g. 'db1', 'db2', 'sym4', 'coif1'")
    return w


def wavelet_filter_bank(wt_type: str, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Analysis and synthesis filters, each (4, L, L), band order LL, LH(rows), HL(cols), HH.

    Analysis correlates with the reversed pywavelets decomposition filters (so Haar analysis
    equals ``pywt.dwt2(x, 'haar')``); for orthogonal wavelets the synthesis filters are the same
    2-D filters, used in a transposed conv.
    """
    w = check_wavelet(wt_type)
    # on the CPU whatever the default device (e.g. inside ``with torch.device('meta')``)
    lo, hi = (torch.tensor(f[::-1], dtype=torch.float64, device='cpu')
              for f in (w.dec_lo, w.dec_hi))
    bank = torch.stack([torch.outer(lo, lo), torch.outer(hi, lo), torch.outer(lo, hi),
                        torch.outer(hi, hi)])
    lo_r, hi_r = (torch.tensor(f, dtype=torch.float64, device='cpu')
                  for f in (w.rec_lo, w.rec_hi))
    rec = torch.stack([torch.outer(lo_r, lo_r), torch.outer(hi_r, lo_r), torch.outer(lo_r, hi_r),
                       torch.outer(hi_r, hi_r)])
    return bank.to(dtype), rec.to(dtype)


def _periodic_index(size: int, before: int, after: int, device) -> torch.Tensor:
    return torch.arange(-before, size + after, device=device) % size


def _per_channel(bank: torch.Tensor, c: int, dtype) -> torch.Tensor:
    """(4C, 1, L, L) grouped-conv weight from a (4, L, L) bank (or that weight, given as is)."""
    weight = bank if bank.dim() == 4 else bank.repeat(c, 1, 1).unsqueeze(1)
    return weight.to(dtype)


def _fold_periodic(x: torch.Tensor, dim: int, length: int, before: int) -> torch.Tensor:
    """Sum the entries of ``x`` along ``dim`` by their periodic index ``(j - before) % length``
    (the adjoint of a periodic extension by ``before`` entries in front): zero-pad so that the
    blocks of ``length`` line up, then add the blocks. Plain pad/reshape/sum, so it exports."""
    last = x.dim() - 1                   # positive dims: the ONNX exporter mishandles -1 here
    x = x.transpose(dim, last)
    front = (-before) % length
    total = x.shape[last] + front
    x = F.pad(x, (front, (-total) % length))
    x = x.reshape(*x.shape[:last], -1, length).sum(last)
    return x.transpose(dim, last)


def wavelet_analysis(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """One level of the 2-D DWT of every channel. x: (N, C, H, W), H and W even; bank: (4, L, L)
    (or the (4C, 1, L, L) grouped-conv weight made of it).

    Returns (N, C, 4, H/2, W/2). Filters longer than 2 taps see a periodic extension of x.
    """
    n, c, h, w = x.shape
    size = bank.shape[-1]
    if size > 2:
        before = size // 2 - 1
        after = size - 2 - before
        x = x.index_select(2, _periodic_index(h, before, after, x.device))
        x = x.index_select(3, _periodic_index(w, before, after, x.device))
    weight = _per_channel(bank, c, x.dtype)
    return F.conv2d(x, weight, stride=2, groups=c).reshape(n, c, 4, h // 2, w // 2)


def wavelet_synthesis(y: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`wavelet_analysis` for orthogonal wavelets. y: (N, C, 4, h, w) ->
    (N, C, 2h, 2w). For filters longer than 2 taps the overhang of the transposed conv is folded
    back periodically (the adjoint of the periodic extension)."""
    n, c, _, h, w = y.shape
    size = bank.shape[-1]
    weight = _per_channel(bank, c, y.dtype)
    x = F.conv_transpose2d(y.reshape(n, 4 * c, h, w), weight, stride=2, groups=c)
    if size > 2:
        before = size // 2 - 1
        for dim, length in ((2, 2 * h), (3, 2 * w)):
            x = _fold_periodic(x, dim, length, before)
    return x


def _haar_analysis(x: torch.Tensor) -> torch.Tensor:
    if cpu_kernels.applies_untracked(x):
        return cpu_kernels.haar_analysis_cl(x).permute(0, 3, 4, 1, 2)
    x = _pad_even(x)
    n, c, h, w = x.shape
    px = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
    p00, p01, p10, p11 = px[:, :, 0, :, 0], px[:, :, 0, :, 1], px[:, :, 1, :, 0], px[:, :, 1, :, 1]
    s1, d1, s2, d2 = p00 + p01, p00 - p01, p10 + p11, p10 - p11
    bands = torch.stack([s1 + s2, s1 - s2, d1 + d2, d1 - d2], dim=-1).mul_(0.5)
    return bands.permute(0, 3, 4, 1, 2)


def _haar_synthesis(y: torch.Tensor, ll_extra: Optional[torch.Tensor], size,
                    add: Optional[torch.Tensor] = None) -> torch.Tensor:
    if cpu_kernels.applies_untracked(y, ll_extra, add):
        return cpu_kernels.haar_synthesis_cl(y.permute(0, 3, 4, 1, 2), ll_extra, size,
                                             add).permute(0, 3, 1, 2)
    n, c, _, h, w = y.shape
    ll, lh, hl, hh = y.permute(0, 3, 4, 1, 2).unbind(-1)          # each (N, h, w, C)
    if ll_extra is not None:
        ll = ll + ll_extra.permute(0, 2, 3, 1)
    p, q, r, t = ll + lh, ll - lh, hl + hh, hl - hh
    rows = (torch.stack([p + r, p - r], dim=3), torch.stack([q + t, q - t], dim=3))
    out = torch.stack(rows, dim=2).mul_(0.5)                       # (N, h, 2, w, 2, C)
    out = out.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)[..., :size[0], :size[1]]
    return out if add is None else add + out


class _HaarAnalysis(torch.autograd.Function):
    """The Haar transform is orthogonal, so its backward is the synthesis of the gradient: as
    cheap as the forward (autograd through the strided slices would zero-fill four input-sized
    buffers instead). The zero padding of odd sizes and the crop are adjoint too."""

    @staticmethod
    def forward(ctx, x):
        ctx.size = x.shape[-2:]
        return owned(_haar_analysis(x))  # public (haar_analysis): a tensor of its own

    @staticmethod
    def backward(ctx, grad):
        return _haar_synthesis(grad, None, ctx.size)


class _HaarSynthesis(torch.autograd.Function):
    """Backward = analysis of the gradient; the LL band of it is the gradient of ``ll_extra``
    and the gradient itself that of ``add``."""

    @staticmethod
    def forward(ctx, y, ll_extra, size, add):
        ctx.has_extra, ctx.has_add = ll_extra is not None, add is not None
        return owned(_haar_synthesis(y, ll_extra, size, add))  # the layer's output too

    @staticmethod
    def backward(ctx, grad):
        bands = _haar_analysis(grad)
        return (bands, bands[:, :, 0] if ctx.has_extra else None, None,
                grad if ctx.has_add else None)


def haar_analysis(x: torch.Tensor) -> torch.Tensor:
    """Haar DWT (same result as :func:`wavelet_analysis` with the db1 bank).

    x: (N, C, H, W) -> (N, C, 4, h, w), h = ceil(H/2), w = ceil(W/2) (an odd size is zero-padded
    by one row/column at the bottom/right), returned as a view whose memory is (N, h, w, C, 4):
    ``reshape(N, 4C, h, w)`` of it is a channels_last tensor with the published channel order
    c*4 + band, ready for the depthwise level conv without a copy.
    """
    if tracing():   # a recorded Function call could not be saved (TorchScript) or exported
        return _haar_analysis(x)
    return _HaarAnalysis.apply(x)


def haar_synthesis(y: torch.Tensor, ll_extra: Optional[torch.Tensor] = None,
                   size: Optional[Tuple[int, int]] = None,
                   add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse Haar DWT of ``y`` with ``ll_extra`` (N, C, h, w) added to its LL band first.
    y: (N, C, 4, h, w) -> (N, C, 2h, 2w), channels_last, cropped to ``size`` = (H, W) if given
    (the inverse of :func:`haar_analysis` of an odd-sized input), plus ``add`` (N, C, H, W)."""
    h, w = y.shape[-2:]
    size = tuple(size) if size is not None else (2 * h, 2 * w)
    if tracing():   # export records the tensor ops (the Function's size would not)
        return _haar_synthesis(y, ll_extra, size, add)
    return _HaarSynthesis.apply(y, ll_extra, size, add)


def haar_synthesis_even_pixels(y: torch.Tensor, ll_extra: Optional[torch.Tensor] = None):
    """``haar_synthesis(y, ll_extra)[..., ::2, ::2]`` without forming the other three pixels."""
    out = y.sum(dim=2)
    if ll_extra is not None:
        out = out + ll_extra
    return out * 0.5


def _fused_ops():
    """The optional Triton kernels (:mod:`convzoo_mm.ops.haar_wtconv`), imported on first use:
    CPU runs never need Triton, so importing convzoo_mm does not import it."""
    from ..ops import haar_wtconv
    return haar_wtconv


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad an odd height/width by one row/column at the bottom/right. While a graph is
    recorded the pad is always recorded (of ``size % 2``), so a ``jit.trace`` / TorchScript ONNX
    graph serves both parities (``torch.export`` guards on the example's sizes for wavelets
    other than Haar: the per-level pads and crops nest size expressions it cannot compare)."""
    h, w = x.shape[-2:]
    return pad_to_multiple(x, 2) if tracing() or h % 2 or w % 2 else x


def _depthwise(x, weight, bias, dilation, kernel_size, stride=1):
    """Depthwise conv with PyTorch 'same' padding (asymmetric for even kernels)."""
    before, after = same_padding(kernel_size, dilation)
    if before == after and stride == 1:
        return depthwise_conv2d(x, weight, bias, before, dilation)
    if before == after:
        return F.conv2d(x, weight, bias, stride, before, dilation, x.shape[1])
    out = F.conv2d(x, weight, bias, 1, 'same', dilation, x.shape[1])
    return out[..., ::stride, ::stride] if stride > 1 else out


# ----------------------------------------------------------------------------- the module
def _rebuild_filters_after_load(module, incompatible_keys) -> None:
    """``load_state_dict`` post hook of :class:`WTConv` (a module-level function: picklable)."""
    module._rebuild_filters()


class _ChannelScale(nn.Module):
    """A learnable per-channel multiplier of shape (1, C, 1, 1) (published ``_ScaleModule``)."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.init = init
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def reset_parameters(self):
        nn.init.constant_(self.weight, self.init)

    def forward(self, x):
        return self.weight * x


@register
class WTConv(LayerStateDict, nn.Module):
    """Wavelet convolution, usable in any mmcv conv slot (``conv_cfg=dict(type='WTConv')``).

    With ``in_channels == out_channels == groups`` it is the published depthwise ``WTConv2d``
    (same outputs, gradients, parameters and state-dict names). Otherwise it is that depthwise
    WTConv on the input channels followed by a 1x1 conv ``in_channels -> out_channels`` with
    ``groups`` (the authors' advice for in != out), so it replaces a dense k x k conv.

    Parameters (C = in_channels, O = out_channels, k = kernel_size, L = wt_levels):
    depthwise part ``C*k*k + C`` (base conv + base scale) ``+ L*(4*C*k*k + 4*C)`` (level convs +
    scales) ``+ C`` bias when depthwise-only; the pointwise part adds ``O*C/groups + O`` (bias).
    For k=5 that is 27 + 104*L per channel (published). Wavelet filters are non-trainable buffers.

    Args:
        in_channels (int): C, channels of the input (N, C, H, W).
        out_channels (int): O, channels of the output (N, O, ceil(H/stride), ceil(W/stride)).
        kernel_size (int | tuple): k (square), odd or even. Default 5.
        stride (int | tuple): output subsampling (square). The output equals the stride-1 output
            at every stride-th pixel, as published. Default 1.
        padding (None | str | int): only 'same' padding is supported: None, 'same', or for odd k
            the int ``dilation*(k-1)//2`` (what mm layers pass). Anything else is an error.
        dilation (int | tuple): dilation of all depthwise convs (base and levels). Default 1.
        groups (int): groups of the 1x1 conv used when not depthwise-only. Default 1.
        bias (bool): bias of the base conv (depthwise-only) or of the 1x1 conv. Default True.
        wt_levels (int): L >= 0 wavelet levels. Default 1.
        wt_type (str): orthogonal pywavelets wavelet name ('db1' = Haar). Default 'db1'.
        impl (str): 'auto' (default) runs the fused Triton kernels
            (:mod:`convzoo_mm.ops.haar_wtconv`) for CUDA inputs when Triton is installed, the
            wavelet is Haar and k is odd (under torch.compile as two custom ops,
            ``torch.ops.convzoo_mm.haar_wtconv_forward`` / ``_backward``), and the PyTorch path
            otherwise (float64 inputs, and while ``jit.trace``, ONNX export or
            ``torch.export`` records a graph); 'torch' always takes the PyTorch path;
            'triton' requires the kernels (CUDA inputs, or CPU under ``TRITON_INTERPRET=1``).
            Same outputs either way. The kernels accumulate in float32 and give first
            derivatives only (a second derivative through them raises; use 'torch').

    Shape:
        input (N, C, H, W) with any H, W >= 1 -> output (N, O, ceil(H/s), ceil(W/s)).
    """
    _version = 1  # state-dict layout (convzoo_mm.layers.state_dict); no renames so far

    @known_options
    def __init__(self, in_channels: int, out_channels: int, kernel_size=5, stride=1,
                 padding: Optional[object] = None, dilation=1, groups: int = 1, bias: bool = True,
                 wt_levels: int = 1, wt_type: str = 'db1', impl: str = 'auto'):
        super().__init__()
        in_channels = check_int('in_channels', in_channels)
        out_channels = check_int('out_channels', out_channels)
        k = check_square('kernel_size', kernel_size)
        s = check_square('stride', stride)
        d = check_square('dilation', dilation)
        groups = check_int('groups', groups)
        check_divides('in_channels', in_channels, 'groups', groups)
        check_divides('out_channels', out_channels, 'groups', groups)
        check_same_padding(padding, k, d)
        check_bool('bias', bias)
        self.wt_levels = check_int('wt_levels', wt_levels, 0)
        self.wt_type = wt_type
        self.is_haar = check_wavelet(wt_type).dec_len == 2
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = (k, k), (s, s), (d, d)
        self.padding = (same_padding(k, d)[0],) * 2
        self.transposed, self.output_padding = False, (0, 0)
        self.depthwise_only = in_channels == out_channels == groups
        if impl not in ('auto', 'torch', 'triton'):
            raise ValueError(f"impl={impl!r}: use 'auto', 'torch' or 'triton'")
        if impl == 'triton' and not (_fused_ops().AVAILABLE and self.is_haar and k % 2):
            raise ValueError(f"impl='triton' needs Triton installed (installed: "
                             f"{_fused_ops().AVAILABLE}), wt_type='db1' (got {wt_type!r}) and an "
                             f"odd kernel_size (got {k}); use impl='auto' to fall back to PyTorch")
        self.impl = impl

        c = in_channels
        self.base_conv = nn.Conv2d(c, c, k, padding='same', dilation=d, groups=c,
                                   bias=bias and self.depthwise_only)
        self.base_scale = _ChannelScale(c, 1.0)
        self.wavelet_convs = nn.ModuleList(
            nn.Conv2d(4 * c, 4 * c, k, padding='same', dilation=d, groups=4 * c, bias=False)
            for _ in range(self.wt_levels))
        self.wavelet_scale = nn.ModuleList(_ChannelScale(4 * c, 0.1)
                                           for _ in range(self.wt_levels))
        self.pointwise = None if self.depthwise_only else nn.Conv2d(
            c, out_channels, 1, groups=groups, bias=bias)
        # the fixed filters (float64, cast to the input's dtype at use) beside the weights (a
        # default device such as 'cuda' or 'meta' included); not in the state dict: after a load
        # rebuilt where the weights landed (meta build, then load_state_dict(assign=True))
        for name, filters in self._filters(self.base_conv.weight.device).items():
            self.register_buffer(name, filters, persistent=False)
        self.register_load_state_dict_post_hook(_rebuild_filters_after_load)
        self.init_weights()

    # Called when built, and by mmengine after the init_cfg of a BaseModule parent (ResNet
    # blocks, our backbones); not in ConvModule lists (FPN, heads): README, Initialisation.
    def init_weights(self):
        """Published initialisation of the published (depthwise) part: PyTorch's default conv
        init, base scale 1.0, level scales 0.1 (so the layer starts close to its base depthwise
        conv). The 1x1 ``pointwise`` conv of the ``in != out`` form is not part of the published
        layer: it keeps the init its host gave it (e.g. an mm ResNet's Kaiming ``init_cfg``,
        as the dense conv it replaces gets; PyTorch's default when built alone)."""
        for m in (self.base_conv, self.base_scale, *self.wavelet_convs, *self.wavelet_scale):
            m.reset_parameters()

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        # the fixed filters from float64 again after any conversion, where the buffers now are:
        # exact after a round trip through half precision, filled after to_empty()
        self._rebuild_filters(self.wt_filter.device)
        return self

    def _filters(self, device, dtype=torch.float64) -> Dict[str, torch.Tensor]:
        """The fixed wavelet filter buffers as built from ``wt_type``: ``{'wt_filter': (4C, 1,
        n, n), 'iwt_filter': ...}`` on ``device``."""
        bank, rec = wavelet_filter_bank(self.wt_type, torch.float64)
        c = self.in_channels
        return {name: filters.repeat(c, 1, 1).unsqueeze(1).to(device, dtype)
                for name, filters in (('wt_filter', bank), ('iwt_filter', rec))}

    def _rebuild_filters(self, device: Optional[torch.device] = None) -> None:
        """Recompute the fixed wavelet filter buffers (not in the state dict) on ``device``
        (default: that of the weights), keeping their dtype: memory made by ``to_empty()`` or
        left on the meta device by ``load_state_dict(assign=True)`` would hold no filters."""
        device = self.base_conv.weight.device if device is None else device
        if device.type != 'meta':
            for name, filters in self._filters(device).items():
                setattr(self, name, filters.to(getattr(self, name).dtype))

    def extra_repr(self):
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, dilation={self.dilation}, groups={self.groups}, '
                f"wt_levels={self.wt_levels}, wt_type='{self.wt_type}'")

    def _upgrade_state_dict(self, state_dict, prefix, version, error_msgs):
        # Published checkpoints store the frozen filters (and a ones ``stride_filter``) as
        # parameters. They carry no learned information: check they match, then drop them.
        expected = self._filters('cpu')  # not the buffers: to_empty() or meta memory
        for name in ('wt_filter', 'iwt_filter'):
            saved = state_dict.pop(prefix + name, None)
            mine = expected[name]
            # to the saved precision: a half-precision checkpoint holds rounded filters
            atol = max(1e-6, torch.finfo(saved.dtype).eps) if (
                saved is not None and saved.is_floating_point()) else 1e-6
            if saved is not None and (saved.shape != mine.shape or not torch.allclose(
                    saved.detach().to('cpu', torch.float64), mine, atol=atol)):
                error_msgs.append(
                    f'{prefix}{name}: the checkpoint\'s wavelet filters (shape '
                    f'{tuple(saved.shape)}) differ from wt_type={self.wt_type!r} with '
                    f'in_channels={self.in_channels}; build the layer with the wavelet it was '
                    f'trained with')
        state_dict.pop(prefix + 'stride_filter', None)

    @staticmethod
    def _options_from_shapes(shapes):
        """Options implied by the shapes: base_conv.weight (C, 1, k, k), one wavelet_convs.i
        per level, pointwise.weight (O, C/groups, 1, 1) unless depthwise-only."""
        base = shapes.get('base_conv.weight')
        if base is None or len(base) != 4:
            return None
        levels = [int(k.split('.')[1]) for k in shapes if k.startswith('wavelet_convs.')]
        opts = dict(in_channels=base[0], kernel_size=base[-1],
                    wt_levels=1 + max(levels, default=-1))
        pw = shapes.get('pointwise.weight')
        if pw is None:
            opts.update(out_channels=base[0], groups=base[0], bias='base_conv.bias' in shapes)
        else:
            opts.update(out_channels=pw[0], groups=base[0] // pw[1],
                        bias='pointwise.bias' in shapes)
        return opts

    def _base_weights(self):
        """Base conv weight (C, 1, k, k) and bias (C,) or None with the base scale folded in (a
        scale after a depthwise conv is a scale of its kernel)."""
        scale = self.base_scale.weight.reshape(-1)
        weight = self.base_conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = None if self.base_conv.bias is None else self.base_conv.bias * scale
        return weight, bias

    def _level_weight(self, i: int) -> torch.Tensor:
        """Level i's depthwise weight (4C, 1, k, k), channel c*4 + band, scale folded in."""
        return self.wavelet_convs[i].weight * self.wavelet_scale[i].weight.reshape(-1, 1, 1, 1)

    def _level_conv(self, bands: torch.Tensor, i: int) -> torch.Tensor:
        """Scaled depthwise conv of the (N, C, 4, h, w) subbands of level i."""
        n, c, _, h, w = bands.shape
        out = _depthwise(bands.reshape(n, 4 * c, h, w), self._level_weight(i), None,
                         self.dilation[0], self.kernel_size[0])
        return out.reshape(n, c, 4, h, w)

    def uses_fused_kernels(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` runs the Triton kernels for this input (see ``impl``)."""
        if self.impl == 'triton':
            if not _fused_ops().runs_on(x):
                raise ValueError(f"impl='triton': the Triton kernels run on CUDA inputs (or on "
                                 f"the CPU with TRITON_INTERPRET=1 set before import), got an "
                                 f"input on {x.device}; use impl='auto' or 'torch'")
            return True
        # the kernels accumulate in float32 (float64 keeps the PyTorch path) and index one
        # image, and the positions of the batch (with some overshoot past the last), in 32 bits
        return (self.impl == 'auto' and x.is_cuda and self.is_haar
                and self.kernel_size[0] % 2 == 1 and x.numel() > 0 and not tracing()
                and x.dtype != torch.float64 and x.numel() // x.shape[0] < 2 ** 31
                and x.numel() // x.shape[1] < 2 ** 30 and _fused_ops().AVAILABLE)

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise WTConv at stride 1 through :func:`convzoo_mm.ops.haar_wtconv.haar_wtconv`."""
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return _fused_ops().haar_wtconv(
            x, self.base_conv.weight, self.base_conv.bias, self.base_scale.weight,
            [m.weight for m in self.wavelet_convs], [m.weight for m in self.wavelet_scale],
            self.dilation[0], check=False)

    def _wavelet_path(self, x: torch.Tensor, stride: int, base: torch.Tensor) -> torch.Tensor:
        """``base`` (the base conv's output) plus all levels' reconstructions, at the output size
        (only the even pixels are formed when the Haar stride-2 shortcut applies).

        Under ``torch.export`` the Haar levels run as convs on the input padded once to a
        multiple of ``2**levels`` (:func:`~convzoo_mm.ops.pad_to_multiple`) and are cropped
        once at the end: same values (a level's zero pad is the zero tail of this one: Haar
        bands of zero 2x2 blocks are zero), and no per-level pad or crop whose nested size
        expressions
        ``torch.export`` could not compare, so H and W stay symbolic. What the level convs
        write into the padding reaches only pixels past each level's size, which the crops
        drop. (``jit.trace`` / TorchScript ONNX graphs keep the per-level form: their sizes
        need no proofs, and the padded levels would cost up to ~30% more level pixels.)"""
        size = x.shape[-2:]
        padded = self.is_haar and torch.compiler.is_exporting()
        if self.is_haar and not padded:
            analysis, synthesis = haar_analysis, haar_synthesis
        else:
            bank = self.wt_filter      # (4C, 1, L, L): no channel count taken from the input
            analysis = functools.partial(wavelet_analysis, bank=bank)

            def synthesis(bands, ll_extra, size, add=None):
                if ll_extra is not None:
                    bands = torch.cat([(bands[:, :, 0] + ll_extra).unsqueeze(2), bands[:, :, 1:]],
                                      dim=2)
                out = wavelet_synthesis(bands, bank)
                if not padded:
                    out = out[..., :size[0], :size[1]]
                return out if add is None else add + out
        if padded:  # (NCHW: mixed layouts make export compare symbolic strides)
            x = pad_to_multiple(x.contiguous(), 2 ** self.wt_levels)
        filtered, shapes = [], []
        ll = x
        for i in range(self.wt_levels):
            shapes.append(ll.shape[-2:])
            bands = analysis(ll if self.is_haar else _pad_even(ll))
            ll = bands[:, :, 0]
            filtered.append(self._level_conv(bands, i))
        rec = None
        for i in reversed(range(self.wt_levels)):
            if i == 0 and stride == 2 and self.is_haar:
                even = haar_synthesis_even_pixels(filtered[0], rec)
                if padded:
                    even = crop(even, base.shape[-2:]).contiguous(
                        memory_format=torch.channels_last)
                return base + even
            last = i == 0 and stride == 1 and not padded
            rec = synthesis(filtered[i], rec, shapes[i], base if last else None)
        if padded:  # (in base's layout: mixed layouts make export compare symbolic strides)
            rec = crop(rec, size)
            if stride > 1:
                rec = crop(rec[..., ::stride, ::stride], base.shape[-2:])
            return base + rec.contiguous(memory_format=torch.channels_last)
        return rec if stride == 1 else base + rec[..., ::stride, ::stride]

    def count_flops(self, input_shape) -> int:
        """Multiply-accumulates for an input (N, C, H, W), counted as the equivalent convs:

        * base conv: ``C*k*k`` per output pixel;
        * per level, input padded to (Ph, Pw), wavelet of L taps: the transform ``C*Ph*Pw*L*L``
          (4C outputs at Ph*Pw/4 pixels with L*L taps; ``4*C*Ph*Pw`` for Haar), the level conv
          ``C*Ph*Pw*k*k`` and the inverse as much as the transform (a quarter of it at the top
          level when the Haar stride-2 shortcut runs);
        * the 1x1 conv (not depthwise-only): ``O*C/groups`` per output pixel.

        Element-wise scales and additions are not counted (mmengine convention)."""
        n, c, h, w = (int(v) for v in input_shape)
        k, s = self.kernel_size[0], self.stride[0]
        taps = self.wt_filter.shape[-1] ** 2
        ho, wo = math.ceil(h / s), math.ceil(w / s)
        total = c * k * k * ho * wo
        for i in range(self.wt_levels):
            ph, pw = h + h % 2, w + w % 2
            transform = c * ph * pw * taps
            inverse = transform // 4 if (i == 0 and s == 2 and self.is_haar) else transform
            total += transform + c * ph * pw * k * k + inverse
            h, w = ph // 2, pw // 2
        if self.pointwise is not None:
            total += self.out_channels * (c // self.groups) * ho * wo
        return n * total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, O, ceil(H/stride), ceil(W/stride))."""
        check_input(x, self.in_channels, 'WTConv')
        if empty_batch(x):
            return empty_batch_forward(self.forward, x)
        s = self.stride[0]
        if self.uses_fused_kernels(x):
            out = self._fused_forward(x)
            if s > 1:
                out = out[..., ::s, ::s]
        else:
            # Depthwise convs run fastest (and the Haar path copy-free) in channels_last on CPU.
            x = x.contiguous(memory_format=torch.channels_last)
            weight, bias = self._base_weights()
            out = _depthwise(x, weight, bias, self.dilation[0], self.kernel_size[0], s)
            if self.wt_levels:
                out = self._wavelet_path(x, s, out)
        if self.pointwise is not None:
            out = self.pointwise(out)
        return out
