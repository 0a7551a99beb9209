"""Peak memory of a call, on CPU and on CUDA: the most bytes allocated during the call and alive
at the same time, above the level before it.

CUDA: ``torch.cuda.max_memory_allocated`` above the level at the start of the call.

CPU: PyTorch keeps no allocator statistics for CPU tensors, but its profiler can record the CPU
allocator's allocations and frees (``profile_memory=True``): the peak is the maximum of their
running sum, counting only frees of blocks allocated during the call (a block freed during the
call but made before it is not part of the call's memory). That counts what the allocator
really hands out to the calling thread, whoever asks there (aten ops, the autograd engine, which
runs the backward in that thread on CPU, C++ extensions such as ``convzoo_mm._C``, inductor's
kernels), and not the tensors that existed before the call, their views or in-place results.
Not counted: allocations made in other threads or processes (e.g. DataLoader workers), and
scratch space that bypasses PyTorch's allocator (oneDNN workspaces). It cannot run inside
another active profiler (the inner session would end the outer one's recording).
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
    / 'profiler_stop' line per measurement, which no setting turns off. A no-op without a
    usable stderr."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _allocations(nodes):
    """The allocator events (``(time_ns, ptr, bytes)``; negative bytes: a free) in a profiler
    event tree."""
    allocation = torch._C._profiler._EventType.Allocation
    stack = list(nodes)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == allocation and node.extra_fields.device.type == 'cpu':
            yield node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size


def _cpu_peak(fn: Callable[[], Any]) -> Tuple[int, Any]:
    from torch.profiler import ProfilerActivity, profile
    if torch._C._autograd._profiler_enabled():
        raise RuntimeError('peak_memory cannot measure CPU memory inside another active '
                           'torch profiler (its session would end the outer recording)')
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():  # only the profiler's start and stop, not fn's own messages
        prof.__enter__()
    try:
        result = fn()
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)
    events = sorted(_allocations(prof.profiler.kineto_results.experimental_event_tree()))
    live = peak = 0
    mine = set()  # blocks allocated during the call
    for _, ptr, nbytes in events:
        if nbytes > 0:
            mine.add(ptr)
        elif ptr in mine:
            mine.discard(ptr)
        else:
            continue  # a block from before the call
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
