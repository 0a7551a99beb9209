"""DRConv: dynamic region-aware convolution (Chen et al., CVPR 2021, arXiv 2003.12243).

Math (one sample ``n``, output position ``p``, ``m`` regions)::

    guide   = conv_kxk(x)                      (N, m, Ho, Wo), the layer's stride/padding/dilation
    r(p)    = argmax_r guide[n, r, p]          one region per position
    W[n, r] = generator(x)[n, r]               m dynamic filters (out, in/groups, k, k) per sample
    out[n, :, p] = (W[n, r(p)] * x[n])[p] + bias

Gradient (the paper's): the one-hot mask ``M`` is replaced by ``S = softmax(guide)`` in the
backward pass, i.e. the layer is differentiated as the straight-through surrogate
``out = sum_r (M_r + S_r - stopgrad(S_r)) * (W[n, r] * x)``. Its gradients are

* ``dL/dx`` and ``dL/dW[n, r]``: those of the *selected* convolution only (``M`` is one-hot);
* ``dL/dS[n, r, p] = <g[n, :, p], y_r[n, :, p]>`` with ``y_r = W[n, r] * x`` for **every** ``r``;
  autograd then applies the softmax Jacobian ``dL/dguide_r = S_r (dL/dS_r - sum_q S_q dL/dS_q)``.

Why it is fast (and why a custom ``autograd.Function``): written with autograd, the surrogate
must compute all ``m`` responses ``y_r`` in the forward pass (the naive form: m convolutions,
m times the activation memory). :class:`_RegionConv` instead groups the positions by region and
does one matmul per region on that region's rows only: exactly the FLOPs of one plain
convolution. Only ``x``, the region index and the generator's *factors* are saved. The backward
gets the guide gradient as ``<g, y_r>`` for every region at every position (``m`` times a
convolution in any exact implementation), and ``dL/dW``, ``dL/dx`` again on each region's rows
only. Two forms of this, tested against each other:

* paper generator on CPU with at most ``k*k`` bases (m <= 8 at k=3; :func:`_forward_tap_mix`,
  :func:`_backward_tap_mix`): ``y = U @ bank[r]`` with ``U`` the taps of each position mixed by
  that sample's coefficients, written straight from the padded input by the C++ kernel
  :func:`convzoo_mm.ops.cpu_kernels.region_tap_mix`; its two adjoints (C++) give ``dL/dx`` and
  ``dL/dcoef`` from ``dL/dU``, and the guide gradient's ``<g, y_r>`` is ``<dL/dU_r, U_r>``.
  The bank is shared by the samples, so a region's rows of all samples (of a chunk, in the
  backward) go through one matmul, and this form builds no filter and no im2col;
* otherwise (:func:`_forward_per_sample` and the per-sample backward): one channels-last im2col
  ``X`` per sample (positions as rows, :func:`im2col_t`), ``X[p in region r] @ W[n, r]^T``.

The per-sample filters are never stored for the whole batch: both generators are linear in
their last layer, ``W[n, r] = coef[n, r] @ bank`` (see :func:`materialize_filters`), so the
filter of one (sample, region) is rebuilt on the fly and its gradient is contracted back into
``dL/dcoef`` and ``dL/dbank`` at once. Temporary memory is O(one sample's im2col), or a block
of rows within a fixed budget, instead of O(N * m * out * in * k^2) (151 MB at N=8, m=8,
256->256, k=3).

While a graph is recorded for use elsewhere (``jit.trace``, ONNX, ``torch.export``) the layer runs
:meth:`DRConv.forward_naive` (:func:`drconv_naive` as im2col and a batched matmul: same output,
symbolic batch and size) and the generator's pooling as :func:`adaptive_avg_pool_matmul`.
"""
import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import cpu_kernels, first_order_only, owned, tracing
from ..registry import register
from .checks import (check_bool, check_choice, check_divides, check_input, check_int,
                     check_square, empty_batch, empty_batch_forward, known_options,
                     same_padding)
from .state_dict import LayerStateDict

__all__ = ['DRConv', 'conv_output_size', 'materialize_filters', 'im2col_t', 'region_conv',
           'drconv_naive', 'adaptive_avg_pool_matmul']


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------
def conv_output_size(size: int, kernel_size: int, stride: int, padding: int,
                     dilation: int) -> int:
    """Output length of a convolution along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def materialize_filters(coef: torch.Tensor, bank: torch.Tensor, tapwise: bool,
                        out_channels: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Transposed filter of one (sample, region) from the generator factors, or of many
    (leading dimensions ``*D`` of ``coef``: any with a shared bank, ``(N, m)`` with a bank per
    region).

    Layout ``(k*k*Cg, out)`` with rows ordered (tap, input channel) (``Cg = in/groups``): the
    matrix that multiplies the im2col rows of :func:`im2col_t`.

    Args:
        coef (Tensor): ``(*D, B, k*k)`` if ``tapwise`` else ``(*D, B)``: the coefficients of a
            sample and region.
        bank (Tensor): ``(B, Cg*out)`` (this region's bank; ``(m, B, Cg*out)`` with
            ``D = (N, m)``) if ``tapwise`` else ``(B, k*k*Cg*out)`` (shared by all regions).
        tapwise (bool): ``True`` for the paper's generator (one coefficient per basis and tap,
            a bank per region), ``False`` for the basis generator (one per basis).
        out_channels (int): out.
        out (Tensor, optional): contiguous ``(k*k*Cg, out)`` buffer to write into (reused
            across calls: a fresh multi-MB result costs more in page faults than the matmul);
            one (sample, region) only.

    Returns:
        Tensor: ``(*D, k*k*Cg, out)`` (with a bank per region, a view of a region-major
        buffer).
    """
    a = coef.transpose(-1, -2) if tapwise else coef.unsqueeze(-2)  # (*D, k*k or 1, B)
    if out is not None and a.dim() != 2:
        raise ValueError(f'materialize_filters: out= takes one (sample, region), got coef of '
                         f'shape {tuple(coef.shape)}')
    if bank.dim() == 3 and (a.dim() != 4 or a.shape[1] != bank.shape[0]):
        raise ValueError(f'materialize_filters: a bank per region {tuple(bank.shape)} needs coef '
                         f'of shape (N, m={bank.shape[0]}, B, k*k), got {tuple(coef.shape)}')
    if out is not None:
        torch.mm(a, bank, out=out.view(a.shape[0], -1))
        return out
    if bank.dim() == 2:  # one bank for every row: a single matmul
        return (a.reshape(-1, a.shape[-1]) @ bank).view(*a.shape[:-2], -1, out_channels)
    # a bank per region, D = (N, m): one matmul per region over the rows of all samples (a
    # broadcast (N, m, ...) @ (m, ...) would form an N-fold bank gradient in the backward)
    n, m = a.shape[:2]
    w = torch.bmm(a.transpose(0, 1).reshape(m, -1, a.shape[-1]), bank)
    return w.view(m, n, -1, out_channels).transpose(0, 1)


