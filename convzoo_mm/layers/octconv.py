"""OctaveConv (Chen et al., "Drop an Octave", ICCV 2019, arXiv 1904.05049) for mm conv slots.

Feature maps are split along channels into a *high* part at full resolution and a *low* part at
half resolution. Four paths mix them::

    Y_high = conv_HH(X_high) + up(conv_LH(X_low))        (stride 1)
    Y_low  = conv_HL(pool(X_high)) + conv_LL(X_low)

Conventions of this implementation (read before loading or comparing checkpoints):

* **Channel split**: ``low = int(round(alpha * C))``, ``high = C - low``; high channels come
  first in every tensor and in the weight. A split that leaves a branch empty while
  ``alpha > 0`` is a ``ValueError``.
* **One weight** of the plain conv's shape ``(out, in // groups, k, k)``: rows ``[:out_high]``
  are the high outputs, columns ``[:in_high // groups]`` the high inputs; the four paths are
  its four blocks. A plain-conv checkpoint loads unchanged, and with ``alpha_in = alpha_out = 0``
  the layer *is* ``F.conv2d`` (stride included).
* **Half resolution** of a size ``n`` is ``ceil(n / 2)``: 2x2 average pooling with
  ``ceil_mode=True`` (a partial border window averages the pixels it covers). The low branch is
  brought back to full size by nearest x2 upsampling cropped to the exact high size, so odd
  sizes never crash and the output size always equals the plain conv's (``ceil(H / stride)``).
* **Stride 2** (with a low branch on either side) = 2x2 average pooling followed by stride-1
  convs, as in the paper and the authors' code: ``Y_high = conv_HH(pool(X_high)) +
  conv_LH(X_low)`` (no upsampling), ``Y_low = conv_HL(pool(pool(X_high))) + conv_LL(pool(X_low))``.
* **Padding** is always 'same' (``dilation * (k - 1) // 2`` for odd ``k``), on every path;
  dilation passes to every path unchanged.
* **groups**: every path is a grouped conv with the same ``groups`` (each branch must split
  evenly); depthwise (``groups == in_channels``) drops the cross-frequency paths and requires
  the output split to follow the input split (``out_low == in_low * out // in``).
* **Bias** (``out``,): ``bias[:out_high]`` is added to ``Y_high``, ``bias[out_high:]`` to ``Y_low``.

Fast path (``groups == 1``, eager mode; :class:`_FusedOctaveConv`): paths that read inputs at
the same resolution run as *one* conv on the channel-concatenated input with the matching rows
of the weight, so the layer runs 2 or 3 larger convs instead of 4 small ones, with no wasted
multiplications: at stride 1 ``Y_low = conv([pool(X_high), X_low], W[out_high:])``; at stride 2
both outputs read ``P = [pool(X_high), X_low]``: ``Y_high = conv(P, W[:out_high])``,
``Y_low = conv(pool(P), W[out_high:])``. 1x1 paths run as GEMMs, and the backward is written by
hand (see the class for why that is faster). The drop-in layer (one tensor in and out) has its
own Function on the same cores (:class:`_FusedOctaveDropIn`: one pooled map serves both the low
input and the pooled conv input, outputs are written into the merged map). Grouped/depthwise
layers, tracing (ONNX, FLOP analysers) and ``torch.compile`` use the path-by-path form
:func:`_octave_paths`; they are tested against each other.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import cpu_kernels, crop, eager, first_order_only, owned, pad_to_multiple, tracing
from ..registry import register
from .checks import (check_bool, check_choice, check_float, check_input, check_int,
                     check_same_padding, check_square, empty_batch, empty_batch_forward,
                     known_options)
from .state_dict import LayerStateDict

__all__ = ['OctaveConv', 'OctaveConvModule', 'split_channels', 'check_split', 'half_size',
           'octave_pool', 'octave_upsample', 'octave_add_upsampled', 'octave_conv2d',
           'octave_conv_flops', 'octave_merge', 'octave_norm', 'octave_apply']

OctTensor = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------------------------
# math
# --------------------------------------------------------------------------------------------
def split_channels(channels: int, alpha: float) -> Tuple[int, int]:
    """``(high, low)`` channel counts: ``low = int(round(alpha * channels))``."""
    low = int(round(alpha * channels))
    return channels - low, low


def check_split(name: str, alpha: float, channels: int, where: str = '') -> Tuple[int, int]:
    """:func:`split_channels`, or ValueError naming ``name`` when ``alpha > 0`` leaves a branch
    empty (``where`` says which channels, e.g. for a backbone's stage)."""
    high, low = split_channels(channels, alpha)
    if alpha > 0 and (low == 0 or high == 0):
        use = (f'{name}=0 (one channel cannot be split)' if channels == 1 else
               f'{name}=0 or {name} in [{1 / channels:.4g}, {(channels - 1) / channels:.4g}]')
        raise ValueError(
            f'{name}={alpha} splits {channels} channels{where} into high={high}, low={low} '
            f'(low = round({name} * channels)); both branches need at least one channel: use '
            f'{use}')
    return high, low


def half_size(n: int) -> int:
    """Size of the low-frequency branch for a high size ``n``: ``ceil(n / 2)``."""
    return (n + 1) // 2


def _sum_2x2(x: torch.Tensor) -> torch.Tensor:
    """Sum over the 2x2 windows of an even-sized map: pairs of rows first (whole rows, so the
    inner loop runs over contiguous memory), then pairs of columns; about 2x faster on CPU than
    adding four strided views."""
    rows = x[..., 0::2, :] + x[..., 1::2, :]
    return torch.add(rows[..., 0::2], rows[..., 1::2])


def _add_up(y: torch.Tensor, low: torch.Tensor, out: Optional[torch.Tensor] = None,
            alpha: float = 1) -> None:
    """``out = y + alpha * octave_upsample(low, y.shape[-2:])`` (``out=None``: in place), ``low``
    of size ``ceil(H/2) x ceil(W/2)``: four strided adds, one per position in the 2x2 window,
    each with the rows/columns of ``low`` it covers (a 6-d broadcast add has an inner loop of 2
    and is 2-3x slower on CPU; the upsampled map is never built)."""
    if out is None and y.dtype == low.dtype and cpu_kernels.rows_contiguous(y, low):
        cpu_kernels.octave_spread(low, y, alpha, accumulate=True)  # one pass (C++)
        return
    h, w = y.shape[-2:]
    for i in (0, 1):
        for j in (0, 1):
            lo = low[..., :(h - i + 1) // 2, :(w - j + 1) // 2]
            if out is None:
                y[..., i::2, j::2].add_(lo, alpha=alpha)
            else:
                torch.add(y[..., i::2, j::2], lo, alpha=alpha, out=out[..., i::2, j::2])


def _upsample_into(low: torch.Tensor, out: torch.Tensor) -> None:
    """``out = octave_upsample(low, out.shape[-2:])`` written into ``out`` (e.g. a channel slice
    of the merged output): one pass in C++, else two copies that write whole rows (columns
    doubled, then rows; a single broadcast copy has an inner loop of 2)."""
    if low.dtype == out.dtype and cpu_kernels.rows_contiguous(low, out):
        cpu_kernels.octave_spread(low, out)  # one pass (C++)
        return
    n, c, h, w = low.shape
    size = out.shape[-2:]
    cols = low.unsqueeze(-1).expand(n, c, h, w, 2).reshape(n, c, h, 2 * w)[..., :size[1]]
    if size[0] == 2 * h:
        out.view(n, c, h, 2, size[1]).copy_(cols.unsqueeze(-2).expand(n, c, h, 2, size[1]))
    else:  # odd height: even and odd rows separately
        out[..., 0::2, :].copy_(cols)
        out[..., 1::2, :].copy_(cols[..., :size[0] // 2, :])


def _is_even(x: torch.Tensor) -> bool:
    return x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0


def _pool_even(x: torch.Tensor) -> torch.Tensor:
    return _sum_2x2(x).mul_(0.25)


class _PoolEven(torch.autograd.Function):
    """2x2 mean of an even-sized map from strided views (no im2col-style kernel); backward: the
    gradient / 4 broadcast back over each window."""

    @staticmethod
    def forward(ctx, x):
        return _pool_even(x)

    @staticmethod
    @first_order_only('OctaveConv')
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return _pool_grad(g, (2 * g.shape[-2], 2 * g.shape[-1]))


def _eager_grad(*tensors) -> bool:
    """Whether a custom-backward fast path applies: eager autograd (not tracing/compiling)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors) and eager()


def octave_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, stride 2, ``ceil_mode=True`` (``H -> ceil(H / 2)``; a partial
    border window averages the pixels it covers): ``F.avg_pool2d(x, 2, 2, ceil_mode=True,
    count_include_pad=False)``. Even sizes take a faster path (strided views), except while
    a graph is recorded: there the size is symbolic and the one form serves every size."""
    if tracing():
        return _pool_traced(x)
    if x.dim() != 4 or not _is_even(x):
        return F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    if _eager_grad(x):
        return _PoolEven.apply(x)
    return _pool_even(x)


def _pool_traced(x: torch.Tensor) -> torch.Tensor:
    """:func:`octave_pool` for a graph with symbolic sizes: zero-pad odd sizes by one, 2x2
    means, divided by the means of the padded ones (1 for whole windows, 1/2 or 1/4 where a
    window was partial): the same numbers (the divisions by powers of two are exact), and no
    ceil-mode output-size rule that ``torch.export`` would guard on."""
    ones = pad_to_multiple(x.new_ones((1, ) * (x.dim() - 2) + tuple(x.shape[-2:])), 2)
    return F.avg_pool2d(pad_to_multiple(x, 2), 2, 2) / F.avg_pool2d(ones, 2, 2)


def octave_upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest x2 upsampling cropped to ``size`` (the inverse layout of :func:`octave_pool`)."""
    y = F.interpolate(x, scale_factor=2.0, mode='nearest')
    if tracing():  # (symbolic size)
        return crop(y, size)
    if y.shape[-2] != size[0] or y.shape[-1] != size[1]:
        y = y[..., :size[0], :size[1]]
    return y


class _AddUpsampled(torch.autograd.Function):
    """``y + up2(low)`` for even sizes by :func:`_add_up`; the gradient of ``low`` is the 2x2
    window sum of the output gradient (aten's reduction over broadcast dims is several times
    slower on CPU)."""

    @staticmethod
    def forward(ctx, y, low):
        out = torch.empty_like(y)
        _add_up(y, low, out)
        return out

    @staticmethod
    @first_order_only('OctaveConv')
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return g, _sum_2x2(g)


def octave_add_upsampled(y: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``y + octave_upsample(low, y.shape[-2:])`` (the L->H path added to the H->H output)."""
    h, w = y.shape[-2:]
    if eager() and _is_even(y) and low.shape[-2] * 2 == h and low.shape[-1] * 2 == w \
            and y.dtype == low.dtype:
        return _AddUpsampled.apply(y, low)
    return y + octave_upsample(low, (h, w))


def _conv(x, w, b, padding, dilation, groups):
    return F.conv2d(x, w, b, 1, padding, dilation, groups)


def _octave_paths(x_high, x_low, weight, bias, out_high, stride, padding, dilation, groups,
                  depthwise):
    """:func:`octave_conv2d` as the plain four (two if depthwise) path convolutions with
    autograd: grouped and depthwise layers, tracing (ONNX, FLOP analysers), torch.compile, and
    the reference the fused path is tested against."""
    c_out = weight.shape[0]
    rows = [out_high, c_out - out_high]
    has_low_out = rows[1] > 0
    # torch.split (not indexing): its backward is one cat of the block gradients, where
    # indexing would build a zero-filled full-size gradient per block and add them up
    w_h, w_l = weight.split(rows, 0)
    b_h, b_l = (None, None) if bias is None else bias.split(rows, 0)
    if depthwise:
        in_h = x_high.shape[1]
        if stride == 2:
            x_high = octave_pool(x_high)
            x_low = None if x_low is None else octave_pool(x_low)
        y_h = _conv(x_high, w_h, b_h, padding, dilation, in_h)
        y_l = None
        if has_low_out:
            y_l = _conv(x_low, w_l, b_l, padding, dilation, x_low.shape[1])
        return y_h, y_l

    col = x_high.shape[1] // groups  # first low-input column of the weight
    cols = [col, weight.shape[1] - col]
    w_hh, w_lh = w_h.split(cols, 1) if x_low is not None else (w_h, None)
    w_hl, w_ll = (w_l.split(cols, 1) if x_low is not None else (w_l, None)) if has_low_out \
        else (None, None)
    if stride == 2:
        p_h = octave_pool(x_high)
        y_h = _conv(p_h, w_hh, b_h, padding, dilation, groups)
        if x_low is not None:
            y_h = y_h + _conv(x_low, w_lh, None, padding, dilation, groups)
        y_l = None
        if has_low_out:
            y_l = _conv(octave_pool(p_h), w_hl, b_l, padding, dilation, groups)
            if x_low is not None:
                y_l = y_l + _conv(octave_pool(x_low), w_ll, None, padding, dilation, groups)
        return y_h, y_l
    y_h = _conv(x_high, w_hh, b_h, padding, dilation, groups)
    if x_low is not None:
        y_h = octave_add_upsampled(y_h, _conv(x_low, w_lh, None, padding, dilation, groups))
    y_l = None
    if has_low_out:
        y_l = _conv(octave_pool(x_high), w_hl, b_l, padding, dilation, groups)
        if x_low is not None:
            y_l = y_l + _conv(x_low, w_ll, None, padding, dilation, groups)
    return y_h, y_l


# --------------------------------------------------------------------------------------------
# fused fast path (groups == 1)
# --------------------------------------------------------------------------------------------
def _gemm_view(x: torch.Tensor, w: torch.Tensor) -> Optional[torch.Tensor]:
    """For a 1x1 kernel, ``x`` as GEMM operand without a copy: (N, C, H*W) for NCHW strides
    (or a channel slice of NCHW), (N*H*W, C) for channels_last strides (or a slice of it);
    None for other kernels and layouts (those run as convolutions)."""
    if w.shape[-1] != 1 or w.shape[-2] != 1:
        return None
    n, c, h, wd = x.shape
    if x.stride(-1) == 1 and (h == 1 or x.stride(-2) == wd):
        return x.view(n, c, h * wd)
    if x.stride(1) == 1 and (wd == 1 or x.stride(2) == wd * x.stride(3)) and \
            (h * wd == 1 or x.stride(0) == h * wd * x.stride(3)):
        return x.permute(0, 2, 3, 1).view(n * h * wd, c)
    return None


def _path_fwd(x, w, b, padding, dilation, out=None):
    """One stride-1 conv path, into ``out`` if given. A 1x1 kernel is a GEMM: ``W @ X`` per
    sample on NCHW maps (written straight into ``out``, e.g. a channel slice of the drop-in's
    merged output), ``X @ W.T`` over all pixels on channels_last ones. On CPU that is 1.3-2x
    faster than mkldnn's 1x1 conv at the narrow shapes the octave split produces (4x at some,
    e.g. the backward of 128->32 channels at 56x56), and it reads channel slices without
    copying."""
    xm = _gemm_view(x, w)
    om = _gemm_view(out, w) if out is not None and xm is not None and xm.dim() == 3 else None
    if xm is None:
        y = F.conv2d(x, w, b, 1, padding, dilation)
    elif xm.dim() == 2:  # channels_last: (N*H*W, C_in) @ (C_in, C_out)
        n, _, h, wd = x.shape
        y = F.linear(xm, w.flatten(1), b).view(n, h, wd, -1).permute(0, 3, 1, 2)
    elif om is not None and om.dim() == 3:
        w2 = w.flatten(1)
        for i, o in enumerate(om):  # NCHW (slice): each sample's block
            if b is None:
                torch.mm(w2, xm[i], out=o)
            else:
                torch.addmm(b[:, None], w2, xm[i], out=o)
        return out
    else:
        n, _, h, wd = x.shape
        w3 = w.flatten(1).expand(n, -1, -1)
        y = (torch.bmm(w3, xm) if b is None else torch.baddbmm(b[:, None], w3, xm)).view(
            n, -1, h, wd)
    if out is None:
        return y
    return out.copy_(y)


def _path_bwd(g, x, w, padding, dilation, need_x, gw_out, gb_out):
    """The input gradient of :func:`_path_fwd` (None unless ``need_x``); the weight and bias
    gradients are written into ``gw_out`` / ``gb_out`` (blocks of the layer's gradients; None:
    not needed)."""
    xm = _gemm_view(x, w)
    if xm is not None:
        n, c, h, wd = x.shape
        w2 = w.flatten(1)
        gw2 = None if gw_out is None else gw_out.view(w.shape[0], -1)
        if xm.dim() == 2:  # channels_last: one GEMM over all pixels
            gm = g.permute(0, 2, 3, 1).reshape(n * h * wd, -1)
            if gw2 is not None:
                torch.mm(gm.t(), xm, out=gw2)
            if gb_out is not None:
                torch.sum(gm, 0, out=gb_out)
            return torch.mm(gm, w2).view(n, h, wd, c).permute(0, 3, 1, 2) if need_x else None
        gm = g.reshape(n, w.shape[0], h * wd)
        if gw2 is not None:  # one GEMM per sample accumulated in place (no (N, out, in))
            torch.mm(gm[0], xm[0].t(), out=gw2)
            for i in range(1, n):
                gw2.addmm_(gm[i], xm[i].t())
        if gb_out is not None:
            torch.sum(gm, (0, 2), out=gb_out)
        return torch.bmm(w2.t().expand(n, -1, -1), gm).view(x.shape) if need_x else None
    if not (need_x or gw_out is not None or gb_out is not None):
        return None
    gx, gw, gb = torch.ops.aten.convolution_backward(
        g, x, w, None if gb_out is None else [w.shape[0]], [1, 1], [padding] * 2,
        [dilation] * 2, False, [0, 0], 1, [need_x, gw_out is not None, gb_out is not None])
    if gw_out is not None:
        gw_out.copy_(gw)
    if gb_out is not None:
        gb_out.copy_(gb)
    return gx


def _pool_into(x: torch.Tensor, out: torch.Tensor) -> None:
    """``out = octave_pool(x)`` written into ``out`` (e.g. a channel slice of a larger map)."""
    if cpu_kernels.rows_contiguous(x, out) and x.dtype == out.dtype:
        cpu_kernels.octave_pool_into(x, out)  # one pass (C++)
        return
    if not _is_even(x):
        out.copy_(F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False))
        return
    rows = x[..., 0::2, :] + x[..., 1::2, :]
    torch.add(rows[..., 0::2], rows[..., 1::2], out=out)
    out.mul_(0.25)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when channels are the innermost dimension of ``x`` (also for a channel
    slice of a channels_last map)."""
    return torch.channels_last if x.stride(1) < x.stride(-1) else torch.contiguous_format


def _pool_cat(x_h: torch.Tensor, x_l: Optional[torch.Tensor]) -> torch.Tensor:
    """``cat([octave_pool(x_h), x_l])``, pooling straight into the result."""
    n, c, h, w = x_h.shape
    c_l = 0 if x_l is None else x_l.shape[1]
    p = torch.empty(n, c + c_l, half_size(h), half_size(w), dtype=x_h.dtype,
                    device=x_h.device, memory_format=_memory_format(x_h))
    _pool_into(x_h, p[:, :c])
    if x_l is not None:
        p[:, c:].copy_(x_l)
    return p


def _pool_grad(gp: torch.Tensor, size: Sequence[int], out: Optional[torch.Tensor] = None,
               accumulate: bool = False) -> torch.Tensor:
    """The adjoint of :func:`octave_pool` (output size ``size``) applied to ``gp``: written into
    ``out`` (added to it if ``accumulate``; e.g. a channel slice of a larger gradient), or into
    a new tensor."""
    h, w = size
    even = h % 2 == 0 and w % 2 == 0
    if out is None and (even or cpu_kernels.rows_contiguous(gp)):
        out, accumulate = gp.new_empty(*gp.shape[:2], h, w), False
    if out is not None and gp.dtype == out.dtype and cpu_kernels.rows_contiguous(gp, out):
        cpu_kernels.octave_spread(gp, out, accumulate=accumulate, mean_adjoint=True)
        return out
    if even:  # each window's gradient / 4, spread over it
        if accumulate:
            _add_up(out, gp, alpha=0.25)
        else:
            _upsample_into(gp * 0.25, out)
        return out
    g = torch.ops.aten.avg_pool2d_backward(gp, gp.new_empty(*gp.shape[:2], h, w), [2, 2],
                                           [2, 2], [0, 0], True, False, None)
    if out is None:
        return g
    return out.add_(g) if accumulate else out.copy_(g)


def _up_grad(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`octave_upsample` to ``g``'s size: 2x2 window sums of ``g``
    zero-padded to even size."""
    h, w = g.shape[-2:]
    if h % 2 == 0 and w % 2 == 0:
        return _sum_2x2(g)
    rows = g[..., 0::2, :].clone()  # pairs of rows, then of columns; a missing partner adds 0
    rows[..., :h // 2, :] += g[..., 1::2, :]
    out = rows[..., 0::2].clone()
    out[..., :w // 2] += rows[..., 1::2]
    return out


def _fused_forward(x_h, x_l, p, weight, bias, out_high, stride, padding, dilation,
                   y_h_out=None):
    """Forward of the fused path: ``(y_h, y_l, p, q)``. ``p = [pool(x_h), x_l]`` is built here
    when needed unless given (the drop-in layer passes the pooled input, the same tensor);
    ``q = pool(p)`` at stride 2. ``y_h`` is written into ``y_h_out`` when given."""
    rows = [out_high, weight.shape[0] - out_high]
    w_h, w_l = weight.split(rows)
    b_h, b_l = (None, None) if bias is None else bias.split(rows)
    i_h = x_h.shape[1]
    y_l = q = None
    if stride == 1:
        y_h = _path_fwd(x_h, w_h[:, :i_h], b_h, padding, dilation, y_h_out)
        if x_l is not None:
            _add_up(y_h, _path_fwd(x_l, w_h[:, i_h:], None, padding, dilation))
        if rows[1]:
            p = _pool_cat(x_h, x_l) if p is None else p
            y_l = _path_fwd(p, w_l, b_l, padding, dilation)
    else:
        p = _pool_cat(x_h, x_l) if p is None else p
        y_h = _path_fwd(p, w_h, b_h, padding, dilation, y_h_out)
        if rows[1]:
            q = octave_pool(p)
            y_l = _path_fwd(q, w_l, b_l, padding, dilation)
    return y_h, y_l, p, q


def _fused_backward(needs, g_h, g_l, x_h, x_l, weight, p, q, cfg):
    """Backward of :func:`_fused_forward`: ``(gx_h, gx_l, gw, gb)``. ``needs``: which of
    (x_h, x_l, weight, bias) need a gradient; ``cfg = (rows, in_high, size_h, stride, padding,
    dilation)``. At stride 2 ``x_h``/``x_l`` may be None (only ``p``/``q`` are read), and
    ``gx_l`` is the gradient of ``p``'s low channels. ``p`` is read at stride 1 only when there
    are low outputs."""
    rows, i_h, size_h, stride, padding, dilation = cfg
    need_xh, need_xl, need_w, need_b = needs
    w_h, w_l = weight.split(rows)
    gw = torch.empty_like(weight) if need_w else None  # (the weight's memory format)
    gb = weight.new_empty(weight.shape[0]) if need_b else None
    # row blocks (high / low outputs) of gw and gb that receive each path's gradients
    gw_h, gw_l = gw.split(rows) if need_w else (None, None)
    gb_h, gb_l = gb.split(rows) if need_b else (None, None)

    def path(g, x, w, need_x, gw_block, gb_block):
        return _path_bwd(g, x, w, padding, dilation, need_x, gw_block, gb_block)

    if stride == 1:
        gw_hh, gw_lh = (None, None) if gw_h is None else (gw_h[:, :i_h], gw_h[:, i_h:])
        gx_h = path(g_h, x_h, w_h[:, :i_h], need_xh, gw_hh, gb_h)
        gx_l = None
        if x_l is not None and (need_xl or need_w):
            gx_l = path(_up_grad(g_h), x_l, w_h[:, i_h:], need_xl, gw_lh, None)
        if rows[1]:
            gp = path(g_l, p, w_l, need_xh or need_xl, gw_l, gb_l)
            if need_xh:
                gx_h = _pool_grad(gp[:, :i_h], size_h, gx_h, accumulate=True)
            if need_xl:
                gx_l.add_(gp[:, i_h:])
    else:
        need_p = need_xh or need_xl
        gp = path(g_h, p, w_h, need_p, gw_h, gb_h)
        if q is not None:
            gq = path(g_l, q, w_l, need_p, gw_l, gb_l)
            if need_p:
                gp = _pool_grad(gq, p.shape[-2:], gp, accumulate=True)
        gx_h = _pool_grad(gp[:, :i_h], size_h) if need_xh else None
        gx_l = gp[:, i_h:] if need_xl else None
    return gx_h, gx_l, gw, gb


class _FusedOctaveConv(torch.autograd.Function):
    """:func:`octave_conv2d` for ``groups == 1`` as 2-3 convs over channel-concatenated inputs
    (see the module docstring), 1x1 paths as GEMMs, with a hand-written backward.

    Why it is fast: autograd over the path-by-path form runs ~15 small ops per layer besides the
    convs (splits and cats of the weight, a pooled copy, out-of-place adds, gradient
    accumulation of every tensor read twice). Here the pooled map is written straight into the
    concatenated conv input, the L->H path is added into the H->H output in place, and the
    backward adds the pooling/upsampling adjoints straight into the conv input gradients and
    writes each weight block's gradient once into the full weight gradient.
    """

    @staticmethod
    def forward(ctx, x_h, x_l, weight, bias, out_high, stride, padding, dilation):
        ctx.cfg = ([out_high, weight.shape[0] - out_high], x_h.shape[1], tuple(x_h.shape[-2:]),
                   stride, padding, dilation)
        y_h, y_l, p, q = _fused_forward(x_h, x_l, None, weight, bias, out_high, stride, padding,
                                        dilation)
        if stride != 1:
            x_h = x_l = None  # the backward needs only their shapes
        ctx.save_for_backward(x_h, x_l, weight, p, q)
        return owned(y_h) if y_l is None else (owned(y_h), owned(y_l))

    @staticmethod
    @first_order_only('OctaveConv')
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_h, g_l=None):
        x_h, x_l, weight, p, q = ctx.saved_tensors
        gx_h, gx_l, gw, gb = _fused_backward(ctx.needs_input_grad[:4], g_h, g_l, x_h, x_l,
                                             weight, p, q, ctx.cfg)
        return gx_h, gx_l, gw, gb, None, None, None, None


class _FusedOctaveDropIn(torch.autograd.Function):
    """The drop-in layer (one tensor in, one out) on the fused path: ``merge(octave(split(x)))``.

    Why it is faster than split + :class:`_FusedOctaveConv` + :func:`octave_merge`: the pooled
    low input ``pool(x[:, in_high:])`` and the stride-1/2 conv input ``[pool(x_high), x_low]``
    are both channel ranges of one pooled map ``pool(x)``, made in one pass; the H->H output is
    written straight into the merged output and the low output upsampled into it (no cat); the
    backward writes the input gradient's two halves in place. A 1x1 drop-in is memory-bound, so
    these passes decide whether it beats the plain conv.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, in_high, out_high, stride, padding, dilation):
        n, c, h, w = x.shape
        # small NCHW maps (<= 8x8) with a 1x1 kernel run channels_last inside: each path is
        # then one GEMM over all pixels instead of per-sample GEMMs with <= 64 columns
        ctx.to_cl = (weight.shape[-1] == 1 and h * w <= 64 and c > 1 and x.stride(-1) == 1
                     and _memory_format(x) == torch.contiguous_format)
        if ctx.to_cl:
            x = x.contiguous(memory_format=torch.channels_last)
        p = _pool_cat(x, None)  # = [pool(x_high), x_low] with x_low = pool(x[:, in_high:])
        x_h, x_l = x[:, :in_high], (p[:, in_high:] if in_high < c else None)
        size = (h, w) if stride == 1 else (half_size(h), half_size(w))
        y = torch.empty(n, weight.shape[0], *size, dtype=x.dtype, device=x.device,
                        memory_format=_memory_format(x))
        _, y_l, p, q = _fused_forward(x_h, x_l, p, weight, bias, out_high, stride, padding,
                                      dilation, y[:, :out_high])
        if y_l is not None:
            _upsample_into(y_l, y[:, out_high:])
        ctx.save_for_backward(x if stride == 1 else None, weight, p, q)
        ctx.cfg = ([out_high, weight.shape[0] - out_high], in_high, (h, w), stride, padding,
                   dilation)
        return y.contiguous() if ctx.to_cl else y

    @staticmethod
    @first_order_only('OctaveConv')
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, weight, p, q = ctx.saved_tensors
        rows, i_h, size, stride = ctx.cfg[:4]
        if ctx.to_cl:
            g = g.contiguous(memory_format=torch.channels_last)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        has_low_in = i_h < p.shape[1]
        g_l = _up_grad(g[:, rows[0]:]) if rows[1] else None
        x_h = None if x is None else x[:, :i_h]
        x_l = p[:, i_h:] if has_low_in else None
        gx_h, gx_l, gw, gb = _fused_backward(
            (need_x, need_x and has_low_in, need_w, need_b), g[:, :rows[0]], g_l, x_h, x_l,
            weight, p, q, ctx.cfg)
        gx = None
        if need_x:
            gx = torch.empty(p.shape[0], p.shape[1], *size, dtype=p.dtype, device=p.device,
                             memory_format=_memory_format(p))
            gx[:, :i_h].copy_(gx_h)
            if has_low_in:
                _pool_grad(gx_l, size, gx[:, i_h:])
            if ctx.to_cl:
                gx = gx.contiguous()
        return gx, gw, gb, None, None, None, None, None


def _fused_applies(groups: int, depthwise: bool) -> bool:
    """Whether the fused autograd Functions serve this conv: groups = 1 only (their paths are
    GEMMs), and eager mode (tracing and compiling record the path-by-path tensor ops)."""
    return groups == 1 and not depthwise and eager()


def _fused_apply(function, tensors, *args):
    """``function.apply(*tensors, *args)`` with the casts autocast would give ``F.conv2d``
    made here (the Function runs without autocast)."""
    device = tensors[0].device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return function.apply(*(None if t is None else t.to(dtype) for t in tensors), *args)
    return function.apply(*tensors, *args)


def _fused_octave_conv2d(x_h, x_l, weight, bias, out_high, stride, padding, dilation):
    y = _fused_apply(_FusedOctaveConv, (x_h, x_l, weight, bias), out_high, stride, padding,
                     dilation)
    return (y, None) if isinstance(y, torch.Tensor) else y


def octave_conv2d(x_high: torch.Tensor, x_low: Optional[torch.Tensor], weight: torch.Tensor,
                  bias: Optional[torch.Tensor], out_high: int, stride: int = 1, padding: int = 0,
                  dilation: int = 1, groups: int = 1, depthwise: bool = False
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The four octave paths on split inputs.

    ``groups == 1`` runs the fused fast path (:class:`_FusedOctaveConv`) in eager mode; grouped
    and depthwise layers, and traced or compiled code, the path-by-path form
    (:func:`_octave_paths`). Both compute the same function (tested to rounding).

    Args:
        x_high (Tensor): (N, C_h, H, W) high-frequency input.
        x_low (Tensor | None): (N, C_l, ceil(H/2), ceil(W/2)) low-frequency input, or None.
        weight (Tensor): (C_out, C_in // groups, k, k), the plain conv weight; rows ``[:out_high]``
            are high outputs, columns ``[:C_h // groups]`` high inputs (``depthwise``: rows
            ``[:out_high]`` belong to the high input channels).
        bias (Tensor | None): (C_out,).
        out_high (int): number of high output channels; ``C_out - out_high`` low ones (may be 0).
        stride (int): 1 or 2 (2 = average-pool, then stride-1 convs).
        padding, dilation (int): of every path ('same' padding for the kernel).
        groups (int): groups of every path (ignored when ``depthwise``).
        depthwise (bool): one filter group per input channel: no cross-frequency paths.

    Returns:
        tuple: ``(y_high, y_low)``; ``y_high`` (N, out_high, H', W') with ``H' = H`` (stride 1) or
        ``ceil(H/2)`` (stride 2); ``y_low`` (N, C_out - out_high, ceil(H'/2), ceil(W'/2)) or None.
    """
    if _fused_applies(groups, depthwise):
        return _fused_octave_conv2d(x_high, x_low, weight, bias, out_high, stride, padding,
                                    dilation)
    return _octave_paths(x_high, x_low, weight, bias, out_high, stride, padding, dilation,
                         groups, depthwise)


def octave_conv_flops(n: int, height: int, width: int, in_split: Tuple[int, int],
                      out_split: Tuple[int, int], kernel_size: int, stride: int, groups: int,
                      depthwise: bool) -> int:
    """Multiply-accumulates of :func:`octave_conv2d` (pooling/upsampling/adds not counted).

    Every path is a stride-1 conv evaluated at the resolution of its *input*; with
    ``Ho = H`` (stride 1) or ``ceil(H/2)`` (stride 2), ``ho = ceil(Ho/2)``, ``K = k*k``, and
    ``(i_h, i_l)``, ``(o_h, o_l)`` the channel splits::

        stride 1:  N*K/g * [ Ho*Wo * o_h*i_h  +  ho*wo * (o_h*i_l + o_l*(i_h + i_l)) ]
                   (HH at full size; LH before its upsampling, HL and LL at half size)
        stride 2:  N*K/g * [ Ho*Wo * o_h*(i_h + i_l)  +  ho*wo * o_l*(i_h + i_l) ]
                   (HH on pool(X_h) and LH on X_l both at Ho; HL and LL at ho)
        depthwise: N*K * [ Ho*Wo * o_h + ho*wo * o_l ]

    With ``alpha_in = alpha_out = 0`` both reduce to the plain conv's ``N*out*Ho*Wo*in/g*K``.
    """
    (i_h, i_l), (o_h, o_l) = in_split, out_split
    ho_, wo_ = (height, width) if stride == 1 else (half_size(height), half_size(width))
    hl_, wl_ = half_size(ho_), half_size(wo_)
    k2 = kernel_size * kernel_size
    if depthwise:
        return n * k2 * (ho_ * wo_ * o_h + hl_ * wl_ * o_l)
    if stride == 1:
        macs = ho_ * wo_ * o_h * i_h + hl_ * wl_ * (o_h * i_l + o_l * (i_h + i_l))
    else:
        macs = (ho_ * wo_ * o_h + hl_ * wl_ * o_l) * (i_h + i_l)
    return n * k2 * macs // groups


def octave_merge(x: OctTensor) -> torch.Tensor:
    """Split features -> one tensor: the low branch upsampled to the high size and concatenated."""
    if isinstance(x, torch.Tensor):
        return x
    x_h, x_l = x
    return torch.cat([x_h, octave_upsample(x_l, x_h.shape[-2:])], 1)


def octave_apply(fn, x: OctTensor) -> OctTensor:
    """Apply an element-wise module/function (activation, dropout, ...) to each branch."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    return fn(x[0]), fn(x[1])


def _branch_batch_norm(bn: nn.modules.batchnorm._BatchNorm, xs: Sequence[torch.Tensor]
                       ) -> Tuple[torch.Tensor, ...]:
    """``bn`` on each tensor of ``xs`` with its run of consecutive channels (same arithmetic as
    ``_BatchNorm.forward``, the step counted once). The running statistics are updated in place
    through views of ``bn``'s buffers; weight and bias are split once, so their gradient is one
    cat (slicing each would build a zero-filled full-size gradient per branch)."""
    sizes = [x.shape[1] for x in xs]
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats

    def pieces(t, use=True):
        return t.split(sizes) if use and t is not None else [None] * len(xs)

    return tuple(F.batch_norm(x, m, v, w, b, use_batch, factor, bn.eps) for x, m, v, w, b in zip(
        xs, pieces(bn.running_mean, track), pieces(bn.running_var, track), pieces(bn.weight),
        pieces(bn.bias)))


def _sliced_module(norm: nn.Module, x: torch.Tensor, sl: slice,
                   tracked: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Any channel-wise norm (SyncBN, GN, ...): call the module with its parameters and buffers
    replaced by channel slices for the call (views, so running-stat updates reach the real
    buffers), and its step count by ``tracked`` if given. Swapped by hand:
    ``torch.func.functional_call`` refuses to run under ``torch.jit.trace`` (ONNX export, FLOP
    counting)."""
    swapped = []
    old_features = getattr(norm, 'num_features', None)
    try:
        for store in (norm._parameters, norm._buffers):
            for name, t in list(store.items()):
                if t is not None and t.dim() >= 1 and t.shape[0] > 1:
                    piece = t[sl]
                elif name == 'num_batches_tracked' and tracked is not None:
                    piece = tracked
                else:
                    continue
                swapped.append((store, name, t))
                store[name] = piece
        if old_features is not None:  # keep e.g. SyncBN's channel check consistent
            norm.num_features = x.shape[1]
        return norm(x)
    finally:
        for store, name, t in swapped:
            store[name] = t
        if old_features is not None:
            norm.num_features = old_features


def octave_norm(norm: nn.Module, x: OctTensor) -> OctTensor:
    """Apply a channel-wise norm over ``C_h + C_l`` channels to each branch separately.

    Statistics are per branch (high over H x W, low over ceil(H/2) x ceil(W/2)) with the
    parameters/buffers of channels ``[:C_h]`` and ``[C_h:]``: so ONE norm module of the plain
    layer's width serves both branches and plain checkpoints load with the same names.
    ``nn.BatchNorm2d`` runs through ``F.batch_norm`` on channel splits; other norms (SyncBN,
    GN) are called with their state sliced (GN then needs its groups to divide each branch).
    """
    if isinstance(x, torch.Tensor):
        return norm(x)
    if type(norm) in (nn.BatchNorm2d, nn.BatchNorm1d, nn.BatchNorm3d):
        return _branch_batch_norm(norm, x)
    x_h, x_l = x
    c_h = x_h.shape[1]
    sl_h, sl_l = slice(0, c_h), slice(c_h, c_h + x_l.shape[1])
    # the step is counted once, on the high branch; the low branch gets the count from before
    # it (a copy), so both use the same cumulative-average factor when momentum is None
    count = getattr(norm, 'num_batches_tracked', None)
    before = None if count is None else count.clone()
    return _sliced_module(norm, x_h, sl_h), _sliced_module(norm, x_l, sl_l, before)


# --------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------
@register
class OctaveConv(LayerStateDict, nn.Module):
    """Octave convolution, usable as
    ``conv_cfg=dict(type='OctaveConv', alpha_in=.., alpha_out=..)``.

    See the module docstring for the conventions (channel split, weight layout, stride, odd sizes).

    Args:
        in_channels (int): C_in (both branches).
        out_channels (int): C_out (both branches).
        kernel_size (int | tuple[int, int]): odd square kernel ``k``.
        stride (int | tuple[int, int]): 1 or 2. Default: 1.
        padding (int | tuple | str | None): must be 'same' padding (``dilation * (k-1) // 2``,
            'same' or None). Default: None.
        dilation (int | tuple[int, int]): applied on every path. Default: 1.
        groups (int): groups of every path; ``groups == in_channels`` is depthwise (no
            cross-frequency paths). Default: 1.
        bias (bool): learnable bias (C_out,). Default: True.
        alpha_in (float): low fraction of the input channels, in [0, 1). Default: 0.5.
        alpha_out (float): low fraction of the output channels, in [0, 1). Default: 0.5.
        split (bool): False (default, **drop-in**): input (N, C_in, H, W) -> output
            (N, C_out, ceil(H/s), ceil(W/s)); the input's last ``C_in_low`` channels are pooled to
            half resolution, the low output is upsampled and concatenated after the high one.
            True (**split mode**): input ``(x_high, x_low)`` with shapes (N, C_in_high, H, W) and
            (N, C_in_low, ceil(H/2), ceil(W/2)) (a single tensor when ``alpha_in == 0``); output
            ``(y_high, y_low)`` likewise (a single tensor when ``alpha_out == 0``).

    Weight: ``weight`` (C_out, C_in // groups, k, k), ``bias`` (C_out,).
    """
    _version = 1  # state-dict layout (convzoo_mm.layers.state_dict); no renames so far

    @known_options
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=None, dilation=1, groups: int = 1, bias: bool = True,
                 alpha_in: float = 0.5, alpha_out: float = 0.5, split: bool = False):
        super().__init__()
        in_channels = check_int('in_channels', in_channels)
        out_channels = check_int('out_channels', out_channels)
        k = check_square('kernel_size', kernel_size)
        if k % 2 == 0:
            raise ValueError(f'kernel_size must be odd (the layer pads to keep the size), got {k}')
        s = check_choice('stride', check_square('stride', stride), [1, 2])
        d = check_square('dilation', dilation)
        check_same_padding(padding, k, d)
        groups = check_int('groups', groups)
        check_bool('bias', bias)
        check_bool('split', split)
        alpha_in = check_float('alpha_in', alpha_in, 0.0, 1.0)
        alpha_out = check_float('alpha_out', alpha_out, 0.0, 1.0)
        in_split = check_split('alpha_in', alpha_in, in_channels)
        out_split = check_split('alpha_out', alpha_out, out_channels)
        for name, total in (('in_channels', in_channels), ('out_channels', out_channels)):
            if total % groups:
                raise ValueError(f'groups={groups} must divide {name}={total}')
        depthwise = groups > 1 and groups == in_channels
        if depthwise:
            mult = out_channels // in_channels
            if out_split[1] != in_split[1] * mult:
                raise ValueError(
                    f'depthwise OctaveConv (groups == in_channels = {in_channels}) has no '
                    f'cross-frequency paths, so the output split must follow the input split: '
                    f'alpha_out={alpha_out} gives {out_split[1]} low outputs, need '
                    f'{in_split[1] * mult} (use alpha_out == alpha_in)')
        elif groups > 1:
            for name, alpha, (high, low) in (('alpha_in', alpha_in, in_split),
                                             ('alpha_out', alpha_out, out_split)):
                if high % groups or low % groups:
                    raise ValueError(
                        f'groups={groups} must divide both branches: {name}={alpha} gives '
                        f'high={high}, low={low} channels')

        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = (k, k), (s, s), (d, d)
        pad = d * (k - 1) // 2
        self.padding = (pad, pad)
        self.groups = groups
        self.transposed = False
        self.output_padding = (0, 0)
        self.alpha_in, self.alpha_out = alpha_in, alpha_out
        self.in_split, self.out_split = in_split, out_split
        self.split = split
        self.depthwise = depthwise
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @staticmethod
    def _options_from_shapes(shapes):
        """Options implied by the shapes: weight (C_out, C_in // groups, k, k); the alphas do
        not change any shape (a plain conv checkpoint fits)."""
        w = shapes.get('weight')
        if w is None or len(w) != 4:
            return None
        return {'out_channels': w[0], 'in_channels // groups': w[1], 'kernel_size': w[-1],
                'bias': 'bias' in shapes}

    @property
    def plain(self) -> bool:
        """True when both alphas are 0: the layer is exactly ``nn.Conv2d``."""
        return self.in_split[1] == 0 and self.out_split[1] == 0

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def init_weights(self) -> None:
        """What mm gives a plain conv in the same slot: Kaiming normal (fan_out, relu), bias 0."""
        nn.init.kaiming_normal_(self.weight, mode='fan_out', nonlinearity='relu')
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
             f'stride={self.stride}, padding={self.padding}, dilation={self.dilation}, '
             f'groups={self.groups}, bias={self.bias is not None}, alpha_in={self.alpha_in}, '
             f'alpha_out={self.alpha_out}, split={self.split}')
        return s

    def _check_split_input(self, x) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        name = type(self).__name__
        if self.in_split[1] == 0:
            if isinstance(x, (tuple, list)):
                raise ValueError(f'{name}: alpha_in=0 takes one tensor, got a {type(x).__name__}')
            check_input(x, self.in_channels, name)
            return x, None
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(f'{name} (split=True, alpha_in={self.alpha_in}) takes a tuple '
                             f'(x_high, x_low), got {type(x).__name__}')
        x_h, x_l = x
        check_input(x_h, self.in_split[0], f'{name} (high branch)')
        check_input(x_l, self.in_split[1], f'{name} (low branch)')
        want = (half_size(x_h.shape[-2]), half_size(x_h.shape[-1]))
        if tuple(x_l.shape[-2:]) != want or x_l.shape[0] != x_h.shape[0]:
            raise ValueError(f'{name}: low branch must be (N, C, ceil(H/2), ceil(W/2)) = '
                             f'{(x_h.shape[0], self.in_split[1]) + want} for a high branch of '
                             f'shape {tuple(x_h.shape)}, got {tuple(x_l.shape)}')
        return x_h, x_l

    def forward(self, x: OctTensor) -> OctTensor:
        name = type(self).__name__
        if empty_batch(x):
            return empty_batch_forward(self.forward, x)
        if self.plain:  # alpha_in == alpha_out == 0: exactly nn.Conv2d
            check_input(x, self.in_channels, name)
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)
        if self.split:
            x_h, x_l = self._check_split_input(x)
        else:
            check_input(x, self.in_channels, name)
            if _fused_applies(self.groups, self.depthwise):
                return _fused_apply(_FusedOctaveDropIn, (x, self.weight, self.bias),
                                    self.in_split[0], self.out_split[0], self.stride[0],
                                    self.padding[0], self.dilation[0])
            if self.in_split[1] == 0:
                x_h, x_l = x, None
            else:
                x_h, x_l = x.split(self.in_split, 1)
                x_l = octave_pool(x_l)
        y_h, y_l = octave_conv2d(x_h, x_l, self.weight, self.bias, self.out_split[0],
                                 self.stride[0], self.padding[0], self.dilation[0], self.groups,
                                 self.depthwise)
        if y_l is None:
            return y_h
        if self.split:
            return y_h, y_l
        return octave_merge((y_h, y_l))

    def count_flops(self, input_shape) -> int:
        """Multiply-accumulates of one forward (see :func:`octave_conv_flops` for the formula).

        Args:
            input_shape: ``(N, C_in, H, W)`` with ``H, W`` the high (full) resolution, or, in
                split mode, the pair of branch shapes ``((N, C_h, H, W), (N, C_l, h, w))``.
        """
        if len(input_shape) == 2 and not isinstance(input_shape[0], int):
            input_shape = input_shape[0]
        n, _, h, w = (int(v) for v in input_shape)
        if self.plain:
            ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) \
                // self.stride[0] + 1
            wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) \
                // self.stride[1] + 1
            return n * self.out_channels * ho * wo * self.weight.shape[1] * \
                self.kernel_size[0] * self.kernel_size[1]
        return octave_conv_flops(n, h, w, self.in_split, self.out_split, self.kernel_size[0],
                                 self.stride[0], self.groups, self.depthwise)


