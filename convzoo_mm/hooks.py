"""Training hooks.

``LossRecorderHook`` writes each process's own training outputs (losses) of every iteration,
unrounded, to ``<work_dir>/losses_rank{rank}.jsonl``. mmengine 0.10.7 logs (text log and
``vis_data/scalars.json``) only rank 0's values, and those are rank 0's *local* losses: in a
distributed run nothing all-reduces them (``BaseModel.parse_losses`` and ``RuntimeInfoHook`` keep
the local values, the visualizer writes on rank 0 only), and the text log rounds to 4 decimals.
With every rank's record, the loss of the whole global batch can be checked (e.g. the mean of
the ranks' losses when the loss is a per-sample mean over equal-size samples).

Enable with ``custom_hooks = [dict(type='LossRecorderHook')]``.
"""
import json
import os

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['LossRecorderHook']


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


# idempotent (the module may be executed again through another import path)
HOOKS.register_module(name='LossRecorderHook', module=LossRecorderHook, force=True)
