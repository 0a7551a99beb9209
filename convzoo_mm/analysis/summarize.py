"""Results tables and training curves from mm work_dirs.

mmengine writes, for a run of ``tools/train.py CONFIG --work-dir W``:
``W/<config name>.py`` (the full config), ``W/<timestamp>/<timestamp>.log``,
``W/<timestamp>/vis_data/scalars.json`` (one JSON object per line: training lines carry
``loss``, ``lr``, ``iter``/``step`` and, on CUDA, ``memory`` in MB; validation lines carry the
metrics, e.g. ``coco/bbox_mAP`` (a fraction) or ``mIoU`` (already in %), and ``step``) and
``W/<timestamp>/vis_data/config.py``.

:func:`summarize_work_dir` reads the newest run that has scalars and returns one row of the
mm-style README table: Backbone | Conv | Lr schd | Mem (GB) | box AP | mask AP | mIoU | Config,
using the *last* validation result (as the mm READMEs do) and the max training memory.
"""
import glob
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

__all__ = ['find_run', 'load_scalars', 'summarize_work_dir', 'results_table', 'plot_curves',
           'describe_backbone', 'describe_conv', 'describe_schedule']

_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
# conv-layer options worth showing in the Conv column
_CONV_OPTIONS = ('wt_levels', 'wt_type', 'alpha_in', 'alpha_out', 'alpha', 'num_regions',
                 'generator', 'kernel_size')


