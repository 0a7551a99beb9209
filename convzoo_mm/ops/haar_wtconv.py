"""Fused Triton kernels for the Haar WTConv (GPU fast path of :class:`convzoo_mm.layers.WTConv`).

Why it is fast: the published layer runs, per wavelet level, a stride-2 grouped conv (transform),
a depthwise conv, a scale, a concatenation, a transposed grouped conv (inverse) and a crop, each a
separate kernel with its own full pass over memory, and as many again in the backward. Here a
forward is L + 1 kernels (plus a few tiny ops that fold the scales into the kernels) and no
convolution call:

* ``analysis + conv``, one per level: forms the four Haar subbands of the level's input on the fly
  (odd sizes zero-padded by masking) and applies the depthwise k x k conv with the learnable scale
  already folded into its weights; it also writes the subbands themselves (the LL band feeds the
  next level; all four are kept when a parameter needs a gradient, for the weight gradients).
* ``synthesis``, one for all levels and the base conv: every output pixel is the base depthwise
  conv of the input at that pixel (scale and bias folded in) plus, for each level, the inverse
  transform of that level's filtered bands at its ancestor position (deeper reconstructions enter
  the LL band before each inverse, so they unroll into a sum; odd sizes need no special case).
  One launch instead of L + 1 matters: at small sizes the layer is bound by the CPU that launches
  kernels, and the base conv's output never makes a round trip through memory.

The backward is the same kernels again, because the Haar transform is orthogonal: the gradient
flows top-down through ``analysis + conv`` (the conv with its kernel flipped) and bottom-up
through ``synthesis`` (whose base conv, flipped, is the base conv's input gradient). The weight
gradients of the base conv and of every level are one ``weight grad`` launch: a program sums
``g * x`` over a chunk of positions of one conv for all k*k taps at once, its partial sums go to
one row of a buffer shared by all of them, and one sum over the rows finishes every weight
gradient (fixed order: deterministic). In PyTorch a depthwise conv's backward costs several times
its forward (docs/benchmarks/wtconv_gpu_h100_fp32.md, raw times of the dw conv 7x7) and each cuDNN
call costs host time, so the fused path calls no convolution at all.

Memory layout: everything is channels_last. A program owns a tile of half-resolution positions x
channels with channels fastest, so each load and store of a tile row is one contiguous piece (the
backbones hand over channels_last tensors: ConvNeXt blocks permute from NHWC). Subbands and
filtered bands are (N, h, w, 4, C): one band is a channels_last (N, C, h, w) view, the LL band
feeds the next level without a copy, and the subbands and band gradients of all levels are each
one packed buffer (level after level) that the weight-gradient launch reads as (N, h, w, 4C)
images. The kernel weights are (4, k, k, C) and (k, k, C), so a tap's weights load in one piece
too; the weight gradients are written in the parameters' own layouts.

Math (per channel, the 2x2 block p_rc at rows 2u+r, columns 2v+c of the level input):
``LL = (p00+p01+p10+p11)/2``, ``b1 = (p00+p01-p10-p11)/2``, ``b2 = (p00-p01+p10-p11)/2``,
``b3 = (p00-p01-p10+p11)/2`` (the band order of :func:`convzoo_mm.layers.wtconv.haar_analysis`),
and the inverse is the same matrix. Supported: Haar, odd kernel sizes, any dilation, stride 1
(the layer subsamples for stride > 1), float32/float16/bfloat16 with float32 accumulation.

The kernels run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests
check them without a GPU). Importing this module without Triton is fine: ``AVAILABLE`` is False.
"""
import functools
from typing import List, Optional, Sequence, Tuple

import torch
from torch.autograd.function import once_differentiable

from . import first_order_only

try:  # Triton is optional: CI and CPU-only installs run the PyTorch path.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None

AVAILABLE = triton is not None

__all__ = ['AVAILABLE', 'runs_on', 'haar_wtconv', 'haar_analysis_conv', 'haar_synthesis',
           'packed_bands', 'level_sizes', 'depthwise_weight_grad']


# launch configuration: positions x channels per program (see _tiles) and warps per program;
# the weight-gradient sums: positions x taps x channels per program, at most SPLITS programs
# (rows of partial sums) along the positions of the base conv, each with at least CHUNK of them
ANALYSIS_TILE, SYNTHESIS_TILE, NUM_WARPS = 512, 1024, 8
WEIGHT_GRAD_TILE, WEIGHT_GRAD_SPLITS, WEIGHT_GRAD_CHUNK = 4096, 128, 512


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


