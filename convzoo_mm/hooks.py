"""Training hooks.

``LossRecorderHook`` writes each process's own training outputs (losses) of every iteration,
unrounded, to ``<work_dir>/losses_rank{rank}.jsonl``. mmengine 0.10.7 logs (text log and
``vis_data/scalars.json``) only rank 0's values, and those are rank 0's *local* losses: in a
distributed run nothing all-reduces them (``BaseModel.parse_losses`` and ``RuntimeInfoHook`` keep
the local values, the visualizer writes on rank 0 only), and the text log rounds to 4 decimals.
With every rank's record, the loss of the whole global batch can be checked (e.g. the mean of
the ranks' losses when the loss is a per-sample mean over equal-size samples).

Enable with ``custom_hooks = [dict(type='LossRecorderHook')]``.

``RandomStateHook`` saves the random-number state (torch CPU and CUDA, numpy, Python ``random``)
in every checkpoint and restores it on ``--resume``, so that what the model draws after a resume
(dropout masks, drop path) is what an uninterrupted run draws; mmengine 0.10.7 checkpoints no RNG
state and a resumed process restarts from the seed. The state is stored as plain tensors and
numbers, so checkpoints still load with ``weights_only=True``. Enable with
``custom_hooks = [dict(type='RandomStateHook')]`` (the demo configs do).

Distributed runs: mmengine saves checkpoints on rank 0 only, so the state is rank 0's, and every
rank restores it on resume, its CUDA part into the rank's own device. That is each rank's own
state when all ranks draw the same random numbers, as under mmengine's default
``randomness.diff_rank_seed=False`` (the same seed on every rank). With ``diff_rank_seed=True`` the
ranks' streams differ and are not in the checkpoint: a multi-rank resume then keeps mmengine's
re-seeding (each rank its own seed) and warns, rather than giving every rank rank 0's stream.
"""
import json
import logging
import os
import random

from mmengine.dist import get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['LossRecorderHook', 'RandomStateHook', 'get_random_state', 'set_random_state']


class LossRecorderHook(Hook):
    """Append ``{"iter": i, <output>: value, ...}`` (1-based iteration, as in ``scalars.json``)
    per training iteration to ``<work_dir>/losses_rank{rank}.jsonl`` of every process."""

    priority = 'LOW'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        record = {'iter': runner.iter + 1}
        record.update({k: float(v) for k, v in (outputs or {}).items()})
        path = os.path.join(runner.work_dir, f'losses_rank{get_rank()}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(record) + '\n')


def get_random_state() -> dict:
    """The process's random-number state as tensors and numbers (weights-only loadable)."""
    import numpy as np
    import torch
    key, np_state, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = dict(torch=torch.get_rng_state(),
                 numpy=dict(key=key, state=torch.from_numpy(np_state.astype(np.int64)), pos=pos,
                            has_gauss=has_gauss, gauss=gauss),
                 python=dict(version=version, state=torch.tensor(py_state, dtype=torch.int64),
                             gauss=py_gauss))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()     # the current device: this rank's GPU
    return state


def set_random_state(state: dict) -> None:
    """Restore what :func:`get_random_state` returned."""
    import numpy as np
    import torch
    torch.set_rng_state(state['torch'])
    npst = state['numpy']
    np.random.set_state((npst['key'], npst['state'].numpy().astype(np.uint32), npst['pos'],
                         npst['has_gauss'], npst['gauss']))
    py = state['python']
    random.setstate((py['version'], tuple(py['state'].tolist()), py['gauss']))
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        if isinstance(cuda, (list, tuple)):    # checkpoints before 2026-11-23: every device's
            cuda = cuda[0]                     # state as rank 0 saw it; rank 0 ran on device 0
        torch.cuda.set_rng_state(cuda)         # into this rank's current device


class RandomStateHook(Hook):
    """Checkpoint the random-number state (``checkpoint['random_state']``) and restore it when a
    run resumes, after mmengine has re-seeded the process."""

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['random_state'] = get_random_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume or 'random_state' not in checkpoint:  # load_from: fine-tuning
            return
        if get_world_size() > 1 and (getattr(runner, '_randomness_cfg', None)
                                     or {}).get('diff_rank_seed'):
            print_log('RandomStateHook: not restoring the random state: with diff_rank_seed=True '
                      "each rank has its own stream and the checkpoint holds rank 0's only",
                      logger='current', level=logging.WARNING)
            return
        set_random_state(checkpoint['random_state'])


# idempotent (the module may be executed again through another import path)
HOOKS.register_module(name='LossRecorderHook', module=LossRecorderHook, force=True)
HOOKS.register_module(name='RandomStateHook', module=RandomStateHook, force=True)
