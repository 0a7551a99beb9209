"""Fused Triton kernels for the Haar WTConv (GPU fast path of :class:`convzoo_mm.layers.WTConv`).

Why it is fast: the published layer runs, per wavelet level, a stride-2 grouped conv (transform),
a depthwise conv, a scale, a concatenation, a transposed grouped conv (inverse) and a crop, each a
separate kernel with its own full pass over memory, and as many again in the backward. Here each
level is two kernels:

* ``analysis + conv``: forms the four Haar subbands of the level's input on the fly (odd sizes
  zero-padded by masking) and applies the depthwise k x k conv with the learnable scale already
  folded into its weights; it also writes the subbands themselves (the LL band feeds the next
  level; all four are kept for the weight gradient when training).
* ``synthesis``: adds the deeper level's reconstruction to the LL band, applies the inverse
  transform, crops odd sizes, and at the top level adds the base conv's output.

The backward is the same two kernels again, because the Haar transform is orthogonal: the
gradient flows top-down through ``analysis + conv`` (the conv with its kernel flipped) and
bottom-up through ``synthesis``. The base conv and the depthwise weight gradients use cuDNN.

Memory layout: everything is channels_last. A program owns a tile of half-resolution positions x
channels with channels fastest, so each load and store of a tile row is one contiguous piece (the
backbones hand over channels_last tensors: ConvNeXt blocks permute from NHWC). Subbands and
filtered bands are (N, h, w, 4, C): one band is a channels_last (N, C, h, w) view, the LL band
feeds the next level without a copy, and all four viewed as (N, 4C, h, w) channels_last (channel
band*C + c) go to cuDNN's depthwise weight gradient without a copy. The kernel weights are
(4, k, k, C), so a tap's weights load in one piece too.

Math (per channel, the 2x2 block p_rc at rows 2u+r, columns 2v+c of the level input):
``LL = (p00+p01+p10+p11)/2``, ``b1 = (p00+p01-p10-p11)/2``, ``b2 = (p00-p01+p10-p11)/2``,
``b3 = (p00-p01-p10+p11)/2`` (the band order of :func:`convzoo_mm.layers.wtconv.haar_analysis`),
and the inverse is the same matrix. Supported: Haar, odd kernel sizes, any dilation, stride 1
(the layer subsamples for stride > 1), float32/float16/bfloat16 with float32 accumulation.

The kernels run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests
check them without a GPU). Importing this module without Triton is fine: ``AVAILABLE`` is False.
"""
from typing import Optional, Sequence

import torch

try:  # Triton is optional: CI and CPU-only installs run the PyTorch path.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None

AVAILABLE = triton is not None

__all__ = ['AVAILABLE', 'haar_wtconv', 'haar_analysis_conv', 'haar_synthesis_add']


