"""Optional fused kernels (Triton on GPU, C++ on CPU) behind the layers' fast paths; importable
without Triton and without the compiled extension."""
import torch


def tracing() -> bool:
    """Whether a graph of tensor ops is being recorded for use outside this Python process:
    ``torch.jit.trace`` (ONNX export, FLOP analysers) or ``torch.export``. A fast path made of
    anything else (custom kernels, Python custom ops) can't be, or isn't portable."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


def eager() -> bool:
    """Whether a fast path with its own kernels or custom autograd may run: not tracing,
    exporting or compiling, which record the plain tensor ops (the WTConv Triton path is a
    custom op under torch.compile and checks :func:`tracing` only)."""
    return not tracing() and not torch.compiler.is_compiling()


def crop(x: torch.Tensor, size) -> torch.Tensor:
    """``x[..., :size[0], :size[1]]`` (``size`` at most ``x``'s) written as a negative pad: its
    output size is ``size`` by construction. A slice's needs ``size <= x.shape``, which
    ``torch.export`` cannot prove for sizes rounded up by padding (e.g. ``h <= 2*((h+1)//2)``)
    and would turn into a guard on the example's size."""
    return torch.nn.functional.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad height and width at the bottom/right up to multiples of ``multiple``. The
    amounts are written as ``ceil(size / multiple) * multiple - size``, whose bounds
    ``torch.export`` can derive (those of ``size % multiple`` it cannot)."""
    h, w = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, (w + multiple - 1) // multiple * multiple - w,
                                       0, (h + multiple - 1) // multiple * multiple - h))


def owned(t: torch.Tensor) -> torch.Tensor:
    """A custom autograd Function's output as a tensor of its own, same memory. Our Functions
    often return a permuted view of a buffer they wrote (NHWC written, NCHW returned); autograd
    forbids in-place ops on a view made inside a Function, so ``y.relu_()`` or ``y += identity``
    after the layer would fail. ``detach()`` drops the view relation, not the memory."""
    return t.detach()


def first_order_only(layer: str, hint: str = ''):
    """Decorator for a custom autograd Function's ``backward`` whose hand-written gradient is
    not itself differentiable (kernels, in-place buffers): a second derivative through it
    (``create_graph=True``, e.g. a gradient penalty) raises an error naming the layer instead
    of returning silently wrong or missing values. Autograd runs a backward with grad mode on
    exactly when ``create_graph=True``. Put it above ``once_differentiable``."""
    import functools

    def decorate(backward):
        @functools.wraps(backward)
        def checked(ctx, *grads):
            if torch.is_grad_enabled():
                raise RuntimeError(
                    f'{layer}: second derivatives (create_graph=True, e.g. a gradient penalty) '
                    f'are not supported by its fast path{"; " + hint if hint else ""}')
            return backward(ctx, *grads)
        return checked
    return decorate
