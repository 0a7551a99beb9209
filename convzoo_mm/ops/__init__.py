"""Optional fused kernels (Triton) behind the layers' fast paths; importable without Triton."""
