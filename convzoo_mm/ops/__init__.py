"""Optional fused kernels (Triton on GPU, C++ on CPU) behind the layers' fast paths; importable
without Triton and without the compiled extension."""
import torch


def tracing() -> bool:
    """Whether ``torch.jit.trace`` records the tensor ops (ONNX export, FLOP analysers): a fast
    path made of anything else can't be recorded."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def eager() -> bool:
    """Whether a fast path with its own kernels or custom autograd may run: not tracing,
    exporting or compiling, which record the plain tensor ops (the WTConv Triton path is a
    custom op under torch.compile and checks :func:`tracing` only)."""
    return not tracing() and not torch.compiler.is_compiling()
