"""Compatibility shims for mmengine 0.10.x, applied when convzoo_mm is imported.

1. Checkpoints: keep them loadable under torch >= 2.6 without giving up safety.

torch 2.6 made ``torch.load(weights_only=True)`` the default; mmengine 0.10.7 calls ``torch.load``
without the argument, and its checkpoints hold a few plain-data objects (the message hub's
``HistoryBuffer`` of numpy arrays, numpy scalars and dtypes) that the weights-only unpickler
rejects, so ``--resume`` fails. Importing convzoo_mm (configs do it through ``custom_imports``):

* allow-lists exactly those data types with ``torch.serialization.add_safe_globals``, so loading
  stays weights-only (no code from a checkpoint file runs) and nothing needs setting;
* stops ``HistoryBuffer`` from pickling its class-level table of statistics *functions*
  (``min``/``max``/``mean``/``current``, stored as ``getattr`` references that a weights-only load
  must refuse); mmengine's own ``__setstate__`` already accepts a state without it and the class
  keeps its registered methods. Checkpoints written by mmengine without convzoo_mm still carry the
  table: resume those with ``weights_only=False`` only if you trust them.

2. CPU distributed runs (``tools/dist_train.sh`` without CUDA): mmengine's pytorch launcher calls
   ``torch.cuda.set_device`` and its Runner gives DDP ``device_ids``; without CUDA we initialise
   gloo and build DDP without device ids. GPU runs are untouched.

3. CPU mixed precision (``--amp`` or ``optim_wrapper.type='AmpOptimWrapper'`` without an
   accelerator): mmengine 0.10.7's ``AmpOptimWrapper`` asserts a GPU/NPU/MLU/MUSA device, although
   its ``autocast`` supports CPU (bfloat16 only). On CPU it is built with ``cast_dtype=bfloat16``
   and a disabled loss scaler (bf16 has fp32's exponent range: no loss scaling needed);
   ``loss_scale`` is ignored there, another ``dtype`` is an error. Accelerator runs are untouched.
"""
import importlib

import numpy as np
import torch

__all__ = ['MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoint_globals']


def _numpy_globals():
    core = importlib.import_module('numpy._core.multiarray' if hasattr(np, '_core')
                                   else 'numpy.core.multiarray')
    items = [core._reconstruct, core.scalar, np.ndarray, np.dtype]
    dtypes = getattr(np, 'dtypes', None)          # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return items


def _history_buffer_state(self) -> dict:
    """Pickled state of a HistoryBuffer: its data only (max_length and the numpy histories)."""
    return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}


def _mmengine_globals():
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_state
    return [HistoryBuffer]


MMENGINE_CHECKPOINT_GLOBALS = _numpy_globals() + _mmengine_globals()


def allow_mmengine_checkpoint_globals() -> None:
    """Allow-list the plain-data types of mmengine checkpoints for weights-only loading."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:              # torch < 2.4 has no weights-only default to work around
        add(MMENGINE_CHECKPOINT_GLOBALS)


allow_mmengine_checkpoint_globals()


def _init_dist_pytorch_cpu_aware(original):
    """mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` unconditionally; on a
    machine without CUDA initialise the process group with gloo instead (CPU training, tests)."""

    def init(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available() or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend='gloo', **kwargs)

    init._convzoo_patched = True
    return init


def _ddp_init_cpu_aware(original):
    """mmengine's Runner passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules."""

    def init(self, module, *args, **kwargs):
        if not any(p.is_cuda for p in module.parameters()):
            kwargs['device_ids'] = None
        original(self, module, *args, **kwargs)

    init._convzoo_patched = True
    return init


def allow_cpu_distributed() -> None:
    """Let ``tools/dist_train.sh`` (torchrun + mmengine's pytorch launcher) run on CPU."""
    import mmengine.dist.utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel
    if not getattr(dist_utils._init_dist_pytorch, '_convzoo_patched', False):
        dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu_aware(dist_utils._init_dist_pytorch)
    if not getattr(MMDistributedDataParallel.__init__, '_convzoo_patched', False):
        MMDistributedDataParallel.__init__ = _ddp_init_cpu_aware(MMDistributedDataParallel.__init__)


allow_cpu_distributed()


def _amp_init_cpu_aware(original):
    """``AmpOptimWrapper.__init__`` that also builds on CPU (bfloat16 autocast, no loss scaling)."""

    def init(self, loss_scale='dynamic', dtype=None, use_fsdp=False, **kwargs):
        from mmengine.device import get_device
        from mmengine.optim import OptimWrapper
        if get_device() != 'cpu':
            return original(self, loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'AmpOptimWrapper on CPU: autocast supports dtype bfloat16 only, '
                             f'got {dtype!r}')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)   # scale/step pass through
        self.cast_dtype = torch.bfloat16

    init._convzoo_patched = True
    return init


def allow_cpu_amp() -> None:
    """Let ``AmpOptimWrapper`` (mmengine 0.10.7) train on CPU in bfloat16."""
    from mmengine.optim import AmpOptimWrapper
    if not getattr(AmpOptimWrapper.__init__, '_convzoo_patched', False):
        AmpOptimWrapper.__init__ = _amp_init_cpu_aware(AmpOptimWrapper.__init__)


allow_cpu_amp()
