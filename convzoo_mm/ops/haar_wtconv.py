"""Fused Triton kernels for the Haar WTConv (GPU fast path of :class:`convzoo_mm.layers.WTConv`).

Why it is fast: the published layer runs, per wavelet level, a stride-2 grouped conv (transform),
a depthwise conv, a scale, a concatenation, a transposed grouped conv (inverse) and a crop, each a
separate kernel with its own full pass over memory, and as many again in the backward. Here a
pass is L + 1 kernels:

* ``analysis + conv``, one per level: forms the four Haar subbands of the level's input on the fly
  (odd sizes zero-padded by masking) and applies the depthwise k x k conv with the learnable scale
  already folded into its weights; it also writes the subbands themselves (the LL band feeds the
  next level; all four are kept for the weight gradient when training).
* ``synthesis``, one for all levels: every output pixel adds the base conv's output and, for each
  level, the inverse transform of that level's filtered bands at its ancestor position (deeper
  reconstructions enter the LL band before each inverse, so they unroll into a sum; odd sizes
  need no special case). One launch instead of L matters: at small sizes the layer is bound by
  the CPU that launches kernels.

The backward is the same kernels again, because the Haar transform is orthogonal: the gradient
flows top-down through ``analysis + conv`` (the conv with its kernel flipped) and bottom-up
through ``synthesis``. The base conv and the depthwise weight gradients use cuDNN.

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
import functools
from typing import List, Optional, Sequence

import torch
from torch.autograd.function import once_differentiable

try:  # Triton is optional: CI and CPU-only installs run the PyTorch path.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None

AVAILABLE = triton is not None

__all__ = ['AVAILABLE', 'haar_wtconv', 'haar_analysis_conv', 'haar_synthesis', 'packed_bands',
           'level_sizes']


# launch configuration: positions x channels per program (see _tiles) and warps per program
ANALYSIS_TILE, SYNTHESIS_TILE, NUM_WARPS = 512, 1024, 8


@functools.lru_cache(maxsize=None)
def _tiles(c: int, elements: int):
    """(BP, BC): BP positions (half resolution in the analysis, full in the synthesis) x BC
    channels per program, about ``elements`` in all. Channels vary fastest, so every load and
    store of a tile row is contiguous in channels_last memory; BC divides C when C is a multiple
    of 16 (96 = 3 x 32, no masked lanes). With NUM_WARPS warps and these tiles the kernels
    compile for sm_90 without register spills at k <= 5 (tests/test_wtconv_fused.py)."""
    low = c & -c                                   # largest power of two dividing c
    bc = min(32, low if low >= 16 else 1 << (max(c, 1) - 1).bit_length())
    return max(16, elements // bc), bc


def _cdiv(a: int, b: int) -> int:
    """Plain-Python ceil division: ``triton.cdiv`` is a jit function, 8 us per call from Python,
    and the launch path is what bounds this layer at small sizes."""
    return -(-a // b)


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
    @triton.jit(do_not_specialize=['P', 'H', 'W', 'h', 'w'])
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

    @triton.jit(do_not_specialize=['P', 'N', 'H', 'W'])
    def _synthesis_kernel(f_ptr, a_ptr, o_ptr, P, N, C, H, W,
                          san, sac, sah, saw, son, soc, soh, sow,
                          LEVELS: tl.constexpr, HAS_A: tl.constexpr,
                          BP: tl.constexpr, BC: tl.constexpr):
        # full-resolution positions: the inverse transforms of all levels in one pass
        p, n, y, x, ch, p_ok, c_ok = _tile(P, C, H, W, BP, BC)
        ok = p_ok[:, None] & c_ok[None, :]
        acc = tl.zeros([BP, BC], dtype=tl.float32)
        hi = H
        wi = W
        off = tl.full([], 0, tl.int64)
        weight = 0.5
        for i in tl.static_range(LEVELS):
            hi = (hi + 1) // 2
            wi = (wi + 1) // 2
            sy = (1 - 2 * ((y >> i) & 1)).to(tl.float32)[:, None]   # row parity: +1 / -1
            sx = (1 - 2 * ((x >> i) & 1)).to(tl.float32)[:, None]
            pos = (n * hi + (y >> (i + 1))) * wi + (x >> (i + 1))
            fb = f_ptr + off + pos.to(tl.int64)[:, None] * (4 * C) + ch[None, :]
            f0 = tl.load(fb, mask=ok, other=0.0).to(tl.float32)
            f1 = tl.load(fb + C, mask=ok, other=0.0).to(tl.float32)
            f2 = tl.load(fb + 2 * C, mask=ok, other=0.0).to(tl.float32)
            f3 = tl.load(fb + 3 * C, mask=ok, other=0.0).to(tl.float32)
            acc += weight * (f0 + sy * f1 + sx * (f2 + sy * f3))
            off += N.to(tl.int64) * hi * wi * 4 * C
            weight = weight * 0.5
        n64 = n.to(tl.int64)[:, None]
        if HAS_A:
            acc += tl.load(a_ptr + n64 * san + ch[None, :] * sac + (y * sah + x * saw)[:, None],
                           mask=ok, other=0.0).to(tl.float32)
        ob = o_ptr + n64 * son + ch[None, :] * soc + (y * soh + x * sow)[:, None]
        tl.store(ob, acc.to(o_ptr.dtype.element_ty), mask=ok)


def _band(t: torch.Tensor, band: int) -> torch.Tensor:
    """Band ``band`` of an (N, h, w, B, C) tensor as an (N, C, h, w) channels_last view."""
    return t.select(3, band).permute(0, 3, 1, 2)


def haar_analysis_conv(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1,
                       keep_bands: bool = True, flip: bool = False,
                       out: Optional[torch.Tensor] = None):
    """One level: Haar subbands of ``x`` and their depthwise 'same' conv.

    Args:
        x: (N, C, H, W), any strides (fastest channels_last); odd H/W are zero-padded by one
            row/column (as published).
        weight: (4, k, k, C) float32 contiguous: the depthwise kernels of the four bands (k
            odd), scales folded in, channels last so that a tap's weights load in one piece.
        keep_bands: return all four subbands, else only the LL band.
        flip: convolve with the kernels rotated by 180 degrees (the backward's transposed conv).
        out: contiguous (N, h, w, 4, C) tensor to write the conv outputs into, or None.

    Returns:
        ``(filtered, bands)``: (N, h, w, 4, C) conv outputs and (N, h, w, 4 or 1, C) subbands,
        h = ceil(H/2), w = ceil(W/2), both contiguous in x's dtype (:func:`_band` views one band
        as (N, C, h, w)).
    """
    c, k = x.shape[1], weight.shape[1]
    if (weight.shape != (4, k, k, c) or weight.dtype != torch.float32
            or not weight.is_contiguous()):
        raise ValueError(f'haar_analysis_conv: weight must be a contiguous float32 (4, k, k, C='
                         f'{c}) tensor, got {weight.dtype} {tuple(weight.shape)}')
    return _analysis(x, weight, dilation, keep_bands, flip, out)


def _analysis(x, weight, dilation, keep_bands, flip, out):
    """:func:`haar_analysis_conv` without the argument checks (the layer's own calls)."""
    n, c, hh, ww = x.shape
    k = weight.shape[1]
    h, w = (hh + 1) // 2, (ww + 1) // 2
    nb = 4 if keep_bands else 1
    filtered = x.new_empty((n, h, w, 4, c)) if out is None else out
    bands = x.new_empty((n, h, w, nb, c))
    bp, bc = _tiles(c, ANALYSIS_TILE)
    grid = (_cdiv(n * h * w, bp), _cdiv(c, bc))
    _analysis_conv_kernel[grid](x, weight, filtered, bands, n * h * w, c,
                                hh, ww, h, w, *x.stride(), K=k, DIL=dilation,
                                PAD=dilation * (k - 1) // 2, FLIP=flip, NB=nb, BP=bp, BC=bc,
                                num_warps=NUM_WARPS)
    return filtered, bands


def level_sizes(size, levels: int):
    """(h, w) of the filtered bands of each level for an input of ``size`` = (H, W)."""
    h, w = size
    out = []
    for _ in range(levels):
        h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out


def packed_bands(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """Empty (N, h, w, 4, C) tensors for the filtered bands of every level of ``x`` (N, C, H, W),
    views of one buffer in level order, as :func:`haar_synthesis` reads them."""
    n, c = x.shape[:2]
    sizes = level_sizes(x.shape[-2:], levels)
    numels = [n * h * w * 4 * c for h, w in sizes]
    parts = x.new_empty(sum(numels)).split(numels)
    return [part.view(n, h, w, 4, c) for part, (h, w) in zip(parts, sizes)]


def haar_synthesis(bands: Sequence[torch.Tensor], like: torch.Tensor,
                   add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """All levels' inverse Haar transforms in one pass, plus ``add``.

    Args:
        bands: the filtered bands (N, h, w, 4, C) of levels 0..L-1, L >= 1, views of one buffer
            from :func:`packed_bands`.
        like: the level-0 input (N, C, H, W); the output takes its shape, dtype and layout.
        add: (N, C, H, W), any strides, or None.

    Level i's reconstruction is added to the LL band of level i-1 before that level's inverse,
    so output pixel (y, x) is ``add + sum_i 2^-(i+1) (f0 + sy f1 + sx f2 + sy sx f3)`` over
    level i's bands at (y >> (i+1), x >> (i+1)), with sy, sx = +1 or -1 by bit i of y and of
    x. Odd sizes need no special case: the crops only drop pixels that no output reads.
    """
    n, c, hh, ww = like.shape
    shapes = [(n, h, w, 4, c) for h, w in level_sizes((hh, ww), len(bands))]
    if [tuple(b.shape) for b in bands] != shapes or any(
            not b.is_contiguous() or b.dtype != like.dtype for b in bands) or any(
            b.data_ptr() != a.data_ptr() + a.numel() * a.element_size()
            for a, b in zip(bands, bands[1:])):
        raise ValueError(f'haar_synthesis: bands must be the packed_bands views of an input like '
                         f'`like` ({like.dtype}, levels of shapes {shapes}), got '
                         f'{[(b.dtype, tuple(b.shape)) for b in bands]}')
    return _synthesis(bands, like, add)


def _synthesis(bands, like, add):
    """:func:`haar_synthesis` without the argument checks (the layer's own calls)."""
    n, c, hh, ww = like.shape
    out = torch.empty_like(like)
    a = add if add is not None else out
    bp, bc = _tiles(c, SYNTHESIS_TILE)
    grid = (_cdiv(n * hh * ww, bp), _cdiv(c, bc))
    _synthesis_kernel[grid](bands[0], a, out, n * hh * ww, n, c, hh, ww, *a.stride(),
                            *out.stride(), LEVELS=len(bands), HAS_A=add is not None,
                            BP=bp, BC=bc, num_warps=NUM_WARPS)
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
        filtered = packed_bands(x, num)
        kept = []
        ll = x
        for i in range(num):
            _, bands = _analysis(ll, level_w[i], dilation, training, False, filtered[i])
            kept.append(bands)
            ll = _band(bands, 0)
        ctx.dilation, ctx.pad = dilation, pad
        if training:
            ctx.save_for_backward(x, base_w, base_b, base_s, weight, level_w, ws, ss, *kept)
        return _synthesis(filtered, x, out) if num else out

    @staticmethod
    @once_differentiable
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
        dbands = packed_bands(x, num)
        glw = []
        g = grad
        for i in range(num):
            _, gbands = _analysis(g, level_w[i], d, True, True, dbands[i])
            glw.append(_level_weight_grad(gbands, kept[i], pad, d, k))
            g = _band(gbands, 0)
        # bottom-up: the level gradients recombine through the inverse transforms
        if need_x and num:
            gx = _synthesis(dbands, x, gx)
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
            glw = torch.stack(glw).view(num, 4 * c, 1, k, k)
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
