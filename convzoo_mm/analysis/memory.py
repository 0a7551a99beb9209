"""Peak memory of a call, on CPU and on CUDA: the most bytes allocated during the call and alive
at the same time, above the level before it.

CUDA: ``torch.cuda.max_memory_allocated`` above the level at the start of the call.

CPU: PyTorch keeps no allocator statistics for CPU tensors, but its profiler can record every
allocation and free of the CPU allocator (``profile_memory=True``): the peak is the maximum of
their running sum. That counts what the allocator really hands out, whoever asks (aten ops, the
autograd engine, C++ extensions such as ``convzoo_mm._C``, inductor's kernels), and not the
tensors that existed before the call, their views or in-place results. Not counted: library
scratch space that bypasses PyTorch's allocator (e.g. oneDNN workspaces) and Python objects.
"""
import contextlib
import os
import sys
from typing import Any, Callable, Tuple

import torch

__all__ = ['peak_memory']


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null: the profiler's C++ side logs a 'USDT ... profiler_start'
    / 'profiler_stop' line per measurement, which no setting turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak(fn: Callable[[], Any]) -> Tuple[int, Any]:
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():  # only the profiler's start and stop, not fn's own messages
        prof.__enter__()
    try:
        result = fn()
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)
    cpu = torch._C._autograd.DeviceType.CPU
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]' and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, result


def peak_memory(fn: Callable[[], Any], device: str = 'cpu') -> Tuple[int, Any]:
    """Run ``fn()`` once and return ``(peak_bytes, result)``.

    ``peak_bytes`` counts memory allocated during the call above the level before it (see the
    module docstring for how on each device). The result of ``fn`` is returned so that the
    caller decides how long it lives (it is alive at the end of the measurement).
    """
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, result
    return _cpu_peak(fn)
