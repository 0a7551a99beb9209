"""Peak memory of a call, on CPU and on CUDA.

CUDA: ``torch.cuda.max_memory_allocated`` above the level at the start of the call.

CPU: PyTorch keeps no allocator statistics for CPU tensors, so :class:`TensorMemoryTracker` is a
``TorchDispatchMode`` that sees every aten op run inside it (forward *and* the autograd backward,
which runs in the calling thread on CPU). Each new storage produced by an op is added to the live
total; a ``weakref.finalize`` on the storage object (PyTorch keeps one Python object per storage
alive as long as the storage lives) subtracts it when the storage is freed, e.g. when autograd
drops a saved tensor. The peak is the maximum live total: the bytes of tensors allocated during
the call and alive at the same time, above what existed before. Not counted: library scratch
space that is not a tensor (e.g. oneDNN workspaces) and Python objects.
"""
import weakref
from typing import Any, Callable, Dict, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ['TensorMemoryTracker', 'peak_memory']


class TensorMemoryTracker(TorchDispatchMode):
    """Track the bytes of tensor storages created inside the ``with`` block.

    Attributes:
        current (int): bytes created inside the block and still alive.
        peak (int): maximum of ``current`` seen so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: Dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == 'meta':
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._live:
                continue
            nbytes = storage.nbytes()
            self._live[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


def peak_memory(fn: Callable[[], Any], device: str = 'cpu') -> Tuple[int, Any]:
    """Run ``fn()`` once and return ``(peak_bytes, result)``.

    ``peak_bytes`` counts memory allocated during the call above the level before it (see the
    module docstring for what is counted on each device). The result of ``fn`` is returned so
    that the caller decides how long it lives (it is alive at the end of the measurement).
    """
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, result
    tracker = TensorMemoryTracker()
    with tracker:
        result = fn()
    return tracker.peak, result
