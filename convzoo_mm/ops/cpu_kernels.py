"""C++ CPU kernels behind the layers' CPU fast paths (``convzoo_mm/ops/csrc/cpu_kernels.cpp``).

Why they are fast (float32/float64 on CPU):

* **Depthwise weight gradient.** PyTorch computes a CPU depthwise conv's weight gradient through
  oneDNN, 5-40x slower than the forward at WTConv's shapes; it dominated a training step, in our
  layer and in the published one. :func:`depthwise_conv2d` keeps oneDNN for the forward and the
  input gradient and runs the weight gradient in one pass over the rows, with the taps' sums held
  in vector registers (an AVX2+FMA build where the CPU has it).
* **Haar level and inverse.** As tensor ops the 2x2 butterflies take ~10 full-size passes
  (slices, adds, stacks); :func:`haar_analysis_cl` / :func:`haar_synthesis_cl` write each output
  once, zero-pad odd sizes implicitly, crop while writing, read the previous level's LL band in
  place and add the base conv's output on the way out.
* **OctaveConv's resampling.** :func:`octave_pool_into` / :func:`octave_spread` pool 2x2 (ceil
  mode), upsample x2 (cropped) and apply their adjoints in one pass each, written or added into
  channel slices of the drop-in layer's merged maps; as tensor ops each was 2-4 strided passes.
* **DRConv's region tap mix.** :func:`region_tap_mix` writes, for one region's positions in
  a batch, the paper generator's tap-mixed input ``U`` (each sample's coefficients) straight
  from the padded samples, instead of an im2col copy, a row gather and a batched matmul of tiny
  matrices (~30% of the forward at m=8). Its adjoints :func:`region_tap_mix_grad_input_` and
  :func:`region_tap_mix_grad_coef` give the backward's ``dL/dx`` (added straight into the padded
  gradient) and ``dL/dcoef`` from ``dL/dU``, with no im2col of the input or of its gradient.
* **DRConv's region matmuls.** :func:`matmul` runs float32 CPU products through oneDNN's
  matmul (PyTorch's own ``mkldnn._linear_pointwise`` op, the one inductor uses for linear
  layers) instead of ``torch.mm``'s MKL sgemm: 48-53 against 31-47 GMAC/s at DRConv's shapes
  (rows x 2304 @ 2304 x 256, AMD EPYC, one or two threads), the same sums up to rounding.

The extension ``convzoo_mm._C`` is built by ``pip install --no-build-isolation -e .``
(``tools/setup_env.sh`` does it). Without it, and off these kernels' domain (CUDA, half precision,
autocast, tracing/export/compile, stride > 1, asymmetric padding), the callers run plain PyTorch
with the same results.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import eager

try:
    from .. import _C
except ImportError:  # not built (installed without a compiler): the PyTorch path runs
    _C = None

AVAILABLE = _C is not None

__all__ = ['AVAILABLE', 'applies', 'applies_untracked', 'depthwise_conv2d', 'depthwise_weight_grad',
           'haar_analysis_cl', 'haar_synthesis_cl', 'octave_pool_into', 'octave_spread',
           'rows_contiguous', 'region_tap_mix', 'region_tap_mix_grad_input_',
           'region_tap_mix_grad_coef', 'matmul']

try:  # oneDNN's matmul, in x86 builds of PyTorch with mkldnn
    _ONEDNN_LINEAR = (torch.ops.mkldnn._linear_pointwise
                      if torch.backends.mkldnn.is_available() else None)
except (AttributeError, RuntimeError):
    _ONEDNN_LINEAR = None


def applies(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether the C++ kernels can run on these tensors now (CPU float32/64, eager, no autocast)."""
    return (AVAILABLE and all(t is None or (t.device.type == 'cpu' and t.dtype in (
        torch.float32, torch.float64)) for t in tensors)
        and not torch.is_autocast_enabled('cpu') and eager())


def applies_untracked(*tensors: Optional[torch.Tensor]) -> bool:
    """:func:`applies`, and autograd is not recording an op on these tensors: the kernels'
    outputs carry no gradient history, so they serve inside an autograd Function's forward
    and a backward without ``create_graph``, while a backward with it (second derivatives)
    takes the differentiable tensor ops."""
    return applies(*tensors) and not (torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors))


def depthwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel_size: int, dilation: int,
                          padding: int) -> torch.Tensor:
    """Weight gradient (C, 1, k, k) of ``F.conv2d(x, w, stride=1, padding, dilation, groups=C)``
    for the output gradient ``grad``; both (N, C, H, W) of the same size, CPU, float32/64."""
    return _C.depthwise_weight_grad(grad, x, kernel_size, dilation, padding)


def haar_analysis_cl(x: torch.Tensor) -> torch.Tensor:
    """Haar subbands of x (N, C, H, W), odd sizes zero-padded: (N, ceil(H/2), ceil(W/2), C, 4)
    contiguous, band order LL, b1, b2, b3 (see :func:`convzoo_mm.layers.wtconv.haar_analysis`)."""
    return _C.haar_analysis(x)


def haar_synthesis_cl(bands: torch.Tensor, extra: Optional[torch.Tensor], size: Sequence[int],
                      add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse of :func:`haar_analysis_cl`: bands (N, h, w, C, 4) with ``extra`` (N, C, h, w)
    added to LL first, cropped to ``size`` = (H, W), plus ``add`` (N, C, H, W): (N, H, W, C)
    contiguous."""
    return _C.haar_synthesis(bands, extra, add, int(size[0]), int(size[1]))


def rows_contiguous(*tensors: torch.Tensor) -> bool:
    """Whether the resampling kernels take these (N, C, H, W) maps: :func:`applies` and rows
    contiguous in memory (NCHW maps and their channel slices, not channels_last)."""
    return applies(*tensors) and all(t.dim() == 4 and (t.stride(3) == 1 or t.shape[3] == 1)
                                      for t in tensors)


def octave_pool_into(x: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` (N, C, ceil(H/2), ceil(W/2)) = 2x2 means of ``x`` (N, C, H, W) in ceil mode (a
    partial border window averages the pixels it covers); see :func:`rows_contiguous`."""
    _C.octave_pool(x, out)


def octave_spread(low: torch.Tensor, out: torch.Tensor, alpha: float = 1.0,
                  accumulate: bool = False, mean_adjoint: bool = False) -> None:
    """``out`` (N, C, H, W) = (``accumulate``: +=) ``alpha * low[..., y // 2, x // 2]``:
    nearest x2 upsampling of ``low`` (N, C, ceil(H/2), ceil(W/2)) cropped to ``out``; with
    ``mean_adjoint`` each window's value is divided by its pixel count (the adjoint of
    :func:`octave_pool_into`)."""
    _C.octave_spread(low, out, float(alpha), bool(accumulate), bool(mean_adjoint))


def region_tap_mix(xp: torch.Tensor, pos: torch.Tensor, coef: torch.Tensor, kernel_size: int,
                   stride: int, dilation: int, out_size: Sequence[int], groups: int,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``u[g, j, b, c] = sum_t coef[n, b, t] * xp[n, y_j*s + ty*d, x_j*s + tx*d, g*Cg + c]`` for
    the output positions ``pos`` (J,) int64 (``n * Ho * Wo + y_j * Wo + x_j``) of the padded
    channels-last samples ``xp`` (N, Hp, Wp, C), ``coef`` (N, B, k*k), taps ``t = ty * k + tx``:
    (G, J, B, C/G), written into ``out`` when given (a reused buffer of that shape). One sample
    may be passed as ``xp`` (Hp, Wp, C) with ``coef`` (B, k*k).
    :func:`convzoo_mm.layers.drconv.im2col_t` rows mixed by ``coef`` over the taps."""
    return _C.region_tap_mix(xp, pos, coef, kernel_size, stride, dilation, int(out_size[0]),
                             int(out_size[1]), groups, out)


def region_tap_mix_grad_input_(grad_xp: torch.Tensor, pos: torch.Tensor, coef: torch.Tensor,
                               du: torch.Tensor, kernel_size: int, stride: int, dilation: int,
                               out_size: Sequence[int], groups: int) -> None:
    """Adds the adjoint of :func:`region_tap_mix` applied to ``du`` (G, J, B, C/G) into the
    padded channels-last input gradient ``grad_xp`` (N, Hp, Wp, C) (contiguous; or one sample
    (Hp, Wp, C)): ``grad_xp[n, y_j*s + ty*d, x_j*s + tx*d, g*Cg + c] += sum_b coef[n, b, t] *
    du[g, j, b, c]`` (overlapping windows sum). No im2col of the gradient, no col2im."""
    _C.region_tap_mix_grad_input(grad_xp, pos, coef, du, kernel_size, stride, dilation,
                                 int(out_size[0]), int(out_size[1]), groups)


def region_tap_mix_grad_coef(xp: torch.Tensor, pos: torch.Tensor, du: torch.Tensor,
                             kernel_size: int, stride: int, dilation: int,
                             out_size: Sequence[int], groups: int) -> torch.Tensor:
    """The gradient of :func:`region_tap_mix`'s coefficients for ``du`` (G, J, B, C/G), per
    position (J, B, k*k): ``sum_{g, c} du[g, j, b, c] * xp[n, y_j*s + ty*d, x_j*s + tx*d,
    g*Cg + c]`` (summing the rows of one sample gives ``dL/dcoef[n]``). No im2col."""
    return _C.region_tap_mix_grad_coef(xp, pos, du, kernel_size, stride, dilation,
                                       int(out_size[0]), int(out_size[1]), groups)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a`` (M, K) and ``b`` (K, N), or batched (G, M, K) @ (G, K, N), any
    strides: through oneDNN for float32 CPU tensors outside autograd (G = 1 when batched), else
    ``torch.matmul``. For the layers' custom autograd Functions, whose forward and backward run
    without autograd."""
    if (_ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled
            or a.dtype != torch.float32 or b.dtype != torch.float32
            or a.device.type != 'cpu' or b.device.type != 'cpu' or not eager()
            or torch.is_autocast_enabled('cpu')
            or (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
            or a.dim() not in (2, 3) or b.dim() != a.dim() or a.shape[-1] == 0
            or (a.dim() == 3 and (a.shape[0] != 1 or b.shape[0] != 1))):
        return torch.matmul(a, b)
    if a.dim() == 3:
        return _ONEDNN_LINEAR(a[0], b[0].t(), None, 'none', [], '').unsqueeze(0)
    return _ONEDNN_LINEAR(a, b.t(), None, 'none', [], '')


class _DepthwiseConv2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return F.conv2d(x, weight, bias, 1, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        p, d = ctx.padding, ctx.dilation
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph (second derivatives): autograd's own conv
            with torch.enable_grad():
                x_ = x.detach().requires_grad_(need_x) if not x.requires_grad else x
                y = F.conv2d(x_, weight, None, 1, p, d, x.shape[1])
                wanted = [t for t, need in ((x_, need_x), (weight, need_w)) if need]
                grads = iter(torch.autograd.grad(y, wanted, grad, create_graph=True))
            gx = next(grads) if need_x else None
            gw = next(grads) if need_w else None
            gb = grad.sum((0, 2, 3)) if need_b and ctx.has_bias else None
            return gx, gw, gb, None, None
        gx = gw = gb = None
        if need_x:
            gx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [p, p], [d, d], False, [0, 0], x.shape[1],
                [True, False, False])[0]
        if need_w:
            gw = depthwise_weight_grad(grad, x, weight.shape[-1], d, p)
        if need_b and ctx.has_bias:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     padding: int, dilation: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 1, padding, dilation, groups=C)`` for x (N, C, H, W) and
    weight (C, 1, k, k); odd-kernel 'same' convs on CPU train with the C++ weight gradient."""
    k = weight.shape[-1]
    if (weight.requires_grad and torch.is_grad_enabled() and weight.dtype == x.dtype
            and weight.shape[-2] == k and 2 * padding == dilation * (k - 1) and applies(x)):
        return _DepthwiseConv2d.apply(x, weight, bias, padding, dilation)
    return F.conv2d(x, weight, bias, 1, padding, dilation, x.shape[1])
