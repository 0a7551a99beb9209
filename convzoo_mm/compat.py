"""Keep mmengine 0.10.x checkpoints loadable under torch >= 2.6 without giving up safety.

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