@register
class OctaveConvModule(nn.Module):
    """OctaveConv + per-branch norm + per-branch activation (a ConvModule for octave features).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as
            :class:`OctaveConv`.
        bias (bool | str): 'auto' (default): bias only without a norm.
        alpha_in, alpha_out (float): as :class:`OctaveConv`.
        split (bool): split mode (tuples in/out) or drop-in (tensors). Default: True.
        norm_cfg (dict | None): e.g. ``dict(type='BN')``; ONE norm of ``out_channels`` channels,
            applied in split mode to each branch with its channel slice (see
            :func:`octave_norm`), in drop-in mode to the merged output tensor.
        act_cfg (dict | None): activation, applied to each branch. Default: ReLU.

    Submodules ``conv``, the norm (named as mmcv names it, e.g. ``bn``) and ``activate``, as in
    ``mmcv.cnn.ConvModule``. Input/output: as :class:`OctaveConv` in the chosen mode.
    """

    @known_options
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None,
                 dilation=1, groups=1, bias='auto', alpha_in=0.5, alpha_out=0.5, split=True,
                 norm_cfg=None, act_cfg=dict(type='ReLU')):
        super().__init__()
        if bias == 'auto':
            bias = norm_cfg is None
        self.conv = OctaveConv(in_channels, out_channels, kernel_size, stride, padding, dilation,
                               groups, bias, alpha_in=alpha_in, alpha_out=alpha_out, split=split)
        self.norm_name = None
        if norm_cfg is not None:
            from mmcv.cnn import build_norm_layer
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        self.activate = None
        if act_cfg is not None:
            from mmcv.cnn import build_activation_layer
            self.activate = build_activation_layer(act_cfg)

    @property
    def norm(self):
        return getattr(self, self.norm_name) if self.norm_name else None

    def init_weights(self) -> None:
        self.conv.init_weights()
        if self.norm is not None and getattr(self.norm, 'weight', None) is not None:
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def count_flops(self, input_shape) -> int:
        """MACs of the conv (norm and activation are element-wise and not counted)."""
        return self.conv.count_flops(input_shape)

    def forward(self, x: OctTensor) -> OctTensor:
        x = self.conv(x)
        if self.norm is not None:
            if self.conv.split:
                x = octave_norm(self.norm, x)
            else:
                x = self.norm(x)
        if self.activate is not None:
            x = octave_apply(self.activate, x)
        return x