def find_run(work_dir: str) -> str:
    """The newest ``<work_dir>/<timestamp>`` folder that has ``vis_data/scalars.json``."""
    if not os.path.isdir(work_dir):
        raise FileNotFoundError(f'work_dir not found: {work_dir}')
    runs = sorted(d for d in os.listdir(work_dir) if _TIMESTAMP.match(d) and os.path.isfile(
        os.path.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise ValueError(f'{work_dir}: no run with logged scalars (expected '
                         f'<work_dir>/<YYYYMMDD_HHMMSS>/vis_data/scalars.json, written by '
                         f'mmengine during training); did the training start?')
    return os.path.join(work_dir, runs[-1])


def load_scalars(path: str) -> List[Dict[str, Any]]:
    """Lines of an mmengine ``scalars.json`` as dicts (broken lines are skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _load_config(work_dir: str, run: str):
    from mmengine.config import Config
    candidates = sorted(glob.glob(os.path.join(work_dir, '*.py')))
    candidates += [os.path.join(run, 'vis_data', 'config.py')]
    for path in candidates:
        if os.path.isfile(path):
            try:
                return Config.fromfile(path, import_custom_modules=False), path
            except Exception:  # a half-written or foreign .py file: try the next one
                continue
    raise ValueError(f'{work_dir}: no readable config (<config name>.py) found')


def _get(cfg: Any, key: str, default=None):
    try:
        return cfg.get(key, default)
    except AttributeError:
        return default


def describe_backbone(model_cfg: Any) -> str:
    """``Type-depth`` / ``Type-arch`` of ``model.backbone`` (e.g. ``ResNetV1c-50``)."""
    backbone = _get(model_cfg, 'backbone') or {}
    name = str(_get(backbone, 'type', '?')).split('.')[-1]
    for key in ('depth', 'arch'):
        value = _get(backbone, key)
        if value is not None and not isinstance(value, dict):
            return f'{name}-{value}'
    return name


def _walk(obj: Any, path=()):
    if isinstance(obj, dict) or hasattr(obj, 'items'):
        for k, v in obj.items():
            yield path + (k, ), v
            yield from _walk(v, path + (k, ))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, path + (i, ))


def describe_conv(model_cfg: Any) -> str:
    """The non-default conv layers of a model config: every ``conv_cfg``/``dcn`` type (with its
    layer options) and convzoo backbones (WTConvNeXt, Oct-ResNet); ``Conv2d`` if none."""
    found = []
    for path, value in _walk(model_cfg):
        if path and path[-1] in ('conv_cfg', 'dcn') and value and _get(value, 'type'):
            opts = ', '.join(f'{k}={_get(value, k)}' for k in _CONV_OPTIONS
                             if _get(value, k) is not None)
            where = str(path[0]) if len(path) > 1 else 'model'
            found.append(f'{_get(value, "type")}{f" ({opts})" if opts else ""} in {where}')
    btype = str(_get(_get(model_cfg, 'backbone') or {}, 'type', ''))
    for marker, conv in (('WTConv', 'WTConv'), ('Oct', 'OctaveConv'), ('DRConv', 'DRConv')):
        if marker in btype and not any(f.startswith(conv) for f in found):
            backbone = _get(model_cfg, 'backbone')
            opts = ', '.join(f'{k}={_get(backbone, k)}' for k in _CONV_OPTIONS + ('wt_levels', )
                             if _get(backbone, k) is not None)
            found.append(f'{conv}{f" ({opts})" if opts else ""} in backbone')
    return '; '.join(dict.fromkeys(found)) or 'Conv2d'


def describe_schedule(cfg: Any) -> str:
    """``1x``/``2x``/``3x`` for 12/24/36 epochs, ``Ne`` otherwise; ``160k`` etc. for iters."""
    train_cfg = _get(cfg, 'train_cfg') or {}
    epochs, iters = _get(train_cfg, 'max_epochs'), _get(train_cfg, 'max_iters')
    if epochs:
        return {12: '1x', 24: '2x', 36: '3x'}.get(int(epochs), f'{epochs}e')
    if iters:
        return f'{iters / 1000:g}k' if iters >= 1000 else f'{iters}it'
    return '-'


def _last(rows: Sequence[Dict[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in rows if key in r and isinstance(r[key], (int, float))]
    return values[-1] if values else None


def summarize_work_dir(work_dir: str) -> Dict[str, Any]:
    """One results row for ``work_dir`` (see the module docstring) plus the curves.

    Returns:
        dict: ``name, backbone, conv, lr_schd, mem_gb, box_ap, mask_ap, miou`` (floats in %, or
        None), ``config`` (path), ``run``, ``train`` (list of (step, loss)), ``val`` (list of
        (step, {metric: value})), ``scope``.
    """
    run = find_run(work_dir)
    scalars = load_scalars(os.path.join(run, 'vis_data', 'scalars.json'))
    cfg, cfg_path = _load_config(work_dir, run)
    train = [r for r in scalars if 'loss' in r]
    val = [r for r in scalars if 'loss' not in r and 'lr' not in r]
    memory = [r['memory'] for r in train if isinstance(r.get('memory'), (int, float))]
    box, mask, miou = (_last(val, 'coco/bbox_mAP'), _last(val, 'coco/segm_mAP'),
                       _last(val, 'mIoU'))
    metric_keys = [k for r in val for k in r if k not in ('step', 'time', 'data_time', 'epoch',
                                                         'iter') and isinstance(r[k], (int, float))]
    return dict(
        name=os.path.splitext(os.path.basename(cfg_path))[0] if not cfg_path.endswith(
            os.path.join('vis_data', 'config.py')) else os.path.basename(work_dir.rstrip('/')),
        work_dir=work_dir, run=run, config=cfg_path, scope=_get(cfg, 'default_scope'),
        backbone=describe_backbone(_get(cfg, 'model') or {}),
        conv=describe_conv(_get(cfg, 'model') or {}), lr_schd=describe_schedule(cfg),
        mem_gb=max(memory) / 1024 if memory else None,
        box_ap=None if box is None else 100 * box, mask_ap=None if mask is None else 100 * mask,
        miou=miou,
        train=[(r.get('step', r.get('iter', i)), r['loss']) for i, r in enumerate(train)],
        val=[(r.get('step', i), {k: r[k] for k in dict.fromkeys(metric_keys) if k in r})
             for i, r in enumerate(val)])


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return '-' if v is None else f'{v:.{digits}f}'


def results_table(rows: Sequence[Dict[str, Any]], link_root: Optional[str] = None) -> str:
    """The mm README table for ``rows`` from :func:`summarize_work_dir`."""
    lines = ['| Backbone | Conv | Lr schd | Mem (GB) | box AP | mask AP | mIoU | Config |',
             '|:---:|:---:|:---:|:---:|:---:|:---:|:---:|:---:|']
    for r in rows:
        cfg = r['config'] if link_root is None else os.path.relpath(r['config'], link_root)
        lines.append(f'| {r["backbone"]} | {r["conv"]} | {r["lr_schd"]} | {_fmt(r["mem_gb"])} | '
                     f'{_fmt(r["box_ap"])} | {_fmt(r["mask_ap"])} | {_fmt(r["miou"], 2)} | '
                     f'[{r["name"]}]({cfg}) |')
    return '\n'.join(lines) + '\n'


def plot_curves(rows: Sequence[Dict[str, Any]], path: str) -> str:
    """Training loss (left) and validation metrics (right) of every run, as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        if r['train']:
            steps, losses = zip(*r['train'])
            ax_loss.plot(steps, losses, label=r['name'], lw=1)
        for key, scale in (('coco/bbox_mAP', 100), ('coco/segm_mAP', 100), ('mIoU', 1)):
            pts = [(s, m[key] * scale) for s, m in r['val'] if key in m]
            if pts:
                xs, ys = zip(*pts)
                ax_val.plot(xs, ys, marker='o', label=f'{r["name"]} {key.split("/")[-1]}')
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel('training loss')
    ax_val.set_xlabel('validation step (epoch or iteration)')
    ax_val.set_ylabel('AP / mIoU (%)')
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