def runs_on(x: torch.Tensor) -> bool:
    """Whether the kernels can run on ``x``'s device: CUDA, or the CPU in Triton's interpreter
    (``TRITON_INTERPRET=1`` set before this module was imported: Triton reads it when the
    kernels are defined, and then makes them interpreted functions, not ``JITFunction``)."""
    if not AVAILABLE:
        return False
    return x.is_cuda or (x.device.type == 'cpu'
                         and not isinstance(_tile, triton.runtime.JITFunction))


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

    @triton.jit
    def _tap(dy, dx, K: tl.constexpr, FLIP: tl.constexpr):
        """Index of tap (dy, dx) in a row-major k x k kernel, rotated by 180 degrees if FLIP
        (the transposed conv of a 'same' conv at stride 1 is the conv with that kernel)."""
        if FLIP:
            return K * K - 1 - (dy * K + dx)
        return dy * K + dx

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
                t = _tap(dy, dx, K, FLIP)
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
    def _synthesis_kernel(f_ptr, a_ptr, w_ptr, b_ptr, o_ptr, P, N, C, H, W,
                          san, sac, sah, saw, son, soc, soh, sow,
                          LEVELS: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr,
                          PAD: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
                          BP: tl.constexpr, BC: tl.constexpr):
        # full-resolution positions: the base conv and the inverse transforms of all levels
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
        # the base depthwise 'same' conv of a at (y, x), weights (K, K, C)
        n64 = n.to(tl.int64)[:, None]
        ab = a_ptr + n64 * san + ch[None, :] * sac
        for dy in range(K):
            yy = y + (dy * DIL - PAD)
            row_ok = p_ok & (yy >= 0) & (yy < H)
            for dx in tl.static_range(K):
                xx = x + (dx * DIL - PAD)
                m = row_ok & (xx >= 0) & (xx < W)
                t = _tap(dy, dx, K, FLIP)
                v = tl.load(ab + (yy * sah + xx * saw)[:, None], mask=m[:, None] & c_ok[None, :],
                            other=0.0).to(tl.float32)
                acc += v * tl.load(w_ptr + t * C + ch, mask=c_ok, other=0.0)[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + ch, mask=c_ok, other=0.0)[None, :]
        ob = o_ptr + n64 * son + ch[None, :] * soc + (y * soh + x * sow)[:, None]
        tl.store(ob, acc.to(o_ptr.dtype.element_ty), mask=ok)

    @triton.jit(do_not_specialize=['N', 'H', 'W'])
    def _weight_grad_kernel(g_ptr, x_ptr, gl_ptr, xl_ptr, part_ptr, N, C, H, W, row,
                            K: tl.constexpr, KK: tl.constexpr, DIL: tl.constexpr,
                            PAD: tl.constexpr, BIAS: tl.constexpr,
                            BP: tl.constexpr, BC: tl.constexpr):
        # Weight gradients of depthwise 'same' convs, as partial sums: program (s, cb, part)
        # sums g * x over the s-th chunk of the positions of one conv, for all K*K taps at once
        # (a [positions, taps, channels] tile, taps padded to KK), and writes the sums to row s
        # of part_ptr in the parameter's layout (channel j, tap t at column col + j*K*K + t).
        # part 0 is the base conv: g, x (N, H, W, C) contiguous, channel j = c, col 0, bias
        # gradient (sum of g) in the last C columns. part i+1 is level i: g, x the level's
        # (N, h, w, 4, C) band tensors, packed one level after another at gl / xl (channel
        # band*C + c), the layer's channel j = c*4 + band, col = C*K*K + i*4C*K*K.
        s = tl.program_id(0)
        level = tl.program_id(2) - 1
        cp = C
        hh = H
        ww = W
        col = 0
        gb = g_ptr
        xb = x_ptr
        if level >= 0:
            off = tl.full([], 0, tl.int64)
            for _ in range(level):
                hh = (hh + 1) // 2
                ww = (ww + 1) // 2
                off += N.to(tl.int64) * hh * ww * 4 * C
            hh = (hh + 1) // 2
            ww = (ww + 1) // 2
            cp = 4 * C
            col = C * K * K + level * 4 * C * K * K
            gb = gl_ptr + off
            xb = xl_ptr + off
        ch = tl.program_id(1) * BC + tl.arange(0, BC)
        c_ok = ch < cp
        t = tl.arange(0, KK)
        ty = (t // K) * DIL - PAD
        tx = (t % K) * DIL - PAD
        t_ok = t < K * K
        P = N * hh * ww
        chunk = tl.cdiv(tl.cdiv(P, tl.num_programs(0)), BP) * BP
        chunk = tl.where(tl.program_id(1) * BC < cp, chunk, 0)     # no channels here: no work
        acc = tl.zeros([BP, KK, BC], dtype=tl.float32)
        gsum = tl.zeros([BP, BC], dtype=tl.float32)
        for i in range(0, chunk, BP):
            p = s * chunk + i + tl.arange(0, BP)
            p_ok = p < P
            y = (p % (hh * ww)) // ww
            x = p % ww
            p64 = p.to(tl.int64)
            g = tl.load(gb + p64[:, None] * cp + ch[None, :],
                        mask=p_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            yy = y[:, None] + ty[None, :]
            xx = x[:, None] + tx[None, :]
            m = (p_ok[:, None] & t_ok[None, :] & (yy >= 0) & (yy < hh) & (xx >= 0) & (xx < ww))
            q = p64[:, None] + (ty * ww + tx)[None, :]              # the tap's position
            v = tl.load(xb + q[:, :, None] * cp + ch[None, None, :],
                        mask=m[:, :, None] & c_ok[None, None, :], other=0.0).to(tl.float32)
            acc += g[:, None, :] * v
            if BIAS:
                gsum += g
        j = tl.where(level >= 0, (ch % C) * 4 + ch // C, ch)
        pb = part_ptr + s.to(tl.int64) * row
        tl.store(pb + col + t[:, None] + j[None, :] * (K * K), tl.sum(acc, axis=0),
                 mask=t_ok[:, None] & c_ok[None, :])
        if BIAS:
            if level < 0:
                tl.store(pb + row - C + ch, tl.sum(gsum, axis=0), mask=c_ok)


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
        h = ceil(H/2), w = ceil(W/2), both contiguous in x's dtype (``t.select(3, b).permute(0,
        3, 1, 2)`` views band b of either as an (N, C, h, w) channels_last tensor).
    """
    n, c, hh, ww = x.shape
    k = weight.shape[1]
    _check_weight('haar_analysis_conv', 'weight', weight, (4, k, k, c), f'(4, k, k, C={c})')
    h, w = (hh + 1) // 2, (ww + 1) // 2
    filtered = x.new_empty((n, h, w, 4, c)) if out is None else out
    nb = 4 if keep_bands else 1
    bands = x.new_empty((n, h, w, nb, c))
    _launch_analysis(x, x.stride(), n, c, hh, ww, weight, filtered, bands, nb, dilation, flip)
    return filtered, bands


def _launch_analysis(x, strides, n, c, hh, ww, weight, filtered, bands, nb, dilation, flip):
    """One analysis + conv launch: input ``x`` (N, C, H, W) given by its data and ``strides``
    (the layer passes a band of a packed buffer without making a view of it), outputs written at
    the starts of ``filtered`` and ``bands`` (``nb`` subbands kept)."""
    k = weight.shape[1]
    h, w = (hh + 1) // 2, (ww + 1) // 2
    bp, bc = _tiles(c, ANALYSIS_TILE)
    _analysis_conv_kernel[(_cdiv(n * h * w, bp), _cdiv(c, bc))](
        x, weight, filtered, bands, n * h * w, c, hh, ww, h, w, *strides, K=k, DIL=dilation,
        PAD=dilation * (k - 1) // 2, FLIP=flip, NB=nb, BP=bp, BC=bc, num_warps=NUM_WARPS)


def _down(x, level_w, dilation, flip, nb):
    """All levels top-down from ``x`` (N, C, H, W) channels_last: level i's analysis + conv
    (kernels ``level_w`` (L, 4, k, k, C)) reads the LL band of level i-1. Returns the packed
    filtered bands (4 per level) and subbands (``nb`` per level, 4 or 1), flat buffers in the
    layout of :func:`_packed`. Host cost: per level one launch; the levels' slices of the two
    buffers come from one split each, and the next level's input is its slice plus strides."""
    n, c, hh, ww = x.shape
    layout, total = _layout(n, c, hh, ww, level_w.shape[0])
    filtered, kept = x.new_empty(4 * total), x.new_empty(nb * total)
    src, strides = x, x.stride()
    for weight, (h, w, _), f, b in zip(level_w.unbind(0), layout,
                                       filtered.split_with_sizes([4 * q for *_, q in layout]),
                                       kept.split_with_sizes([nb * q for *_, q in layout])):
        _launch_analysis(src, strides, n, c, hh, ww, weight, f, b, nb, dilation, flip)
        # the LL band of (N, h, w, nb, C) as (N, C, h, w) strides: the next level's input
        src, strides, hh, ww = b, (h * w * nb * c, 1, w * nb * c, nb * c), h, w
    return filtered, kept


def level_sizes(size, levels: int):
    """(h, w) of the filtered bands of each level for an input of ``size`` = (H, W)."""
    h, w = size
    out = []
    for _ in range(levels):
        h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out


def packed_bands(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """Empty (N, h, w, 4, C) tensors for the filtered bands of every level of ``x``
    (N, C, H, W), views of one buffer in level order, as :func:`haar_synthesis` reads them."""
    return _packed(x, levels, 4)[1]


def _level_blocks(n, c, hh, ww, levels):
    """((h, w, count) per level, total): the packed layout of per-level (N, h, w, B, C) blocks,
    level after level; ``count`` = N*h*w*C and ``total`` count B-element units. Plain
    arithmetic, so the custom op's fake impl can call it on symbolic sizes."""
    blocks = tuple((h, w, n * h * w * c) for h, w in level_sizes((hh, ww), levels))
    return blocks, sum(q for *_, q in blocks)


_layout = functools.lru_cache(maxsize=1024)(_level_blocks)   # detection sizes repeat


def _packed(x, levels, bands):
    """(flat, views): (N, h, w, ``bands``, C) views of every level in one flat buffer, level
    after level (the layout that :func:`_down` fills and the synthesis and weight-gradient
    kernels read)."""
    n, c, hh, ww = x.shape
    layout, total = _layout(n, c, hh, ww, levels)
    flat = x.new_empty(bands * total)
    return flat, [part.view(n, h, w, bands, c) for part, (h, w, _) in
                  zip(flat.split_with_sizes([bands * q for *_, q in layout]), layout)]


def haar_synthesis(bands: Sequence[torch.Tensor], base_input: torch.Tensor,
                   base_weight: torch.Tensor, base_bias: Optional[torch.Tensor] = None,
                   dilation: int = 1, flip: bool = False) -> torch.Tensor:
    """All levels' inverse Haar transforms plus the base depthwise conv, in one pass.

    Args:
        bands: the filtered bands (N, h, w, 4, C) of levels 0..L-1, L >= 0, views of one buffer
            from :func:`packed_bands` of ``base_input``.
        base_input: (N, C, H, W), any strides (fastest channels_last); the output takes its
            shape, dtype and layout.
        base_weight: (k, k, C) float32 contiguous, k odd: the base conv's kernel, scale folded
            in, taps first so that a tap's weights load in one piece.
        base_bias: (C,) float32 or None.
        dilation: of the base conv ('same' padding dilation*(k-1)/2).
        flip: convolve with the kernel rotated by 180 degrees (the backward's transposed conv).

    Output pixel (y, x) is ``conv(base_input)[y, x] + bias + sum_i 2^-(i+1) (f0 + sy f1 + sx
    f2 + sy sx f3)`` over level i's bands at (y >> (i+1), x >> (i+1)), with sy, sx = +1 or -1
    by bit i of y and of x: level i's reconstruction is added to the LL band of level i-1
    before that level's inverse, so the inverses unroll into this sum. Odd sizes need no
    special case: the crops only drop pixels that no output reads.
    """
    n, c, hh, ww = base_input.shape
    k = base_weight.shape[0]
    shapes = [(n, h, w, 4, c) for h, w in level_sizes((hh, ww), len(bands))]
    if [tuple(b.shape) for b in bands] != shapes or any(
            not b.is_contiguous() or b.dtype != base_input.dtype for b in bands) or any(
            b.data_ptr() != a.data_ptr() + a.numel() * a.element_size()
            for a, b in zip(bands, bands[1:])):
        raise ValueError(f'haar_synthesis: bands must be the packed_bands views of an input like '
                         f'base_input ({base_input.dtype}, levels of shapes {shapes}), got '
                         f'{[(b.dtype, tuple(b.shape)) for b in bands]}')
    _check_weight('haar_synthesis', 'base_weight', base_weight, (k, k, c), f'(k, k, C={c})')
    if k % 2 == 0:
        raise ValueError(f'haar_synthesis: base_weight must have an odd kernel size, got {k}')
    if base_bias is not None:
        _check_weight('haar_synthesis', 'base_bias', base_bias, (c, ), f'(C={c}, )')
    return _synthesis(bands[0] if bands else None, len(bands), base_input, base_weight, base_bias,
                      dilation, flip)


def _check_weight(fn: str, name: str, t: torch.Tensor, shape, spec: str) -> None:
    """A named error unless ``t`` is a contiguous float32 tensor of ``shape`` (``spec``: the
    shape in words, e.g. '(4, k, k, C=96)')."""
    if tuple(t.shape) != tuple(shape) or t.dtype != torch.float32 or not t.is_contiguous():
        raise ValueError(f'{fn}: {name} must be a contiguous float32 {spec} tensor, '
                         f'got {t.dtype} {tuple(t.shape)}')


def _synthesis(filtered, levels, a, weight, bias, dilation, flip):
    """:func:`haar_synthesis` without the argument checks: ``filtered`` is the packed buffer of
    the ``levels`` levels' filtered bands (its start; None if no level)."""
    n, c, hh, ww = a.shape
    k = weight.shape[0]
    # canonical channels_last strides, also where a's size-1 dims make its own ambiguous (the
    # custom ops' fake outputs promise these to torch.compile)
    out = torch.empty_like(a, memory_format=torch.channels_last)
    bp, bc = _tiles(c, SYNTHESIS_TILE)
    grid = (_cdiv(n * hh * ww, bp), _cdiv(c, bc))
    _synthesis_kernel[grid](a if filtered is None else filtered, a, weight,
                            weight if bias is None else bias, out, n * hh * ww, n, c, hh, ww,
                            *a.stride(), *out.stride(), LEVELS=levels, K=k, DIL=dilation,
                            PAD=dilation * (k - 1) // 2, FLIP=flip, HAS_BIAS=bias is not None,
                            BP=bp, BC=bc, num_warps=NUM_WARPS)
    return out


def _weight_grad(g, x, gl, xl, levels, k, dilation, bias):
    """All weight gradients of the layer in one launch: the base conv's (output gradient ``g``,
    input ``x``, both (N, C, H, W) channels_last contiguous) and the ``levels`` level convs'
    (their (N, h, w, 4, C) output gradients and subbands, level after level in the flat
    buffers ``gl`` / ``xl`` from :func:`_down`, or None). Returns the summed float32 vector:
    the base weight (C, k, k), the level weights (L, 4C, k, k) in the layer's channel order
    (c*4 + band), then the bias gradient (C,) when ``bias``."""
    n, c, hh, ww = x.shape
    kk = k * k
    rows = c * (1 + 4 * levels)
    splits = max(1, min(WEIGHT_GRAD_SPLITS, _cdiv(n * hh * ww, WEIGHT_GRAD_CHUNK)))
    part = x.new_empty((splits, rows * kk + (c if bias else 0)), dtype=torch.float32)
    kp, bp, bc = _weight_grad_tiles(c, k)
    grid = (part.shape[0], _cdiv(4 * c if levels else c, bc), 1 + levels)
    _weight_grad_kernel[grid](g, x, g if gl is None else gl, x if xl is None else xl, part,
                              n, c, hh, ww, part.shape[1], K=k, KK=kp, DIL=dilation,
                              PAD=dilation * (k - 1) // 2, BIAS=bias, BP=bp, BC=bc,
                              num_warps=NUM_WARPS)
    return part.sum(0)


@functools.lru_cache(maxsize=None)
def _weight_grad_tiles(c: int, k: int):
    """(KK, BP, BC) of the weight-gradient tile: the k*k taps padded to a power of two, BP
    positions and BC channels (as :func:`_tiles`, fewer for large k), about WEIGHT_GRAD_TILE
    elements in all."""
    kp = 1 << (k * k - 1).bit_length()
    bc = min(_tiles(c, WEIGHT_GRAD_TILE)[1], max(1, WEIGHT_GRAD_TILE // kp))
    return kp, max(1, WEIGHT_GRAD_TILE // (kp * bc)), bc


def depthwise_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: int,
                          dilation: int = 1, bias: bool = False):
    """Weight gradient of a depthwise 'same' conv (stride 1, padding dilation*(k-1)/2), the sums
    over positions split across programs and then added in a fixed order (deterministic).

    Args:
        grad_out, x: (N, C, H, W), any strides (fastest channels_last).
        kernel_size: odd k.  bias: also return the bias gradient.

    Returns:
        (C, 1, k, k) float32, and the (C,) float32 bias gradient if ``bias``.
    """
    if grad_out.shape != x.shape or grad_out.dim() != 4:
        raise ValueError(f'depthwise_weight_grad: grad_out {tuple(grad_out.shape)} and x '
                         f'{tuple(x.shape)} must be the same (N, C, H, W) shape')
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f'depthwise_weight_grad: kernel_size must be odd, got {kernel_size}')
    if dilation < 1:
        raise ValueError(f'depthwise_weight_grad: dilation must be >= 1, got {dilation}')
    if grad_out.dtype != x.dtype or grad_out.device != x.device:
        raise ValueError(f'depthwise_weight_grad: grad_out ({grad_out.dtype}, {grad_out.device}) '
                         f'and x ({x.dtype}, {x.device}) must share dtype and device')
    c, k = x.shape[1], kernel_size
    total = _weight_grad(grad_out.contiguous(memory_format=torch.channels_last),
                         x.contiguous(memory_format=torch.channels_last), None, None, 0, k,
                         dilation, bias)
    weight = total[:k * k * c].view(c, 1, k, k)
    return (weight, total[k * k * c:]) if bias else weight


def _fold(base_w, base_b, base_s, level_ws, level_ss):
    """The layer's parameters with the scales folded into the kernels (a scale after a depthwise
    conv is a scale of its kernel), in the kernels' float32 layouts: the base kernel (k, k, C)
    and the level kernels (L, 4, k, k, C), views of one flat buffer (:func:`_folded_views`),
    also returned; the base bias (C,) or None; and, for the backward, the raw kernels as rows
    (C + 4CL, k*k) with the rows' scales (C + 4CL,), base first."""
    c, k = base_w.shape[0], base_w.shape[-1]
    kk, num = k * k, len(level_ws)
    # the (C, 1, k, k) and (4C, 1, k, k) kernels stack along dim 0 and the (1, C, 1, 1) and
    # (1, 4C, 1, 1) scales along dim 1: one cat each (the host's cost is the layer's at small
    # sizes on a GPU)
    rows = torch.cat((base_w, *level_ws)).view(-1, kk)
    row_scales = torch.cat((base_s, *level_ss), 1).view(-1)
    folded = torch.empty((1 + 4 * num) * kk * c, device=base_w.device, dtype=torch.float32)
    weight, level_w = _folded_views(folded, c, k, num)
    torch.mul(rows[:c].t(), row_scales[:c], out=weight.view(kk, c))
    torch.mul(rows[c:].view(num, c, 4, kk).permute(0, 2, 3, 1),
              row_scales[c:].view(num, c, 4, 1).permute(0, 2, 3, 1),
              out=level_w.view(num, 4, kk, c))
    bias = None if base_b is None else (base_b * row_scales[:c]).float()
    return weight, level_w, folded, bias, rows, row_scales


def _folded_views(folded, c, k, num):
    """The base kernel (k, k, C) and the level kernels (L, 4, k, k, C) in the flat float32
    buffer of :func:`_fold`."""
    weight, level_w = folded.split((k * k * c, 4 * num * k * k * c))
    return weight.view(k, k, c), level_w.view(num, 4, k, k, c)


def _unfold(total, rows, row_scales, base_b, k, dtypes):
    """Gradients of the raw parameters (base weight, bias or None, scale, then the L level
    weights and the L level scales, in the shapes of :func:`haar_wtconv` and the ``dtypes``)
    from ``total``, the gradients of the folded kernels of :func:`_weight_grad` (like ``rows``,
    then the bias): d(w*s)/dw = s and d(w*s)/ds = sum over the kernel of w."""
    num_rows, kk = rows.shape
    num = (len(dtypes) - 3) // 2
    c = num_rows // (1 + 4 * num)
    g_rows = total[:num_rows * kk].view(num_rows, kk)
    g_w = g_rows * row_scales.unsqueeze(1)
    g_s = (g_rows * rows).sum(1)
    g_b = None
    if base_b is not None:
        g_bias = total[num_rows * kk:]
        g_s[:c].addcmul_(g_bias, base_b)
        g_b = g_bias * row_scales[:c]
    w0, wl = g_w.split((c, num_rows - c))
    s0, sl = g_s.split((c, num_rows - c))
    grads = [w0.view(c, 1, k, k), g_b, s0.view(1, c, 1, 1),
             *wl.view(num, 4 * c, 1, k, k).unbind(0), *sl.view(num, 1, 4 * c, 1, 1).unbind(0)]
    return [g if g is None or g.dtype == t else g.to(t) for g, t in zip(grads, dtypes)]


def _dtypes(params):
    """The parameters' dtypes (None for a missing bias): :func:`_unfold` returns each
    gradient in its parameter's dtype."""
    return [None if t is None else t.dtype for t in params]


def _forward(x, weight, level_w, bias, dilation, nb):
    """The layer's forward on the folded kernels (:func:`_fold`): (output, ``x`` as
    channels_last, the packed subbands with ``nb`` bands per level)."""
    num = level_w.shape[0]
    x = x.contiguous(memory_format=torch.channels_last)
    filtered, kept = _down(x, level_w, dilation, False, nb)
    return _synthesis(filtered if num else None, num, x, weight, bias, dilation, False), x, kept


def _backward(grad, x, weight, level_w, kept, dilation, need_x, need_w, bias):
    """(input gradient or None, the summed weight gradients of :func:`_weight_grad` or None)."""
    k, num = weight.shape[0], level_w.shape[0]
    # saved-tensor hooks (e.g. torch.autograd.graph.save_on_cpu) may give back copies in
    # another layout: the kernels read x as channels_last and the subbands as one buffer
    x = x.contiguous(memory_format=torch.channels_last)
    grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
    # top-down: gradients of the filtered bands are the subbands of the level gradient
    dbands, gbands = _down(grad, level_w, dilation, True, 4 if need_w else 1)
    total = None
    if need_w:
        total = _weight_grad(grad, x, gbands if num else None, kept.contiguous() if num else None,
                             num, k, dilation, bias)
    # bottom-up: the level gradients recombine through the inverse transforms, plus the base
    # conv's transposed conv (its kernel flipped)
    gx = _synthesis(dbands if num else None, num, grad, weight, None, dilation, True) if need_x \
        else None
    return gx, total


class _HaarWTConv(torch.autograd.Function):
    """Depthwise Haar WTConv at stride 1: ``base_conv(x) + sum of levels``, see module doc. Takes
    the layer's parameters as they are and folds the scales itself, so autograd sees one node
    instead of a multiply per parameter (on a GPU the layer is launch-bound at small sizes)."""

    @staticmethod
    def forward(ctx, x, dilation: int, training: bool, base_w, base_b, base_s, *levels):
        # x: (N, C, H, W); base_w: (C, 1, k, k); base_b: (C,) or None; base_s: (1, C, 1, 1);
        # levels: L weights (4C, 1, k, k) then L scales (1, 4C, 1, 1)
        num = len(levels) // 2
        weight, level_w, _, bias, rows, row_scales = _fold(base_w, base_b, base_s, levels[:num],
                                                           levels[num:])
        # the subbands: all four of every level for the weight gradients (in one packed buffer,
        # as the weight-gradient kernel reads them), else only the LL band (the next level's
        # input); the same for the band gradients in the backward
        need_w = training and any(ctx.needs_input_grad[3:])
        out, x, kept = _forward(x, weight, level_w, bias, dilation, 4 if need_w else 1)
        ctx.dilation, ctx.need_w = dilation, need_w
        if training:
            ctx.dtypes = _dtypes((base_w, base_b, base_s, *levels))
            ctx.save_for_backward(x, weight, level_w, rows, row_scales, kept if need_w else None,
                                  base_b)
        return out

    @staticmethod
    @first_order_only('WTConv (Triton kernels)', "build the layer with impl='torch'")
    @once_differentiable
    def backward(ctx, grad):
        x, weight, level_w, rows, row_scales, kept, base_b = ctx.saved_tensors
        gx, total = _backward(grad, x, weight, level_w, kept, ctx.dilation,
                              ctx.needs_input_grad[0], ctx.need_w, base_b is not None)
        grads = ([None] * len(ctx.dtypes) if total is None else
                 _unfold(total, rows, row_scales, base_b, weight.shape[0], ctx.dtypes))
        return (gx, None, None, *grads)


# Under torch.compile the same computation runs as two opaque custom ops: dynamo would otherwise
# trace into the autograd.Function and the Triton launcher. In the compiled graph each op is one
# call (a mode='reduce-overhead' CUDA graph replays its launches without the host work), and the
# weight gradients' unfold around them is plain tensor code the compiler may fuse.
@torch.library.custom_op('convzoo_mm::haar_wtconv_forward', mutates_args=())
def _forward_op(x: torch.Tensor, base_w: torch.Tensor, base_b: Optional[torch.Tensor],
                base_s: torch.Tensor, level_ws: List[torch.Tensor], level_ss: List[torch.Tensor],
                dilation: int, keep_all: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                        torch.Tensor, torch.Tensor]:
    """(output, packed subbands (all four bands if ``keep_all``, else the LL ones), the folded
    kernels, the raw kernels as rows and their scales): the forward of :class:`_HaarWTConv`."""
    weight, level_w, folded, bias, rows, row_scales = _fold(base_w, base_b, base_s, level_ws,
                                                            level_ss)
    out, _, kept = _forward(x, weight, level_w, bias, dilation, 4 if keep_all else 1)
    return out, kept, folded, rows, row_scales


@_forward_op.register_fake
def _(x, base_w, base_b, base_s, level_ws, level_ss, dilation, keep_all):
    n, c, hh, ww = x.shape
    num, kk = len(level_ws), base_w.shape[-1] * base_w.shape[-1]
    total = _level_blocks(n, c, hh, ww, num)[1]
    rows = c * (1 + 4 * num)
    return (torch.empty_like(x, memory_format=torch.channels_last),
            x.new_empty(((4 if keep_all else 1) * total, )),
            x.new_empty((rows * kk, ), dtype=torch.float32),
            base_w.new_empty((rows, kk)), base_s.new_empty((rows, )))


@torch.library.custom_op('convzoo_mm::haar_wtconv_backward', mutates_args=())
def _backward_op(grad: torch.Tensor, x: torch.Tensor, folded: torch.Tensor,
                 kept: Optional[torch.Tensor], k: int, num: int, dilation: int, need_x: bool,
                 need_w: bool, bias: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input gradient, summed weight gradients), each an empty tensor where not needed: the
    backward of :class:`_HaarWTConv` before the unfold (``kept``: all four subbands, needed
    for the weight gradients only)."""
    weight, level_w = _folded_views(folded, x.shape[1], k, num)
    gx, total = _backward(grad, x, weight, level_w, kept, dilation, need_x, need_w, bias)
    return (x.new_empty(0) if gx is None else gx,
            x.new_empty(0, dtype=torch.float32) if total is None else total)


@_backward_op.register_fake
def _(grad, x, folded, kept, k, num, dilation, need_x, need_w, bias):
    c = x.shape[1]
    return (torch.empty_like(grad, dtype=x.dtype, memory_format=torch.channels_last) if need_x
            else x.new_empty(0),
            x.new_empty((c * (1 + 4 * num) * k * k + (c if bias else 0) if need_w else 0, ),
                        dtype=torch.float32))


def _op_setup_context(ctx, inputs, output):
    x, base_w, base_b, base_s, level_ws, level_ss, dilation, keep_all = inputs
    _, kept, folded, rows, row_scales = output
    ctx.save_for_backward(x, kept if keep_all else None, folded, rows, row_scales, base_b)
    ctx.k, ctx.num, ctx.dilation, ctx.keep_all = base_w.shape[-1], len(level_ws), dilation, \
        keep_all
    ctx.dtypes = _dtypes((base_w, base_b, base_s, *level_ws, *level_ss))


def _op_backward(ctx, grad, *_):
    x, kept, folded, rows, row_scales, base_b = ctx.saved_tensors
    need_x, num = ctx.needs_input_grad[0], ctx.num
    gx, total = _backward_op(grad, x, folded, kept, ctx.k, num, ctx.dilation, need_x,
                             ctx.keep_all, base_b is not None)
    grads = (_unfold(total, rows, row_scales, base_b, ctx.k, ctx.dtypes) if ctx.keep_all
             else [None] * len(ctx.dtypes))
    return (gx if need_x else None, *grads[:3], grads[3:3 + num], grads[3 + num:], None, None)


_forward_op.register_autograd(_op_backward, setup_context=_op_setup_context)


def haar_wtconv(x: torch.Tensor, base_weight: torch.Tensor, base_bias: Optional[torch.Tensor],
                base_scale: torch.Tensor, level_weights: Sequence[torch.Tensor],
                level_scales: Sequence[torch.Tensor], dilation: int = 1,
                check: bool = True) -> torch.Tensor:
    """Depthwise Haar WTConv at stride 1 from the parameters of
    :class:`convzoo_mm.layers.WTConv`, scales not folded.

    Args:
        x: (N, C, H, W), CUDA (or CPU under ``TRITON_INTERPRET=1``), any H, W >= 1.
        base_weight: (C, 1, k, k), k odd.  base_bias: (C,) or None.  base_scale: (1, C, 1, 1).
        level_weights: L >= 0 tensors (4C, 1, k, k), channel c*4 + band (LL, b1, b2, b3).
        level_scales: L tensors (1, 4C, 1, 1).
        dilation: dilation of every depthwise conv (base and levels), 'same' padding.
        check: check these shapes (the layer, whose parameters have them, skips it).

    Returns:
        (N, C, H, W) in x's dtype, channels_last.
    """
    params = (base_weight, base_bias, base_scale, *level_weights, *level_scales)
    if check:
        _check_wtconv_args(x, params, len(level_weights), len(level_scales))
    grad_enabled = torch.is_grad_enabled()
    params_grad = grad_enabled and any(t is not None and t.requires_grad for t in params)
    training = params_grad or (grad_enabled and x.requires_grad)
    if torch.compiler.is_compiling():   # torch.compile (and export of a direct call): the op
        return _forward_op(x, base_weight, base_bias, base_scale, list(level_weights),
                           list(level_scales), int(dilation), params_grad)[0]
    return _HaarWTConv.apply(x, int(dilation), training, *params)


def _check_wtconv_args(x, params, num_weights, num_scales):
    """A ValueError naming the argument of :func:`haar_wtconv` whose shape is wrong."""
    if not runs_on(x):
        raise ValueError(f'haar_wtconv: x is on {x.device}; the Triton kernels run on CUDA '
                         f'tensors, or on the CPU with TRITON_INTERPRET=1 set before import')
    if num_weights != num_scales:
        raise ValueError(f'haar_wtconv: {num_weights} level_weights but {num_scales} '
                         f'level_scales')
    if x.dim() != 4 or params[0].dim() != 4:
        raise ValueError(f'haar_wtconv: x and base_weight must be 4-D, (N, C, H, W) and (C, 1, '
                         f'k, k), got {tuple(x.shape)} and {tuple(params[0].shape)}')
    c, k = x.shape[1], params[0].shape[-1]
    names = ['base_weight', 'base_bias', 'base_scale'] + [
        f'level_{kind}[{i}]' for kind in ('weights', 'scales') for i in range(num_weights)]
    shapes = [(c, 1, k, k), (c, ), (1, c, 1, 1)] + [(4 * c, 1, k, k)] * num_weights + [
        (1, 4 * c, 1, 1)] * num_weights
    for name, t, shape in zip(names, params, shapes):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f'haar_wtconv: {name} must have shape {shape} for x with C={c} '
                             f'and kernel size {k}, got {tuple(t.shape)}')
    if k % 2 == 0:
        raise ValueError(f'haar_wtconv: the kernel size must be odd, got {k}')