def pad_nhwc(x: torch.Tensor, padding: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(N, C, H, W)`` -> zero-padded channels-last copy ``(N, H+2p, W+2p, C)``.

    ``out`` (optional): a buffer of that shape whose border is already zero (e.g. the result of
    an earlier call); only its interior is written.
    """
    n, c, h, w = x.shape
    if out is None:
        out = x.new_empty(n, h + 2 * padding, w + 2 * padding, c)
        if padding:  # only the border is zeroed
            out[:, :padding].zero_()
            out[:, padding + h:].zero_()
            out[:, padding:padding + h, :padding].zero_()
            out[:, padding:padding + h, padding + w:].zero_()
    out[:, padding:padding + h, padding:padding + w] = x.permute(0, 2, 3, 1)
    return out


def im2col_t(xp: torch.Tensor, kernel_size: int, stride: int, dilation: int, out_size,
             groups: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """im2col of padded channels-last samples, transposed: ``(S, Hp, Wp, C)`` (or one sample
    ``(Hp, Wp, C)``) -> ``(groups, S*Ho*Wo, k*k*Cg)`` with columns ordered (tap, input channel),
    so the positions of a region are rows (cheap to gather). One strided copy (no ``F.unfold``
    + transpose), into ``out`` when given (a buffer reused across samples: a fresh multi-MB
    allocation per sample costs more in page faults than the copy itself)."""
    ho, wo = out_size
    xb = xp if xp.dim() == 4 else xp[None]
    k, (n, c) = kernel_size, (xb.shape[0], xb.shape[-1])
    sn, sh, sw, _ = xb.stride()
    win = xb.as_strided((n, ho, wo, k, k, groups, c // groups),
                        (sn, stride * sh, stride * sw, dilation * sh, dilation * sw, c // groups,
                         1), xb.storage_offset())
    if out is None:
        out = xp.new_empty(groups, n * ho * wo, k * k * (c // groups))
    out.view(groups, n, ho, wo, k, k, -1).copy_(win.permute(5, 0, 1, 2, 3, 4, 6))
    return out


def col2im_t_add_(grad_xp: torch.Tensor, cols: torch.Tensor, kernel_size: int, stride: int,
                  dilation: int, out_size) -> None:
    """Adjoint of :func:`im2col_t`: add ``(groups, S*Ho*Wo, k*k*Cg)`` into the padded
    channels-last ``grad_xp`` ``(S, Hp, Wp, C)`` or ``(Hp, Wp, C)`` (overlapping windows sum),
    one add per tap."""
    ho, wo = out_size
    gb = grad_xp if grad_xp.dim() == 4 else grad_xp[None]
    k, n, c = kernel_size, gb.shape[0], gb.shape[-1]
    g = cols.shape[0]
    cols = cols.view(g, n, ho, wo, k, k, c // g)
    for a in range(k):
        for b in range(k):
            tap = cols[:, :, :, :, a, b].permute(1, 2, 3, 0, 4).reshape(n, ho, wo, c)
            gb[:, a * dilation:a * dilation + stride * (ho - 1) + 1:stride,
               b * dilation:b * dilation + stride * (wo - 1) + 1:stride] += tap


def _region_rows(region: torch.Tensor, m: int):
    """Positions of each region: ``[(r, index tensor)]`` for the non-empty regions."""
    order = torch.argsort(region, stable=True)
    counts = torch.bincount(region, minlength=m).tolist()
    out, start = [], 0
    for r, c in enumerate(counts):
        if c:
            out.append((r, order[start:start + c]))
        start += c
    return out


def _grouped(w_t: torch.Tensor, groups: int) -> torch.Tensor:
    """``(K, out)`` -> ``(groups, K, out/groups)`` (group g uses output columns of group g)."""
    return w_t.view(w_t.shape[0], groups, -1).transpose(0, 1)


def _bank_grouped(bank: torch.Tensor, groups: int, cg: int) -> torch.Tensor:
    """A region's paper-generator bank ``(B, Cg*out)`` as the right factor of ``U @ bank`` per
    group: ``(groups, B*Cg, out/groups)`` (a view when groups = 1)."""
    nb = bank.shape[0]
    return bank.view(nb, cg, groups, -1).permute(2, 0, 1, 3).reshape(groups, nb * cg, -1)


def _tap_mix_banks(x: torch.Tensor, coef: torch.Tensor, bank: torch.Tensor, tapwise: bool,
                   groups: int) -> Optional[list]:
    """Each region's :func:`_bank_grouped` bank when the C++ tap mix and its adjoints serve this
    call (paper generator on CPU, eager, float32/64, with ``B <= k*k`` bases: then ``U @ bank``
    has an inner size of at most the im2col's); else None."""
    nb, taps = coef.shape[-2:]
    if not (tapwise and nb <= taps and cpu_kernels.applies(x, coef, bank)):
        return None
    return [_bank_grouped(b, groups, x.shape[1] // groups) for b in bank]


def _region_output(cols: torch.Tensor, coef: torch.Tensor, bank: torch.Tensor, tapwise: bool,
                   groups: int, out_channels: int) -> torch.Tensor:
    """``cols (groups, L', k*k*Cg) -> (groups, L', out/groups)`` for one (sample, region).

    The paper's generator (``tapwise``) has ``W^T = coef^T @ bank`` with ``B = h/m + 1``
    bases, so ``X @ W^T = U @ bank'`` with ``U[p, b, c] = sum_t coef[b, t] X[p, t, c]``: a
    matmul with inner size ``B*Cg`` instead of ``k*k*Cg``, no filter to write. Used in the
    forward whenever ``B <= k*k`` (m <= 8 at k=3 with the default h = m*m) and the C++ tap mix
    cannot run (no extension, GPU, half precision); otherwise the filter is built. Where the
    C++ tap mix runs, the backward is all in the ``U`` form (:func:`_backward_tap_mix`); where
    it does not, the backward builds the filters (``U`` over all positions as tensor ops costs
    more than it saves).
    """
    g, rows, kk_cg = cols.shape
    if tapwise and coef.shape[0] <= coef.shape[1]:
        cg = kk_cg // coef.shape[1]
        u = torch.matmul(coef, cols.view(g * rows, -1, cg))  # (g*L', B, Cg)
        return cpu_kernels.matmul(u.view(g, rows, -1), _bank_grouped(bank, groups, cg))
    w_t = materialize_filters(coef, bank, tapwise, out_channels)
    return cpu_kernels.matmul(cols, _grouped(w_t, groups))


# temporary U of the batched tap mix per block of rows (bytes); a typical region is one block
_U_BLOCK_BYTES = 16 << 20


def _forward_tap_mix(x, region, coef, banks, meta, m):
    """The forward with the C++ tap mix: one padded copy of the batch, then per region all its
    positions of all samples at once (``U`` in row blocks of at most ``_U_BLOCK_BYTES``, each
    one matmul with the region's bank, shared by the samples). The output is channels-last
    backed: returned as such for channels-last inputs (no copy), else made NCHW."""
    k, stride, padding, dilation, groups, out_channels, _ = meta
    n, c = x.shape[:2]
    ho, wo = region.shape[-2:]
    nb = coef.shape[-2]
    out = x.new_empty(groups, n * ho * wo, out_channels // groups)
    xp = pad_nhwc(x, padding)
    regions = _region_rows(region.flatten(), m)
    block = max(1, _U_BLOCK_BYTES // (nb * c * x.element_size()))
    block = min(block, max(idx.numel() for _, idx in regions))
    buf = x.new_empty(block * nb * c)  # reused U
    for r, idx in regions:
        for rows in idx.split(block):
            j = rows.numel()
            u = cpu_kernels.region_tap_mix(xp, rows, coef[:, r], k, stride, dilation, (ho, wo),
                                           groups, out=buf[:j * nb * c].view(groups, j, nb, -1))
            out.index_copy_(1, rows, cpu_kernels.matmul(u.view(groups, j, -1), banks[r]))
    if groups == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return out.view(n, ho, wo, out_channels).permute(0, 3, 1, 2)
    return out.view(groups, n, ho, wo, -1).permute(1, 0, 4, 2, 3).reshape(
        n, out_channels, ho, wo)


def _forward_per_sample(x, region, coef, bank, meta, m):
    """The forward as tensor ops (no extension, GPU, half precision, the basis generator): one
    sample at a time (O(one im2col) of temporary memory), one matmul per region on its rows."""
    k, stride, padding, dilation, groups, out_channels, tapwise = meta
    n = x.shape[0]
    ho, wo = region.shape[-2:]
    out = x.new_empty(n, groups, ho * wo, out_channels // groups)
    xp = cols = None  # per-sample buffers, reused
    for i in range(n):
        xp = pad_nhwc(x[i:i + 1], padding, xp)
        cols = im2col_t(xp[0], k, stride, dilation, (ho, wo), groups, cols)
        for r, idx in _region_rows(region[i].flatten(), m):
            y = _region_output(cols.index_select(1, idx), coef[i, r],
                               bank[r] if tapwise else bank, tapwise, groups, out_channels)
            out[i].index_copy_(1, idx, y)
    return out.permute(0, 1, 3, 2).reshape(n, out_channels, ho, wo)


# bytes of dU per block of rows in the batched backward: each region's dU at every position is
# formed a block at a time (a chunk of whole samples is padded at once, one sample at least)
_DU_BLOCK_BYTES = 8 << 20


def _backward_tap_mix(x, region, coef, bank, banks, meta, m, grad_out, needs):
    """The backward for the paper generator (``B <= k*k`` bases, m <= 8 at k=3) on CPU.

    All in the ``U`` form, a chunk of samples at a time, per region all its rows of the chunk
    at once: the bank is shared by the samples, only the tap mix and its adjoints (C++) are per
    row. With ``y = U @ bank`` per row (inner size ``B*Cg``, at most ``k*k*Cg``) and
    ``dU = g @ bank^T``:

    * the guide gradient needs every region's response at every position:
      ``<g, U_r @ bank_r> = <dU_r, U_r> = sum_{b,t} coef[r, b, t] D_r[b, t]`` with
      ``D_r[b, t] = sum_c dU_r[b, c] x_tap[t, c]`` (the tap mix's coefficient adjoint, C++). So
      each region makes ``dU_r`` at every position (in blocks of ``_DU_BLOCK_BYTES``) and never
      ``U_r`` there; its own rows of ``dU_r`` and ``D_r`` are kept for ``dL/dx`` and
      ``dL/dcoef``: m + 1 matmuls of this size in the backward, not m + 2;
    * ``dL/dbank_r = U^T g`` on the region's rows (their ``U`` from the tap mix);
    * ``dL/dx`` is added from ``dU`` straight into the padded input gradient by the tap mix's
      input adjoint (C++). No filter is built, no im2col of the input or its gradient held.
    """
    need_x, need_soft, need_coef, need_bank = needs
    k, stride, padding, dilation, groups, out_channels, _ = meta
    n, c, h, w = x.shape
    ho, wo = region.shape[-2:]
    per, og, cg = ho * wo, out_channels // groups, c // groups
    nb, taps = coef.shape[-2:]
    geometry = (k, stride, dilation, (ho, wo), groups)
    grad_x = torch.empty_like(x) if need_x else None
    grad_soft = x.new_empty(m, n * per) if need_soft else None  # all written
    grad_coef = torch.zeros_like(coef) if need_coef else None
    grad_bank = torch.zeros_like(bank) if need_bank else None
    block = max(1, _DU_BLOCK_BYTES // (nb * c * x.element_size()))  # rows of dU at once
    chunk = max(1, min(n, block // per))
    xp = grad_xp = None
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        rows_n = (i1 - i0) * per
        same = xp is not None and xp.shape[0] == i1 - i0  # reuse the buffers
        xp = pad_nhwc(x[i0:i1], padding, xp if same else None)
        if need_x:
            grad_xp = grad_xp.zero_() if same else torch.zeros_like(xp)
        g = grad_out[i0:i1].reshape(i1 - i0, groups, og, per).permute(1, 0, 3, 2).reshape(
            groups, rows_n, og)
        rows = dict(_region_rows(region[i0:i1].flatten(), m))
        every = torch.arange(rows_n) if need_soft else None
        for r in range(m):
            du = d_r = u = None  # the previous region's, freed before new ones
            idx = rows.get(r)
            if idx is None and not need_soft:
                continue
            cf = coef[i0:i1, r]  # (S, B, k*k)
            j = 0 if idx is None else idx.numel()
            if need_soft:  # dU at every position, for <g, y_r> = <dU, U> there (see above)
                cf_rows = cf.reshape(i1 - i0, -1)
                du, d_r = x.new_empty(groups, j, nb, cg), x.new_empty(j, nb, taps)
                for b0 in range(0, rows_n, block):
                    b1 = min(rows_n, b0 + block)
                    du_b = cpu_kernels.matmul(g[:, b0:b1], banks[r].transpose(1, 2)).view(
                        groups, b1 - b0, nb, cg)
                    d_b = cpu_kernels.region_tap_mix_grad_coef(xp, every[b0:b1], du_b,
                                                               *geometry)
                    grad_soft[r, i0 * per + b0:i0 * per + b1] = (
                        d_b.view(b1 - b0, -1) * cf_rows[every[b0:b1] // per]).sum(1)
                    if j:  # keep the region's rows (idx is sorted)
                        lo, hi = torch.searchsorted(idx, torch.tensor([b0, b1])).tolist()
                        if hi > lo:
                            sel = idx[lo:hi] - b0
                            du[:, lo:hi] = du_b.index_select(1, sel)
                            d_r[lo:hi] = d_b.index_select(0, sel)
                    du_b = d_b = None
            if not j:
                continue
            g_r = g.index_select(1, idx)
            if need_bank:  # U^T g, into the bank's (B, Cg, groups, out/groups) layout
                u = cpu_kernels.region_tap_mix(xp, idx, cf, *geometry)
                gb = torch.bmm(u.view(groups, j, -1).transpose(1, 2), g_r)
                grad_bank[r].view(nb, cg, groups, og).add_(
                    gb.view(groups, nb, cg, og).permute(1, 2, 0, 3))
            if not (need_coef or need_x):
                continue
            if not need_soft:  # dU and D on the region's rows only
                du = cpu_kernels.matmul(g_r, banks[r].transpose(1, 2)).view(groups, j, nb, cg)
                if need_coef:
                    d_r = cpu_kernels.region_tap_mix_grad_coef(xp, idx, du, *geometry)
            if need_coef:  # per row, then per sample
                grad_coef[i0:i1, r].index_add_(0, idx // per, d_r)
            if need_x:
                cpu_kernels.region_tap_mix_grad_input_(grad_xp, idx, cf, du, *geometry)
        if need_x:
            grad_x[i0:i1] = grad_xp[:, padding:padding + h, padding:padding + w].permute(
                0, 3, 1, 2)
    if grad_soft is not None:
        grad_soft = grad_soft.view(m, n, ho, wo).transpose(0, 1)
    return grad_x, grad_soft, None, grad_coef, grad_bank, None


class _RegionConv(torch.autograd.Function):
    """Region-selected dynamic convolution with the straight-through softmax gradient.

    ``forward(x, soft, region, coef, bank, meta) -> (N, out, Ho, Wo)``: ``soft`` (N, m, Ho, Wo)
    only receives the gradient ``<g, y_r>``; ``region`` = argmax of the guide (N, Ho, Wo) long;
    ``coef``/``bank`` as in :func:`region_conv`.
    """

    @staticmethod
    def forward(ctx, x, soft, region, coef, bank, meta):
        tapwise, groups, m = meta[6], meta[4], soft.shape[1]
        # paper generator on CPU: U straight from the padded input (C++), a region at a time
        banks = _tap_mix_banks(x, coef, bank, tapwise, groups)
        if banks is not None:
            out = _forward_tap_mix(x, region, coef, banks, meta, m)
        else:
            out = _forward_per_sample(x, region, coef, bank, meta, m)
        ctx.save_for_backward(x, region, coef, bank)
        ctx.meta, ctx.m = meta, m
        return owned(out)

    @staticmethod
    @first_order_only('DRConv', 'DRConv.forward_naive(x) gives the same output and gradient '
                      'as plain autograd ops (all m convolutions)')
    def backward(ctx, grad_out):
        x, region, coef, bank = ctx.saved_tensors
        k, stride, padding, dilation, groups, out_channels, tapwise = ctx.meta
        m = ctx.m
        need_x, need_soft, _, need_coef, need_bank, _ = ctx.needs_input_grad
        # paper generator with B <= k*k bases (m <= 8 at k=3) on CPU: batched U form
        banks = _tap_mix_banks(x, coef, bank, tapwise, groups)
        if banks is not None:
            return _backward_tap_mix(x, region, coef, bank, banks, ctx.meta, m, grad_out,
                                     (need_x, need_soft, need_coef, need_bank))
        # otherwise one sample at a time, each (sample, region) filter built
        n, _, h, w = x.shape
        ho, wo = region.shape[-2:]
        og = out_channels // groups
        # (N, groups, L, out/groups): rows = positions, like the im2col rows
        grad_out = grad_out.reshape(n, groups, og, ho * wo).transpose(2, 3)
        need_w = need_coef or need_bank
        grad_x = torch.empty_like(x) if need_x else None
        grad_soft = x.new_empty(n, m, ho * wo) if need_soft else None  # all written
        grad_coef = torch.zeros_like(coef) if need_coef else None
        grad_bank = torch.zeros_like(bank) if need_bank else None
        # per-sample buffers, reused (fresh multi-MB tensors per region cost page faults; the
        # responses are not: oneDNN's matmul writes a fresh result, and is still faster)
        xp = cols = grad_cols = grad_xp = w_t = gw_t = None
        for i in range(n):
            xp = pad_nhwc(x[i:i + 1], padding, xp)
            cols = im2col_t(xp[0], k, stride, dilation, (ho, wo), groups, cols)
            g = grad_out[i].contiguous()
            if need_x and grad_cols is None:
                grad_cols = torch.empty_like(cols)  # every row is written for every sample
            grad_w = []  # basis generator: (r, dL/dW_r) of this sample, contracted at the end
            rows = dict(_region_rows(region[i].flatten(), m))
            for r in range(m):
                if not need_soft and r not in rows:
                    continue
                w_t = materialize_filters(coef[i, r], bank[r] if tapwise else bank, tapwise,
                                          out_channels, w_t)
                w_g = _grouped(w_t, groups)
                if need_soft:  # <g, y_r> for every region r: all m responses are needed
                    resp = cpu_kernels.matmul(cols, w_g)
                    grad_soft[i, r] = resp.mul_(g).sum((0, 2))
                if r not in rows:
                    continue
                idx = rows[r]
                g_r = g.index_select(1, idx)
                if grad_cols is not None:
                    grad_cols.index_copy_(1, idx, cpu_kernels.matmul(g_r, w_g.transpose(1, 2)))
                if need_w:
                    cols_r = cols.index_select(1, idx).transpose(1, 2)
                    if tapwise and groups == 1:  # into a reused buffer (consumed right away)
                        gw_t = torch.bmm(cols_r, g_r, out=gw_t) if gw_t is not None else (
                            torch.bmm(cols_r, g_r))
                        gw = gw_t[0]
                    else:
                        gw = torch.bmm(cols_r, g_r)  # (g, K, og)
                        gw = gw.transpose(0, 1).reshape(w_t.shape)
                    if tapwise:  # adjoint of coef.t() @ bank
                        gw = gw.reshape(coef.shape[-1], -1)  # a copy when og = 1
                        if need_coef:
                            grad_coef[i, r] = bank[r] @ gw.t()
                        if need_bank:
                            grad_bank[r].addmm_(coef[i, r], gw)
                    else:
                        grad_w.append((r, gw.flatten()))
            if grad_w:  # adjoint of coef @ bank, all regions of the sample at once
                which = [r for r, _ in grad_w]
                gw = torch.stack([v for _, v in grad_w])
                if need_coef:
                    grad_coef[i, which] = gw @ bank.t()
                if need_bank:
                    grad_bank.addmm_(coef[i, which].t(), gw)
            if grad_cols is not None:
                grad_xp = torch.zeros_like(xp[0]) if grad_xp is None else grad_xp.zero_()
                col2im_t_add_(grad_xp, grad_cols, k, stride, dilation, (ho, wo))
                grad_x[i] = grad_xp[padding:padding + h, padding:padding + w].permute(2, 0, 1)
        if grad_soft is not None:
            grad_soft = grad_soft.view(n, m, ho, wo)
        return grad_x, grad_soft, None, grad_coef, grad_bank, None


def region_conv(x: torch.Tensor, soft: torch.Tensor, region: torch.Tensor, coef: torch.Tensor,
                bank: torch.Tensor, kernel_size: int, out_channels: int, stride: int = 1,
                padding: int = 0, dilation: int = 1, groups: int = 1,
                tapwise: bool = True) -> torch.Tensor:
    """Region-selected dynamic conv (the fast path), see the module docstring.

    Args:
        x (Tensor): ``(N, C, H, W)``.
        soft (Tensor): ``(N, m, Ho, Wo)`` softmax of the guide (receives the surrogate gradient).
        region (Tensor): ``(N, Ho, Wo)`` long, argmax of the guide.
        coef (Tensor): ``(N, m, B, k*k)`` if ``tapwise`` else ``(N, m, B)``.
        bank (Tensor): ``(m, B, Cg*out)`` if ``tapwise`` else ``(B, k*k*Cg*out)``, with
            ``(tap, in, out)`` ordering (see :func:`materialize_filters`).
        kernel_size, out_channels, stride, padding, dilation, groups (int): as in ``F.conv2d``.
        tapwise (bool): factor layout, see :func:`materialize_filters`.

    Returns:
        Tensor: ``(N, out, Ho, Wo)``.
    """
    meta = (kernel_size, stride, padding, dilation, groups, out_channels, tapwise)
    return _RegionConv.apply(x, soft, region, coef, bank, meta)


def drconv_naive(x: torch.Tensor, mask: torch.Tensor, filters: torch.Tensor, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1,
                 kernel_size: Optional[int] = None) -> torch.Tensor:
    """All-m-regions form: every region's conv at every position, then the mask-weighted sum.

    Plain tensor ops (used for ONNX export and as the benchmark's naive reference); m times the
    FLOPs and activation memory of one convolution. Eager: one grouped conv over the batch.
    While a graph is recorded: im2col (``F.unfold``) and a batched matmul, so the graph's
    batch and size stay symbolic (the grouped conv's group count would fix the batch).

    Args:
        x (Tensor): ``(N, C, H, W)``.
        mask (Tensor): ``(N, m, Ho, Wo)`` weights of the regions (one-hot, or the STE surrogate).
        filters (Tensor): ``(N, m, out, C/groups, k, k)``.
        stride, padding, dilation, groups (int): as in :func:`torch.nn.functional.conv2d`.
            Default: 1, 0, 1, 1.
        kernel_size (int, optional): ``k`` as a Python int (the layer's); while a graph is
            recorded the filters' shape is a traced value. Default: read from ``filters``.

    Returns:
        Tensor: ``(N, out, Ho, Wo)`` = ``sum_r mask[:, r] * conv(x[n], filters[n, r])``.
    """
    n, c, h, w = x.shape
    _, m, o, cg, k, _ = filters.shape
    og = o // groups
    # group (n, g) holds the m*og filters of sample n, group g
    weight = filters.reshape(n, m, groups, og, cg * k * k).transpose(1, 2)
    if tracing():
        kk = kernel_size if kernel_size is not None else int(k)  # a constant of the layer
        cols = F.unfold(x, kk, dilation, padding, stride).view(n, groups, cg * k * k, -1)
        y = (weight.reshape(n, groups, m * og, -1) @ cols).view(n, groups, m, og,
                                                                *mask.shape[-2:])
    else:
        y = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(-1, cg, k, k), None, stride,
                     padding, dilation, groups=n * groups)
        y = y.view(n, groups, m, og, *y.shape[-2:])
    return (y * mask[:, None, :, None]).sum(2).reshape(n, o, *y.shape[-2:])


def adaptive_avg_pool_matmul(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as ``A_h @ x @ A_w^T`` with the bin-averaging
    matrices (PyTorch's bins ``[floor(i*L/size), ceil((i+1)*L/size))``). Used when exporting:
    the TorchScript ONNX exporter supports adaptive pooling only when ``size`` divides H and W."""
    def bins(length):
        i = torch.arange(size, device=x.device)
        start = torch.div(i * length, size, rounding_mode='floor')
        end = torch.div((i + 1) * length + size - 1, size, rounding_mode='floor')
        pos = torch.arange(length, device=x.device)
        a = ((pos >= start[:, None]) & (pos < end[:, None])).to(x.dtype)
        return a / a.sum(1, keepdim=True)
    return bins(x.shape[-2]) @ x @ bins(x.shape[-1]).t()


# --------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------
@register
class DRConv(LayerStateDict, nn.Module):
    """Dynamic region-aware convolution, a drop-in for an mm conv slot.

    A guide conv (k x k, the layer's stride/padding/dilation, ``in -> m``) splits the output
    plane into ``m`` regions (argmax, one-hot forward, softmax straight-through backward); a
    filter generator produces ``m`` filters ``(out, in/groups, k, k)`` per sample; each output
    position is convolved with the filter of its region. No static conv weight.

    Generators (``P`` = trainable parameters, ``Cg = in/groups``, ``h = gen_channels``):

    * ``'full'`` (the paper): ``AdaptiveAvgPool(k) -> 1x1 conv in->h (default h = m*m) ->
      sigmoid -> 1x1 conv h -> m*out*Cg, groups=m``; the last conv's weight and bias are
      stored transposed as ``gen_bank (m, h/m + 1, Cg, out)`` (row ``h/m`` = the bias), the
      layout the fast path multiplies with (no per-forward copy).
      ``P = in*h + h + h*out*Cg + m*out*Cg`` (about ``m^2*in*out/groups``: 4.74 M at
      256->256, m=8; 1.31 M at m=4).
    * ``'basis'``: a bank of ``B = num_bases`` (default m) kernels, stored as
      ``bank (B, k*k*Cg, out)`` (rows ordered (tap, input channel)), mixed per
      sample and region by a small head ``global avg pool -> 1x1 in->c (default
      max(in//16, 8)) -> ReLU -> 1x1 c->m*B -> sigmoid``:
      ``W[n, r] = sum_b coef[n, r, b] * bank_b``.
      ``P = B*out*Cg*k^2 + in*c + c + c*m*B + m*B`` (grows as ``m``, not ``m^2``; 4.72 M at
      256->256, m=B=8, k=3, as much as ``'full'``; 2.36 M at m=B=4, more; 1.2 M with B=2).

    Both add the guide ``m*in*k^2 + m`` and the optional output bias ``out``.

    FLOPs (MACs, ``count_flops``), input ``(N, C, H, W)``, output ``Ho x Wo``, ``T = k*k``:
    ``N*Ho*Wo*m*C*T`` (guide) + ``N*Ho*Wo*out*Cg*T`` (region conv, one filter per position)
    + generator: full ``N*(C*h*T + m*out*Cg*(h/m)*T)``; basis ``N*(C*c + c*m*B + m*B*out*Cg*T)``.
    Pooling, sigmoid, softmax and the argmax are element-wise and not counted.

    Initialisation (``init_weights``): guide conv Kaiming-normal (fan_out) so the regions follow
    the input from the start, zero biases; the generator's last layer (``full``) or the bank
    (``basis``) is normal with the std that gives the *generated* filters the Kaiming variance
    ``2 / (Cg*k^2)`` (the sigmoid outputs start near 0.5, so the std is
    ``sqrt(2 / (Cg*k^2) / (0.25*h/m))`` resp. ``sqrt(2 / (Cg*k^2) / (0.25*B))``); the generator's
    hidden 1x1 convs Kaiming-normal (fan_in); output bias zero.

    Args:
        in_channels (int): C.
        out_channels (int): output channels.
        kernel_size (int | tuple[int, int]): k (square). Default: 3.
        stride (int | tuple): square stride. Default: 1.
        padding (int | tuple | str): square zero padding, or 'same' (stride 1, odd
            dilation * (kernel_size - 1) + 1). Default: 0.
        dilation (int | tuple): square dilation. Default: 1.
        groups (int): must divide in and out channels. Default: 1.
        bias (bool): learnable output bias. Default: True.
        num_regions (int): m >= 1. Default: 8.
        generator (str): ``'full'`` or ``'basis'``. Default: ``'full'``.
        gen_channels (int, optional): ``'full'`` only: hidden channels h, a multiple of m.
            Default: m*m.
        num_bases (int, optional): ``'basis'`` only: B. Default: m.
        head_channels (int, optional): ``'basis'`` only: head width. Default: max(in//16, 8).

    Shapes:
        input ``(N, in, H, W)`` -> output ``(N, out, Ho, Wo)``.
    """
    # state-dict layout (convzoo_mm.layers.state_dict): 2 stores the basis bank 3-D, (B, k*k*Cg,
    # out), where 1 had (B, k, k, Cg, out), which ``.to(memory_format=channels_last)`` rejects
    _version = 2

    @known_options
    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, num_regions: int = 8,
                 generator: str = 'full', gen_channels: Optional[int] = None,
                 num_bases: Optional[int] = None, head_channels: Optional[int] = None):
        super().__init__()
        self.in_channels = check_int('in_channels', in_channels)
        self.out_channels = check_int('out_channels', out_channels)
        k = check_square('kernel_size', kernel_size)
        s = check_square('stride', stride)
        d = check_square('dilation', dilation)
        if padding == 'same':  # as nn.Conv2d: stride 1; symmetric only (one int padding)
            before, after = same_padding(k, d)
            if s != 1 or before != after:
                raise ValueError(
                    f"padding='same' needs stride=1 and an even dilation * (kernel_size - 1) "
                    f"(a symmetric pad), got stride={s}, kernel_size={k}, dilation={d}; pass "
                    f"an int padding")
            padding = before
        p = check_square('padding', padding, min_value=0)
        self.groups = check_int('groups', groups)
        check_divides('in_channels', in_channels, 'groups', groups)
        check_divides('out_channels', out_channels, 'groups', groups)
        check_bool('bias', bias)
        self.num_regions = m = check_int('num_regions', num_regions)
        self.generator = check_choice('generator', generator, ['full', 'basis'])
        self.kernel_size, self.stride = (k, k), (s, s)
        self.padding, self.dilation = (p, p), (d, d)
        self.transposed, self.output_padding = False, (0, 0)
        cg = in_channels // groups

        self.guide = nn.Conv2d(in_channels, m, k, s, p, d, bias=True)
        if generator == 'full':
            for name, value in (('num_bases', num_bases), ('head_channels', head_channels)):
                if value is not None:
                    raise ValueError(f"{name} applies to generator='basis' only, got {name}="
                                     f"{value!r} with generator='full'")
            h = m * m if gen_channels is None else check_int('gen_channels', gen_channels)
            check_divides('gen_channels', h, 'num_regions', m)
            self.gen_channels = h
            self.gen_pool = nn.AdaptiveAvgPool2d(k)
            self.gen_hidden = nn.Conv2d(in_channels, h, 1)
            # the paper's last layer, 1x1 conv h -> m*out*Cg with groups=m, stored transposed:
            # gen_bank[r, j, c, o] = weight[r*out*Cg + o*Cg + c, j] (j < h/m), row h/m = bias
            self.gen_bank = nn.Parameter(torch.empty(m, h // m + 1, cg, out_channels))
        else:
            if gen_channels is not None:
                raise ValueError(f"gen_channels applies to generator='full' only, got "
                                 f"gen_channels={gen_channels!r} with generator='basis'")
            self.num_bases = b = m if num_bases is None else check_int('num_bases', num_bases)
            c = max(in_channels // 16, 8) if head_channels is None else check_int(
                'head_channels', head_channels)
            self.head_channels = c
            # bank[b, (i*k + j)*Cg + c, o] = basis kernel b at tap (i, j), input c, output o
            # (3-D: Module.to(memory_format=channels_last) restrides every 4-D and 5-D tensor)
            self.bank = nn.Parameter(torch.empty(b, k * k * cg, out_channels))
            self.head_hidden = nn.Conv2d(in_channels, c, 1)
            self.head_out = nn.Conv2d(c, m * b, 1)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.init_weights()

    # ---- parameters ---------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        # ``.to(memory_format=torch.channels_last)`` restrides every 4-D parameter; gen_bank is a
        # bank of matrices, not a conv weight, and the region matmuls read it row-major
        bank = getattr(self, 'gen_bank', None)
        if bank is not None and not bank.is_contiguous():
            bank.data = bank.data.contiguous()
        return self

    def init_weights(self) -> None:
        """See the class docstring (Initialisation)."""
        k, cg, m = self.kernel_size[0], self.in_channels // self.groups, self.num_regions
        target_var = 2.0 / (cg * k * k)
        nn.init.kaiming_normal_(self.guide.weight, mode='fan_out', nonlinearity='relu')
        nn.init.zeros_(self.guide.bias)
        if self.generator == 'full':
            nn.init.kaiming_normal_(self.gen_hidden.weight, nonlinearity='relu')
            nn.init.zeros_(self.gen_hidden.bias)
            per_region = self.gen_channels // m
            with torch.no_grad():
                nn.init.normal_(self.gen_bank, std=math.sqrt(target_var / (0.25 * per_region)))
                self.gen_bank[:, -1].zero_()  # the bias row
        else:
            nn.init.normal_(self.bank, std=math.sqrt(target_var / (0.25 * self.num_bases)))
            nn.init.kaiming_normal_(self.head_hidden.weight, nonlinearity='relu')
            nn.init.zeros_(self.head_hidden.bias)
            nn.init.normal_(self.head_out.weight, std=0.01)
            nn.init.zeros_(self.head_out.bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _upgrade_state_dict(self, state_dict, prefix, version, error_msgs):
        # version 1 stored the basis bank as (B, k, k, Cg, out): the same numbers. One that does
        # not fit this layer stays as saved, so the mismatch message shows its real shape.
        saved, bank = state_dict.get(prefix + 'bank'), getattr(self, 'bank', None)
        k, cg = self.kernel_size[0], self.in_channels // self.groups
        if (isinstance(saved, torch.Tensor) and bank is not None
                and tuple(saved.shape) == (bank.shape[0], k, k, cg, bank.shape[-1])):
            state_dict[prefix + 'bank'] = saved.reshape(bank.shape)
            warnings.warn(
                f'{prefix}bank: a DRConv basis bank of state-dict version 1, shape '
                f'{tuple(saved.shape)}, loaded as {tuple(bank.shape)}; an optimizer state saved '
                f'with it (resume) still has the old shape and fails at the first step: start '
                f'from these weights (load_from) instead of resuming', UserWarning, stacklevel=2)

    @staticmethod
    def _options_from_shapes(shapes):
        """Options implied by the shapes: guide.weight (m, in, k, k); gen_bank
        (m, h/m + 1, in/groups, out) for generator 'full', bank (B, k*k*in/groups, out) and
        head_hidden.weight (c, in, 1, 1) for 'basis'."""
        guide = shapes.get('guide.weight')
        if guide is None or len(guide) != 4:
            return None
        opts = dict(num_regions=guide[0], in_channels=guide[1], kernel_size=guide[-1],
                    bias='bias' in shapes)
        if 'gen_bank' in shapes:
            m, rows, _, out = shapes['gen_bank']
            opts.update(generator='full', gen_channels=m * (rows - 1), out_channels=out)
        elif 'bank' in shapes:
            opts.update(generator='basis', num_bases=shapes['bank'][0],
                        out_channels=shapes['bank'][-1])
            if 'head_hidden.weight' in shapes:
                opts['head_channels'] = shapes['head_hidden.weight'][0]
        return opts

    # ---- the pieces of the forward --------------------------------------------------------
    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        k, s, p, d = self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]
        return conv_output_size(h, k, s, p, d), conv_output_size(w, k, s, p, d)

    def factors(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Generator factors ``(coef, bank)`` of :func:`region_conv` (coef with a leading batch
        dimension; bank in the (tap, in, out) layout of :func:`materialize_filters`, a view of
        the parameter, no copy)."""
        n, m, k = x.shape[0], self.num_regions, self.kernel_size[0]
        if self.generator == 'full':
            pooled = adaptive_avg_pool_matmul(x, k) if tracing() else self.gen_pool(x)
            t = torch.sigmoid(self.gen_hidden(pooled))  # (N, h, k, k)
            coef = t.view(n, m, self.gen_channels // m, k * k)
            coef = torch.cat([coef, coef.new_ones(n, m, 1, k * k)], 2)  # the bias as a basis
            return coef, self.gen_bank.view(m, self.gen_bank.shape[1], -1)
        pooled = F.adaptive_avg_pool2d(x, 1)
        coef = torch.sigmoid(self.head_out(F.relu(self.head_hidden(pooled))))
        return coef.view(n, m, self.num_bases), self.bank.view(self.num_bases, -1)

    def filters(self, x: torch.Tensor) -> torch.Tensor:
        """All generated filters ``(N, m, out, in/groups, k, k)`` (for tests and export)."""
        coef, bank = self.factors(x)
        n, m, o, k = x.shape[0], self.num_regions, self.out_channels, self.kernel_size[0]
        flat = materialize_filters(coef, bank, self.generator == 'full', o)  # (N, m, kkCg, out)
        return flat.view(n, m, k, k, -1, o).permute(0, 1, 5, 4, 2, 3)

    def forward_naive(self, x: torch.Tensor) -> torch.Tensor:
        """The forward as plain tensor ops (:func:`drconv_naive`, all ``m`` convolutions):
        what export records, and the benchmark's naive reference. Same output and gradient
        as :meth:`forward`."""
        guide = self.guide(x)
        soft = guide.softmax(1)
        mask = F.one_hot(guide.argmax(1), self.num_regions).permute(0, 3, 1, 2).to(x.dtype)
        out = drconv_naive(x, mask + soft - soft.detach(), self.filters(x), self.stride[0],
                           self.padding[0], self.dilation[0], self.groups, self.kernel_size[0])
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1).to(out.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, H, W) -> (N, out, Ho, Wo)."""
        check_input(x, self.in_channels, 'DRConv')
        ho, wo = self.output_size(x.shape[-2], x.shape[-1])
        if ho < 1 or wo < 1:
            raise ValueError(
                f'DRConv: input size {tuple(x.shape[-2:])} is too small for kernel_size='
                f'{self.kernel_size[0]}, padding={self.padding[0]}, dilation={self.dilation[0]}')
        if tracing() or x.is_meta:  # a graph for use elsewhere, or shapes only: plain ops
            return self.forward_naive(x)
        if empty_batch(x):
            return empty_batch_forward(self.forward, x)
        k, s, p, d = self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]
        guide = self.guide(x)
        soft = guide.softmax(1)
        coef, bank = self.factors(x)
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):  # one dtype through the Function
            dtype = torch.get_autocast_dtype(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            out = region_conv(x.to(dtype), soft.to(dtype), guide.argmax(1), coef.to(dtype),
                              bank.to(dtype), k, self.out_channels, s, p, d, self.groups,
                              tapwise=self.generator == 'full')
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1).to(out.dtype)
        return out

    def count_flops(self, input_shape) -> int:
        """Multiply-accumulates of the forward for ``input_shape = (N, C, H, W)`` (formula in
        the class docstring): the paper's operations, independent of how the fast path
        associates the products (its ``U @ bank`` form does fewer when ``h/m + 1 < k*k``)."""
        n, _, h, w = input_shape
        ho, wo = self.output_size(h, w)
        k2 = self.kernel_size[0] ** 2
        c, o, m = self.in_channels, self.out_channels, self.num_regions
        cg = c // self.groups
        flops = ho * wo * (m * c * k2 + o * cg * k2)
        if self.generator == 'full':
            hid = self.gen_channels
            flops += c * hid * k2 + m * o * cg * (hid // m) * k2
        else:
            flops += c * self.head_channels + self.head_channels * m * self.num_bases
            flops += m * self.num_bases * o * cg * k2
        return n * flops

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, dilation={self.dilation}, '
                f'groups={self.groups}, bias={self.bias is not None}, '
                f'num_regions={self.num_regions}, generator={self.generator!r}')
