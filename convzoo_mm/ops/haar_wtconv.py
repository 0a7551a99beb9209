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

Math (per channel, the 2x2 block p_rc at rows 2u+r, columns 2v+c of the level input):
``LL = (p00+p01+p10+p11)/2``, ``b1 = (p00+p01-p10-p11)/2``, ``b2 = (p00-p01+p10-p11)/2``,
``b3 = (p00-p01-p10+p11)/2`` (the band order of :func:`convzoo_mm.layers.wtconv.haar_analysis`),
and the inverse is the same matrix. Supported: Haar, odd kernel sizes, any dilation, stride 1
(the layer subsamples for stride > 1), float32/float16/bfloat16 with float32 accumulation.

The kernels run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests
check them without a GPU). Importing this module without Triton is fine: ``AVAILABLE`` is False.
"""
from typing import List, Optional

import torch

try:  # Triton is optional: CI and CPU-only installs run the PyTorch path.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None

AVAILABLE = triton is not None

__all__ = ['AVAILABLE', 'haar_wtconv', 'haar_analysis_conv', 'haar_synthesis_add']


def _blocks(h: int, w: int):
    """Tile (BH, BW) of half-resolution positions per program, and its warp count."""
    bw = min(triton.next_power_of_2(max(w, 1)), 32)
    bh = min(triton.next_power_of_2(max(h, 1)), max(1, 512 // bw))
    while bh * bw < 32:
        bh *= 2
    return bh, bw, max(1, min(8, bh * bw // 128))


if AVAILABLE:
    @triton.jit
    def _tile(C, h, w, BH: tl.constexpr, BW: tl.constexpr):
        """This program's (n, c) plane and its BH x BW tile of half-resolution positions."""
        plane = tl.program_id(0)
        tile = tl.program_id(1)
        tiles_w = tl.cdiv(w, BW)
        offs = tl.arange(0, BH * BW)
        u = (tile // tiles_w) * BH + offs // BW
        v = (tile % tiles_w) * BW + offs % BW
        return plane, plane // C, plane % C, u, v, (u < h) & (v < w)

    @triton.jit
    def _analysis_conv_kernel(x_ptr, w_ptr, f_ptr, b_ptr, C, H, W, h, w,
                              sxn, sxc, sxh, sxw,
                              K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                              NB: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
        plane, n, c, u, v, valid = _tile(C, h, w, BH, BW)
        xb = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
        wb = w_ptr + c * (4 * K * K)
        a0 = tl.zeros([BH * BW], dtype=tl.float32)
        a1 = tl.zeros([BH * BW], dtype=tl.float32)
        a2 = tl.zeros([BH * BW], dtype=tl.float32)
        a3 = tl.zeros([BH * BW], dtype=tl.float32)
        for dy in tl.static_range(K):
            uu = u + (dy * DIL - PAD)
            row_ok = valid & (uu >= 0) & (uu < h)
            r0 = 2 * uu
            r1_ok = row_ok & (r0 + 1 < H)
            for dx in tl.static_range(K):
                vv = v + (dx * DIL - PAD)
                m00 = row_ok & (vv >= 0) & (vv < w)
                c0 = 2 * vv
                m01 = m00 & (c0 + 1 < W)
                m10 = m00 & r1_ok
                m11 = m01 & r1_ok
                ptr = xb + r0 * sxh + c0 * sxw
                p00 = tl.load(ptr, mask=m00, other=0.0).to(tl.float32)
                p01 = tl.load(ptr + sxw, mask=m01, other=0.0).to(tl.float32)
                p10 = tl.load(ptr + sxh, mask=m10, other=0.0).to(tl.float32)
                p11 = tl.load(ptr + sxh + sxw, mask=m11, other=0.0).to(tl.float32)
                s1 = p00 + p01
                d1 = p00 - p01
                s2 = p10 + p11
                d2 = p10 - p11
                t = dy * K + dx
                a0 += (s1 + s2) * tl.load(wb + t)
                a1 += (s1 - s2) * tl.load(wb + K * K + t)
                a2 += (d1 + d2) * tl.load(wb + 2 * K * K + t)
                a3 += (d1 - d2) * tl.load(wb + 3 * K * K + t)
        hw = h * w
        pos = u * w + v
        fb = f_ptr + plane.to(tl.int64) * (4 * hw) + pos
        out_ty = f_ptr.dtype.element_ty
        tl.store(fb, (a0 * 0.5).to(out_ty), mask=valid)
        tl.store(fb + hw, (a1 * 0.5).to(out_ty), mask=valid)
        tl.store(fb + 2 * hw, (a2 * 0.5).to(out_ty), mask=valid)
        tl.store(fb + 3 * hw, (a3 * 0.5).to(out_ty), mask=valid)
        # the subbands themselves at (u, v): LL always (next level's input), all four if NB == 4
        r0 = 2 * u
        c0 = 2 * v
        m01 = valid & (c0 + 1 < W)
        m10 = valid & (r0 + 1 < H)
        ptr = xb + r0 * sxh + c0 * sxw
        p00 = tl.load(ptr, mask=valid, other=0.0).to(tl.float32)
        p01 = tl.load(ptr + sxw, mask=m01, other=0.0).to(tl.float32)
        p10 = tl.load(ptr + sxh, mask=m10, other=0.0).to(tl.float32)
        p11 = tl.load(ptr + sxh + sxw, mask=m01 & m10, other=0.0).to(tl.float32)
        bb = b_ptr + plane.to(tl.int64) * (NB * hw) + pos
        tl.store(bb, ((p00 + p01 + p10 + p11) * 0.5).to(out_ty), mask=valid)
        if NB == 4:
            tl.store(bb + hw, ((p00 + p01 - p10 - p11) * 0.5).to(out_ty), mask=valid)
            tl.store(bb + 2 * hw, ((p00 - p01 + p10 - p11) * 0.5).to(out_ty), mask=valid)
            tl.store(bb + 3 * hw, ((p00 - p01 - p10 + p11) * 0.5).to(out_ty), mask=valid)

    @triton.jit
    def _synthesis_kernel(f_ptr, e_ptr, a_ptr, o_ptr, C, H, W, h, w,
                          san, sac, sah, saw, son, soc, soh, sow,
                          HAS_E: tl.constexpr, HAS_A: tl.constexpr,
                          BH: tl.constexpr, BW: tl.constexpr):
        plane, n, c, u, v, valid = _tile(C, h, w, BH, BW)
        hw = h * w
        pos = u * w + v
        fb = f_ptr + plane.to(tl.int64) * (4 * hw) + pos
        f0 = tl.load(fb, mask=valid, other=0.0).to(tl.float32)
        f1 = tl.load(fb + hw, mask=valid, other=0.0).to(tl.float32)
        f2 = tl.load(fb + 2 * hw, mask=valid, other=0.0).to(tl.float32)
        f3 = tl.load(fb + 3 * hw, mask=valid, other=0.0).to(tl.float32)
        if HAS_E:
            f0 += tl.load(e_ptr + plane.to(tl.int64) * hw + pos, mask=valid,
                          other=0.0).to(tl.float32)
        p = f0 + f1
        q = f0 - f1
        r = f2 + f3
        t = f2 - f3
        o00 = (p + r) * 0.5
        o01 = (p - r) * 0.5
        o10 = (q + t) * 0.5
        o11 = (q - t) * 0.5
        r0 = 2 * u
        c0 = 2 * v
        m01 = valid & (c0 + 1 < W)
        m10 = valid & (r0 + 1 < H)
        m11 = m01 & m10
        if HAS_A:
            ab = a_ptr + n.to(tl.int64) * san + c.to(tl.int64) * sac + r0 * sah + c0 * saw
            o00 += tl.load(ab, mask=valid, other=0.0).to(tl.float32)
            o01 += tl.load(ab + saw, mask=m01, other=0.0).to(tl.float32)
            o10 += tl.load(ab + sah, mask=m10, other=0.0).to(tl.float32)
            o11 += tl.load(ab + sah + saw, mask=m11, other=0.0).to(tl.float32)
        ob = o_ptr + n.to(tl.int64) * son + c.to(tl.int64) * soc + r0 * soh + c0 * sow
        out_ty = o_ptr.dtype.element_ty
        tl.store(ob, o00.to(out_ty), mask=valid)
        tl.store(ob + sow, o01.to(out_ty), mask=m01)
        tl.store(ob + soh, o10.to(out_ty), mask=m10)
        tl.store(ob + soh + sow, o11.to(out_ty), mask=m11)


def haar_analysis_conv(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1,
                       keep_bands: bool = True):
    """One level: Haar subbands of ``x`` and their depthwise 'same' conv.

    Args:
        x: (N, C, H, W), any strides; odd H/W are zero-padded by one row/column (as published).
        weight: (C, 4, k, k) depthwise kernels of the four bands (k odd), scales folded in.
        keep_bands: return all four subbands, else only the LL band.

    Returns:
        ``(filtered, bands)``: (N, C, 4, h, w) conv outputs and (N, C, 4 or 1, h, w) subbands,
        h = ceil(H/2), w = ceil(W/2), both contiguous in x's dtype.
    """
    n, c, hh, ww = x.shape
    k = weight.shape[-1]
    h, w = (hh + 1) // 2, (ww + 1) // 2
    nb = 4 if keep_bands else 1
    filtered = x.new_empty((n, c, 4, h, w))
    bands = x.new_empty((n, c, nb, h, w))
    bh, bw, warps = _blocks(h, w)
    grid = (n * c, triton.cdiv(h, bh) * triton.cdiv(w, bw))
    _analysis_conv_kernel[grid](x, weight.float().contiguous(), filtered, bands, c, hh, ww, h, w,
                                *x.stride(), K=k, DIL=dilation, PAD=dilation * (k - 1) // 2,
                                NB=nb, BH=bh, BW=bw, num_warps=warps)
    return filtered, bands


def haar_synthesis_add(filtered: torch.Tensor, size, extra: Optional[torch.Tensor] = None,
                       add: Optional[torch.Tensor] = None,
                       like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse Haar transform of ``filtered`` (N, C, 4, h, w, contiguous) with ``extra``
    (N, C, h, w, contiguous) added to its LL band first, cropped to ``size`` = (H, W), plus
    ``add`` (N, C, H, W, any strides). The output takes ``like``'s memory format if given."""
    n, c, _, h, w = filtered.shape
    hh, ww = size
    if like is not None:
        out = torch.empty_like(like)
    else:
        out = filtered.new_empty((n, c, hh, ww))
    a = add if add is not None else out
    bh, bw, warps = _blocks(h, w)
    grid = (n * c, triton.cdiv(h, bh) * triton.cdiv(w, bw))
    _synthesis_kernel[grid](filtered, extra if extra is not None else filtered, a, out,
                            c, hh, ww, h, w, *a.stride(), *out.stride(),
                            HAS_E=extra is not None, HAS_A=add is not None,
                            BH=bh, BW=bw, num_warps=warps)
    return out


def _conv_weight_grad(grad, inp, weight, padding, dilation):
    """cuDNN's weight gradient of a depthwise 'same' conv (odd kernel)."""
    groups = weight.shape[0]
    return torch.ops.aten.convolution_backward(
        grad, inp, weight, None, [1, 1], [padding] * 2, [dilation] * 2, False, [0, 0], groups,
        [False, True, False])[1]


class _HaarWTConv(torch.autograd.Function):
    """Depthwise Haar WTConv at stride 1: ``base_conv(x) + sum of levels``, see module doc."""

    @staticmethod
    def forward(ctx, x, base_w, base_b, level_w, dilation: int, training: bool):
        # x: (N, C, H, W); base_w: (C, 1, k, k); base_b: (C,) or None; level_w: (L, C, 4, k, k)
        c = x.shape[1]
        k = base_w.shape[-1]
        pad = dilation * (k - 1) // 2
        out = torch.nn.functional.conv2d(x, base_w.to(x.dtype),
                                         None if base_b is None else base_b.to(x.dtype),
                                         1, pad, dilation, c)
        filtered, kept, sizes = [], [], []
        ll = x
        for i in range(level_w.shape[0]):
            sizes.append(ll.shape[-2:])
            f, bands = haar_analysis_conv(ll, level_w[i], dilation, keep_bands=training)
            filtered.append(f)
            kept.append(bands)
            ll = bands[:, :, 0]
        rec = None
        for i in reversed(range(len(filtered))):
            top = i == 0
            rec = haar_synthesis_add(filtered[i], sizes[i], rec, out if top else None,
                                     like=x if top else None)
        ctx.dilation, ctx.pad, ctx.sizes = dilation, pad, sizes
        ctx.has_bias = base_b is not None
        if training:
            ctx.save_for_backward(x, base_w, level_w, *kept)
        return out if rec is None else rec

    @staticmethod
    def backward(ctx, grad):
        x, base_w, level_w, *kept = ctx.saved_tensors
        d, pad = ctx.dilation, ctx.pad
        grad = grad.to(x.dtype)
        need_x = ctx.needs_input_grad[0]
        gx, gbw, gbb = torch.ops.aten.convolution_backward(
            grad, x, base_w.to(x.dtype), [x.shape[1]] if ctx.has_bias else None, [1, 1],
            [pad, pad], [d, d], False, [0, 0], x.shape[1], [need_x, True, ctx.has_bias])
        # top-down: gradients of the filtered bands are the subbands of the level gradient
        glw = torch.empty_like(level_w)
        dbands = []
        g = grad
        flipped = level_w.flip(-1, -2)
        for i in range(level_w.shape[0]):
            n, c, _, h, w = kept[i].shape
            dband, gbands = haar_analysis_conv(g, flipped[i], d, keep_bands=True)
            dbands.append(dband)
            glw[i] = _conv_weight_grad(gbands.view(n, 4 * c, h, w), kept[i].view(n, 4 * c, h, w),
                                       level_w[i].reshape(4 * c, 1, *level_w.shape[-2:])
                                       .to(x.dtype), pad, d).view(c, 4, *level_w.shape[-2:])
            g = gbands[:, :, 0]
        # bottom-up: the level gradients recombine through the inverse transform
        if need_x:
            r = None
            for i in reversed(range(len(dbands))):
                top = i == 0
                r = haar_synthesis_add(dbands[i], ctx.sizes[i], r, gx if top else None,
                                       like=x if top else None)
            if r is not None:
                gx = r
        return (gx if need_x else None, gbw.to(base_w.dtype),
                gbb.to(base_w.dtype) if ctx.has_bias else None, glw, None, None)


def haar_wtconv(x: torch.Tensor, base_weight: torch.Tensor, base_bias: Optional[torch.Tensor],
                level_weights: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Depthwise Haar WTConv at stride 1 with the scales already folded into the weights.

    Args:
        x: (N, C, H, W), CUDA (or CPU under ``TRITON_INTERPRET=1``), any H, W >= 1.
        base_weight: (C, 1, k, k), k odd.  base_bias: (C,) or None.
        level_weights: (L, C, 4, k, k), L >= 0 (band order LL, b1, b2, b3).

    Returns:
        (N, C, H, W) in x's dtype and memory format.
    """
    training = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, base_weight, base_bias, level_weights))
    return _HaarWTConv.apply(x, base_weight, base_bias, level_weights, int(dilation), training)
