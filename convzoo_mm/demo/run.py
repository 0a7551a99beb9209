"""The demo job: generate the shapes data, train a detector and a segmentor with WTConv through
the mm training tools, evaluate them with the mm test tools and print one table."""
import glob
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from .data import make_demo_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIGS = {
    'det': 'configs/demo/fcos_r50-thin-wtconv-c3-c5_fpn_1xb8-12e_demo.py',
    'seg': 'configs/demo/upernet_r50-thin-wtconv-c3-c5_1xb8-300i_demo-128x128.py',
}
# the same models with plain 3x3 convs, trained the same way, for an honest comparison
BASELINE_CONFIGS = {
    'det': 'configs/demo/fcos_r50-thin_fpn_1xb8-12e_demo.py',
    'seg': 'configs/demo/upernet_r50-thin_1xb8-300i_demo-128x128.py',
}
METRICS = {  # table column -> (metric key written by the mm evaluator, scale to a fraction)
    'bbox mAP': ('coco/bbox_mAP', 1.0),
    'mIoU': ('mIoU', 0.01),
}


def _run(cmd: List[str], log_path: str, label: str) -> None:
    """Run a tool, log everything to ``log_path`` and echo progress lines."""
    print(f'[demo] {label}: {" ".join(cmd)}  (log: {log_path})', flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            progress = any(key in line for key in ('(train)', '(val)', '(test)'))
            if progress and any(key in line for key in ('loss', 'mAP', 'mIoU')):
                print('   ', line.rstrip()[-160:], flush=True)   # losses and metrics
        if proc.wait() != 0:
            tail = open(log_path).read()[-3000:]
            raise RuntimeError(f'{label} failed (exit {proc.returncode}); end of {log_path}:\n'
                               f'{tail}')


def latest_metrics(work_dir: str) -> Dict[str, float]:
    """Metrics of the newest evaluation in an mm work_dir: test runs write
    ``<timestamp>/<timestamp>.json``, training runs ``<timestamp>/vis_data/<timestamp>.json``."""
    logs = sorted(glob.glob(os.path.join(work_dir, '*', '*.json')) +
                  glob.glob(os.path.join(work_dir, '*', 'vis_data', '2*.json')),
                  key=lambda p: os.path.basename(p))
    for path in reversed(logs):
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for record in reversed(lines):
            if any(key in record for key, _ in METRICS.values()):
                return record
    raise FileNotFoundError(f'no evaluation results under {work_dir}')


def data_root_options(task: str, data_root: str) -> List[str]:
    """``--cfg-options`` pointing a demo config of ``task`` at the data generated under
    ``data_root`` (the configs read ``data/demo``): every dataloader's ``data_root`` and, for
    detection, the COCO evaluators' annotation file."""
    if any(c in data_root for c in ' ,\'"[]()'):
        raise ValueError(f'data_root {data_root!r}: mm\'s --cfg-options drop spaces and split '
                         f'values at commas, so it cannot carry this path; use a directory '
                         f'without spaces, commas, quotes or brackets')
    sub = os.path.join(data_root, 'coco' if task == 'det' else 'ade') + os.sep
    opts = [f'{split}_dataloader.dataset.data_root={sub}' for split in ('train', 'val', 'test')]
    if task == 'det':
        ann = os.path.join(sub, 'annotations', 'instances_val.json')
        opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    return opts


def custom_data_root(data_root: str, tasks=('det', 'seg')) -> bool:
    """Whether the absolute ``data_root`` differs from the configs' own ``data/demo`` (then the
    runs get :func:`data_root_options`); ValueError if those options cannot carry it."""
    custom = os.path.realpath(data_root) != os.path.realpath(os.path.join(ROOT, 'data', 'demo'))
    for task in tasks if custom else ():
        data_root_options(task, data_root)
    return custom


def train_and_test(config: str, work_dir: str, extra: Optional[List[str]] = None):
    """Train ``config`` into ``work_dir`` and test its last checkpoint; ``extra``: options for
    both tools (e.g. ``['--cfg-options', ...]``)."""
    os.makedirs(work_dir, exist_ok=True)
    py = sys.executable
    _run([py, 'tools/train.py', config, '--work-dir', work_dir, *(extra or [])],
         os.path.join(work_dir, 'train.out'), f'train {os.path.basename(config)}')
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    test_dir = os.path.join(work_dir, 'test')
    _run([py, 'tools/test.py', config, checkpoint, '--work-dir', test_dir, *(extra or [])],
         os.path.join(work_dir, 'test.out'), f'test {os.path.basename(config)}')
    return latest_metrics(test_dir)


def format_table(rows: List[Dict[str, str]]) -> str:
    cols = ['task', 'config', 'bbox mAP', 'mIoU', 'train+test time', 'work_dir']
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(str(r.get(c, '-')) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def run_demo(work_root: str = 'work_dirs/demo', data_root: str = 'data/demo',
             tasks=('det', 'seg'), baselines: bool = True) -> List[Dict[str, str]]:
    """Train and test the WTConv demo config of each task (and its plain baseline). Relative
    ``work_root`` / ``data_root`` are taken from the caller's directory (the tools run from the
    repository root)."""
    work_root, data_root = os.path.abspath(work_root), os.path.abspath(data_root)
    custom_data = custom_data_root(data_root, tasks)
    os.chdir(ROOT)
    make_demo_data(data_root)
    runs = [(task, DEMO_CONFIGS[task], task) for task in tasks]
    if baselines:
        runs += [(task, BASELINE_CONFIGS[task], f'{task}_plain') for task in tasks]
    rows = []
    for task, config, name in sorted(runs):
        work_dir = os.path.join(work_root, name)
        start = time.time()
        extra = ['--cfg-options', *data_root_options(task, data_root)] if custom_data else []
        metrics = train_and_test(config, work_dir, extra)
        row = dict(task=task, config=os.path.basename(config), work_dir=work_dir,
                   **{'train+test time': f'{time.time() - start:.0f} s'})
        for col, (key, scale) in METRICS.items():
            if key in metrics:
                row[col] = f'{metrics[key] * scale:.3f}'
        rows.append(row)
    print('\n' + format_table(rows), flush=True)
    return rows