def _tiles(c: int, elements: int):
    """(BP, BC): BP half-resolution positions x BC channels per program, about ``elements`` in
    all. Channels vary fastest, so every load and store of a tile row is contiguous in
    channels_last memory; BC divides C when C is a multiple of 16 (96 = 3 x 32, no masked lanes)."""
    low = c & -c                                   # largest power of two dividing c
    bc = min(64, low if low >= 16 else triton.next_power_of_2(max(c, 1)))
    return max(16, elements // bc), bc


if AVAILABLE:
    @triton.jit
    def _tile(P, C, h, w, BP: tl.constexpr, BC: tl.constexpr):
        """This program's BP positions (flattened over N*h*w) and BC channels."""
        p = tl.program_id(0) * BP + tl.arange(0, BP)
        ch = tl.program_id(1) * BC + tl.arange(0, BC)
        hw = h * w
        n = p // hw
        u = (p % hw) // w
        v = p % w
        return p, n, u, v, ch, p < P, ch < C

    # sizes vary from image to image in detection: not specializing on them avoids recompiles
    _SIZES = ['P', 'H', 'W', 'h', 'w']

    @triton.jit(do_not_specialize=_SIZES)
    def _analysis_conv_kernel(x_ptr, w_ptr, f_ptr, b_ptr, P, C, H, W, h, w,
                              sxn, sxc, sxh, sxw,
                              K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                              FLIP: tl.constexpr, NB: tl.constexpr,
                              BP: tl.constexpr, BC: tl.constexpr):
        p, n, u, v, ch, p_ok, c_ok = _tile(P, C, h, w, BP, BC)
        xb = x_ptr + n.to(tl.int64)[:, None] * sxn + ch[None, :] * sxc
        wb = w_ptr + ch
        a0 = tl.zeros([BP, BC], dtype=tl.float32)
        a1 = tl.zeros([BP, BC], dtype=tl.float32)
        a2 = tl.zeros([BP, BC], dtype=tl.float32)
        a3 = tl.zeros([BP, BC], dtype=tl.float32)
        for dy in range(K):
            uu = u + (dy * DIL - PAD)
            r0 = 2 * uu
            row_ok = p_ok & (uu >= 0) & (uu < h)
            r1_ok = row_ok & (r0 + 1 < H)
            for dx in tl.static_range(K):
                vv = v + (dx * DIL - PAD)
                c0 = 2 * vv
                m00 = row_ok & (vv >= 0) & (vv < w)
                m01 = m00 & (c0 + 1 < W)
                m10 = m00 & r1_ok
                m11 = m01 & r1_ok
                ptr = xb + (r0 * sxh + c0 * sxw)[:, None]
                p00 = tl.load(ptr, mask=m00[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                p01 = tl.load(ptr + sxw, mask=m01[:, None] & c_ok[None, :],
                              other=0.0).to(tl.float32)
                p10 = tl.load(ptr + sxh, mask=m10[:, None] & c_ok[None, :],
                              other=0.0).to(tl.float32)
                p11 = tl.load(ptr + sxh + sxw, mask=m11[:, None] & c_ok[None, :],
                              other=0.0).to(tl.float32)
                s1 = p00 + p01
                d1 = p00 - p01
                s2 = p10 + p11
                d2 = p10 - p11
                if FLIP:
                    t = K * K - 1 - (dy * K + dx)
                else:
                    t = dy * K + dx
                wt = wb + t * C
                a0 += (s1 + s2) * tl.load(wt, mask=c_ok, other=0.0)[None, :]
                a1 += (s1 - s2) * tl.load(wt + K * K * C, mask=c_ok, other=0.0)[None, :]
                a2 += (d1 + d2) * tl.load(wt + 2 * K * K * C, mask=c_ok, other=0.0)[None, :]
                a3 += (d1 - d2) * tl.load(wt + 3 * K * K * C, mask=c_ok, other=0.0)[None, :]
        ok = p_ok[:, None] & c_ok[None, :]
        out_ty = f_ptr.dtype.element_ty
        fb = f_ptr + p.to(tl.int64)[:, None] * (4 * C) + ch[None, :]
        tl.store(fb, (a0 * 0.5).to(out_ty), mask=ok)
        tl.store(fb + C, (a1 * 0.5).to(out_ty), mask=ok)
        tl.store(fb + 2 * C, (a2 * 0.5).to(out_ty), mask=ok)
        tl.store(fb + 3 * C, (a3 * 0.5).to(out_ty), mask=ok)
        # the subbands themselves at (u, v): LL always (next level's input), all four if NB == 4
        r0 = 2 * u
        c0 = 2 * v
        m01 = (c0 + 1 < W)[:, None]
        m10 = (r0 + 1 < H)[:, None]
        ptr = xb + (r0 * sxh + c0 * sxw)[:, None]
        p00 = tl.load(ptr, mask=ok, other=0.0).to(tl.float32)
        p01 = tl.load(ptr + sxw, mask=ok & m01, other=0.0).to(tl.float32)
        p10 = tl.load(ptr + sxh, mask=ok & m10, other=0.0).to(tl.float32)
        p11 = tl.load(ptr + sxh + sxw, mask=ok & m01 & m10, other=0.0).to(tl.float32)
        bb = b_ptr + p.to(tl.int64)[:, None] * (NB * C) + ch[None, :]
        tl.store(bb, ((p00 + p01 + p10 + p11) * 0.5).to(out_ty), mask=ok)
        if NB == 4:
            tl.store(bb + C, ((p00 + p01 - p10 - p11) * 0.5).to(out_ty), mask=ok)
            tl.store(bb + 2 * C, ((p00 - p01 + p10 - p11) * 0.5).to(out_ty), mask=ok)
            tl.store(bb + 3 * C, ((p00 - p01 - p10 + p11) * 0.5).to(out_ty), mask=ok)

    @triton.jit(do_not_specialize=_SIZES)
    def _synthesis_kernel(f_ptr, e_ptr, a_ptr, o_ptr, P, C, H, W, h, w,
                          san, sac, sah, saw, son, soc, soh, sow,
                          HAS_E: tl.constexpr, HAS_A: tl.constexpr,
                          BP: tl.constexpr, BC: tl.constexpr):
        p, n, u, v, ch, p_ok, c_ok = _tile(P, C, h, w, BP, BC)
        ok = p_ok[:, None] & c_ok[None, :]
        fb = f_ptr + p.to(tl.int64)[:, None] * (4 * C) + ch[None, :]
        f0 = tl.load(fb, mask=ok, other=0.0).to(tl.float32)
        f1 = tl.load(fb + C, mask=ok, other=0.0).to(tl.float32)
        f2 = tl.load(fb + 2 * C, mask=ok, other=0.0).to(tl.float32)
        f3 = tl.load(fb + 3 * C, mask=ok, other=0.0).to(tl.float32)
        if HAS_E:
            f0 += tl.load(e_ptr + p.to(tl.int64)[:, None] * C + ch[None, :], mask=ok,
                          other=0.0).to(tl.float32)
        q0 = f0 + f1
        q1 = f0 - f1
        q2 = f2 + f3
        q3 = f2 - f3
        o00 = (q0 + q2) * 0.5
        o01 = (q0 - q2) * 0.5
        o10 = (q1 + q3) * 0.5
        o11 = (q1 - q3) * 0.5
        r0 = 2 * u
        c0 = 2 * v
        m01 = ok & (c0 + 1 < W)[:, None]
        m10 = ok & (r0 + 1 < H)[:, None]
        m11 = m01 & m10
        n64 = n.to(tl.int64)[:, None]
        if HAS_A:
            ab = a_ptr + n64 * san + ch[None, :] * sac + (r0 * sah + c0 * saw)[:, None]
            o00 += tl.load(ab, mask=ok, other=0.0).to(tl.float32)
            o01 += tl.load(ab + saw, mask=m01, other=0.0).to(tl.float32)
            o10 += tl.load(ab + sah, mask=m10, other=0.0).to(tl.float32)
            o11 += tl.load(ab + sah + saw, mask=m11, other=0.0).to(tl.float32)
        ob = o_ptr + n64 * son + ch[None, :] * soc + (r0 * soh + c0 * sow)[:, None]
        out_ty = o_ptr.dtype.element_ty
        tl.store(ob, o00.to(out_ty), mask=ok)
        tl.store(ob + sow, o01.to(out_ty), mask=m01)
        tl.store(ob + soh, o10.to(out_ty), mask=m10)
        tl.store(ob + soh + sow, o11.to(out_ty), mask=m11)


def _band(t: torch.Tensor, band: int) -> torch.Tensor:
    """Band ``band`` of an (N, h, w, B, C) tensor as an (N, C, h, w) channels_last view."""
    return t[:, :, :, band].permute(0, 3, 1, 2)


def haar_analysis_conv(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1,
                       keep_bands: bool = True, flip: bool = False):
    """One level: Haar subbands of ``x`` and their depthwise 'same' conv.

    Args:
        x: (N, C, H, W), any strides (fastest channels_last); odd H/W are zero-padded by one
            row/column (as published).
        weight: (4, k, k, C) float32 contiguous: the depthwise kernels of the four bands (k
            odd), scales folded in, channels last so that a tap's weights load in one piece.
        keep_bands: return all four subbands, else only the LL band.
        flip: convolve with the kernels rotated by 180 degrees (the backward's transposed conv).

    Returns:
        ``(filtered, bands)``: (N, h, w, 4, C) conv outputs and (N, h, w, 4 or 1, C) subbands,
        h = ceil(H/2), w = ceil(W/2), both contiguous in x's dtype (:func:`_band` views one band
        as (N, C, h, w)).
    """
    n, c, hh, ww = x.shape
    k = weight.shape[1]
    h, w = (hh + 1) // 2, (ww + 1) // 2
    nb = 4 if keep_bands else 1
    filtered = x.new_empty((n, h, w, 4, c))
    bands = x.new_empty((n, h, w, nb, c))
    bp, bc = _tiles(c, 1024)
    grid = (triton.cdiv(n * h * w, bp), triton.cdiv(c, bc))
    _analysis_conv_kernel[grid](x, weight, filtered, bands, n * h * w, c,
                                hh, ww, h, w, *x.stride(), K=k, DIL=dilation,
                                PAD=dilation * (k - 1) // 2, FLIP=flip, NB=nb, BP=bp, BC=bc,
                                num_warps=8)
    return filtered, bands


def haar_synthesis_add(filtered: torch.Tensor, size, extra: Optional[torch.Tensor] = None,
                       add: Optional[torch.Tensor] = None,
                       like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse Haar transform of ``filtered`` (N, h, w, 4, C, contiguous) with ``extra``
    (N, C, h, w, channels_last: an earlier output of this function) added to its LL band first,
    cropped to ``size`` = (H, W), plus ``add`` (N, C, H, W, any strides). The output is like
    ``like`` if given, else a channels_last (N, C, H, W) tensor."""
    n, h, w, _, c = filtered.shape
    hh, ww = size
    if like is not None:
        out = torch.empty_like(like)
    else:
        out = filtered.new_empty((n, hh, ww, c)).permute(0, 3, 1, 2)
    if extra is not None and not extra.permute(0, 2, 3, 1).is_contiguous():
        raise ValueError('haar_synthesis_add: extra must be channels_last contiguous')
    a = add if add is not None else out
    bp, bc = _tiles(c, 2048)
    grid = (triton.cdiv(n * h * w, bp), triton.cdiv(c, bc))
    _synthesis_kernel[grid](filtered, extra if extra is not None else filtered, a, out,
                            n * h * w, c, hh, ww, h, w, *a.stride(), *out.stride(),
                            HAS_E=extra is not None, HAS_A=add is not None,
                            BP=bp, BC=bc, num_warps=8)
    return out


def _level_weight_grad(grad_out: torch.Tensor, inp: torch.Tensor, padding: int,
                       dilation: int, k: int) -> torch.Tensor:
    """Weight gradient (C, 4, k, k) of one level's depthwise 'same' conv, from its output
    gradient and input, both (N, h, w, 4, C): viewed as (N, 4C, h, w) channels_last tensors
    (channel band*C + c), cuDNN computes it without a copy."""
    n, h, w, _, c = inp.shape

    def as_4c(t):
        return t.view(n, h, w, 4 * c).permute(0, 3, 1, 2)
    grad_w = torch.ops.aten.convolution_backward(
        as_4c(grad_out), as_4c(inp), inp.new_empty((4 * c, 1, k, k)), None, [1, 1],
        [padding] * 2, [dilation] * 2, False, [0, 0], 4 * c, [False, True, False])[1]
    return grad_w.reshape(4, c, k, k).transpose(0, 1)


def _fold(base_w, base_b, base_s, level_ws, level_ss):
    """The layer's parameters with the scales folded into the kernels (a scale after a depthwise
    conv is a scale of its kernel). Returns the base weight (C, 1, k, k), its bias (C,) or None,
    the level kernels in the analysis kernel's layout (L, 4, k, k, C) float32, and the stacked
    raw level weights (L, 4C, 1, k, k) and scales (L, 1, 4C, 1, 1) for the backward."""
    scale = base_s.reshape(-1)
    weight = base_w * scale.view(-1, 1, 1, 1)
    bias = None if base_b is None else base_b * scale
    c, k = base_w.shape[0], base_w.shape[-1]
    if not level_ws:
        return weight, bias, base_w.new_zeros((0, 4, k, k, c), dtype=torch.float32), None, None
    ws, ss = torch.stack(level_ws), torch.stack(level_ss)
    folded = torch.empty((len(level_ws), 4, k, k, c), device=ws.device, dtype=torch.float32)
    torch.mul(ws.view(-1, c, 4, k, k).permute(0, 2, 3, 4, 1),
              ss.view(-1, c, 4, 1, 1).permute(0, 2, 3, 4, 1), out=folded)
    return weight, bias, folded, ws, ss


class _HaarWTConv(torch.autograd.Function):
    """Depthwise Haar WTConv at stride 1: ``base_conv(x) + sum of levels``, see module doc. Takes
    the layer's parameters as they are and folds the scales itself, so autograd sees one node
    instead of a multiply per parameter (on a GPU the layer is launch-bound at small sizes)."""

    @staticmethod
    def forward(ctx, x, dilation: int, training: bool, base_w, base_b, base_s, *levels):
        # x: (N, C, H, W); base_w: (C, 1, k, k); base_b: (C,) or None; base_s: (1, C, 1, 1);
        # levels: L weights (4C, 1, k, k) then L scales (1, 4C, 1, 1)
        num = len(levels) // 2
        weight, bias, level_w, ws, ss = _fold(base_w, base_b, base_s, levels[:num], levels[num:])
        x = x.contiguous(memory_format=torch.channels_last)
        c = x.shape[1]
        k = base_w.shape[-1]
        pad = dilation * (k - 1) // 2
        out = torch.nn.functional.conv2d(x, weight.to(x.dtype),
                                         None if bias is None else bias.to(x.dtype),
                                         1, pad, dilation, c)
        filtered, kept, sizes = [], [], []
        ll = x
        for i in range(num):
            sizes.append(ll.shape[-2:])
            f, bands = haar_analysis_conv(ll, level_w[i], dilation, keep_bands=training)
            filtered.append(f)
            kept.append(bands)
            ll = _band(bands, 0)
        rec = None
        for i in reversed(range(num)):
            top = i == 0
            rec = haar_synthesis_add(filtered[i], sizes[i], rec, out if top else None,
                                     like=x if top else None)
        ctx.dilation, ctx.pad, ctx.sizes = dilation, pad, sizes
        if training:
            ctx.save_for_backward(x, base_w, base_b, base_s, weight, level_w, ws, ss, *kept)
        return out if rec is None else rec

    @staticmethod
    def backward(ctx, grad):
        x, base_w, base_b, base_s, weight, level_w, ws, ss, *kept = ctx.saved_tensors
        d, pad = ctx.dilation, ctx.pad
        c, k, num = x.shape[1], base_w.shape[-1], level_w.shape[0]
        grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        need_x = ctx.needs_input_grad[0]
        has_bias = base_b is not None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight.to(x.dtype), [c] if has_bias else None, [1, 1], [pad, pad], [d, d],
            False, [0, 0], c, [need_x, True, has_bias])
        # top-down: gradients of the filtered bands are the subbands of the level gradient
        glw = base_w.new_empty((num, c, 4, k, k))
        dbands = []
        g = grad
        for i in range(num):
            dband, gbands = haar_analysis_conv(g, level_w[i], d, keep_bands=True, flip=True)
            dbands.append(dband)
            glw[i] = _level_weight_grad(gbands, kept[i], pad, d, k)
            g = _band(gbands, 0)
        # bottom-up: the level gradients recombine through the inverse transform
        if need_x:
            r = None
            for i in reversed(range(num)):
                top = i == 0
                r = haar_synthesis_add(dbands[i], ctx.sizes[i], r, gx if top else None,
                                       like=x if top else None)
            if r is not None:
                gx = r
        # unfold the scales: d(w*s)/dw = s, d(w*s)/ds = sum of w over the kernel
        scale = base_s.reshape(-1)
        gw = gw.to(base_w.dtype)
        g_scale = (gw * base_w).sum((1, 2, 3))
        if has_bias:
            gb = gb.to(base_w.dtype)
            g_scale += gb * base_b
            gb = gb * scale
        grads = [gx if need_x else None, None, None, gw * scale.view(-1, 1, 1, 1), gb,
                 g_scale.view_as(base_s)]
        if num:
            glw = glw.view(num, 4 * c, 1, k, k)
            grads += list((glw * ss.view(num, 4 * c, 1, 1, 1)).unbind(0))
            grads += list((glw * ws).sum((2, 3, 4)).view_as(ss).unbind(0))
        return tuple(grads)


def haar_wtconv(x: torch.Tensor, base_weight: torch.Tensor, base_bias: Optional[torch.Tensor],
                base_scale: torch.Tensor, level_weights: Sequence[torch.Tensor],
                level_scales: Sequence[torch.Tensor], dilation: int = 1) -> torch.Tensor:
    """Depthwise Haar WTConv at stride 1 from the parameters of
    :class:`convzoo_mm.layers.WTConv`, scales not folded.

    Args:
        x: (N, C, H, W), CUDA (or CPU under ``TRITON_INTERPRET=1``), any H, W >= 1.
        base_weight: (C, 1, k, k), k odd.  base_bias: (C,) or None.  base_scale: (1, C, 1, 1).
        level_weights: L >= 0 tensors (4C, 1, k, k), channel c*4 + band (LL, b1, b2, b3).
        level_scales: L tensors (1, 4C, 1, 1).

    Returns:
        (N, C, H, W) in x's dtype, channels_last.
    """
    if len(level_weights) != len(level_scales):
        raise ValueError(f'haar_wtconv: {len(level_weights)} level_weights but '
                         f'{len(level_scales)} level_scales')
    params = (base_weight, base_bias, base_scale, *level_weights, *level_scales)
    training = torch.is_grad_enabled() and (x.requires_grad or any(
        t is not None and t.requires_grad for t in params))
    return _HaarWTConv.apply(x, int(dilation), training, *params)
