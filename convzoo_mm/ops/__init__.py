"""Optional fused kernels (Triton on GPU, C++ on CPU) behind the layers' fast paths; importable
without Triton and without the compiled extension."""
import torch


def eager() -> bool:
    """Whether a fast path with its own kernels or custom autograd may run: not tracing (ONNX
    export, FLOP analysers), exporting or compiling, which record the plain tensor ops."""
    return (not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not torch.compiler.is_compiling())
