"""Integration through the real mm tools on the generated demo data: train -> checkpoint ->
resume, evaluation with tools/test.py, and the configs run unchanged by the tools shipped in
the mmdet / mmseg wheels."""
import glob
import json
import os
import sys

import pytest
import torch

from convzoo_mm.demo.run import DEMO_CONFIGS, latest_metrics
from convzoo_mm.runner import mm_tool_path
from tests.utils import ROOT, free_port, run_tool

DET, SEG = DEMO_CONFIGS['det'], DEMO_CONFIGS['seg']
# tiny runs: 8 training images (one iteration per epoch at batch 8), no validation
DET_SMALL = ['train_dataloader.dataset.indices=8', 'train_cfg.val_interval=100',
             'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5']


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_det_train_checkpoint_resume_and_test(demo_data, tmp_path):
    work = str(tmp_path / 'det')
    run_tool('train.py', DET, '--work-dir', work, '--cfg-options', *DET_SMALL,
             'train_cfg.max_epochs=2')
    first = _load(os.path.join(work, 'epoch_2.pth'))
    assert first['meta']['epoch'] == 2 and first['meta']['iter'] == 2
    # checkpoints load with weights_only=True (no code executed) and hold the WTConv weights
    assert any('wavelet_convs' in k for k in first['state_dict'])

    # options may come before CONFIG, as with mm's own argparse tools
    proc = run_tool('train.py', '--work-dir', work, DET, '--resume', '--cfg-options',
                    *DET_SMALL, 'train_cfg.max_epochs=3')
    assert 'resumed epoch: 2' in (proc.stdout + proc.stderr).replace('Resumed', 'resumed')
    third = _load(os.path.join(work, 'epoch_3.pth'))
    assert third['meta']['epoch'] == 3 and third['meta']['iter'] == 3
    assert not torch.equal(third['state_dict']['backbone.layer2.0.conv2.base_conv.weight'],
                           first['state_dict']['backbone.layer2.0.conv2.base_conv.weight'])

    test_dir = str(tmp_path / 'det_test')
    run_tool('test.py', DET, os.path.join(work, 'epoch_3.pth'), '--work-dir', test_dir,
             '--cfg-options', 'test_dataloader.dataset.indices=4',
             'model.test_cfg.score_thr=0.0')   # an untrained detector scores low
    metrics = latest_metrics(test_dir)
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0


def test_seg_config_runs_unchanged_with_mmseg_shipped_train_tool(demo_data, tmp_path):
    work = str(tmp_path / 'seg')
    shipped = mm_tool_path('mmseg', 'train')
    assert os.sep + '.mim' + os.sep in shipped
    import subprocess
    opts = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2', 'val_dataloader.dataset.indices=2']
    proc = subprocess.run([sys.executable, shipped, os.path.join(ROOT, SEG), '--work-dir', work,
                           '--cfg-options', *opts], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert os.path.isfile(os.path.join(work, 'iter_2.pth'))
    assert 'mIoU' in latest_metrics(work)
    # resume from a given checkpoint with our wrapper, the way its usage gives for mmseg (whose
    # --resume takes no CKPT), into a new work dir: continues from iteration 2
    resumed = str(tmp_path / 'resumed')
    run_tool('train.py', SEG, '--work-dir', resumed, '--resume', '--cfg-options',
             f'load_from={os.path.join(work, "iter_2.pth")}', 'train_cfg.max_iters=4',
             'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2')
    assert not os.path.exists(os.path.join(resumed, 'iter_2.pth'))
    assert _load(os.path.join(resumed, 'iter_4.pth'))['meta']['iter'] == 4


def test_tools_help():
    import subprocess
    for tool in ('train.py', 'test.py', 'run_demo.py'):
        proc = run_tool(tool, '--help')
        assert 'usage' in proc.stdout.lower()
    # too few arguments: a usage error (exit 2, the usage on stderr), nothing run
    for args in (['train.py'], ['test.py'], ['test.py', 'c.py']):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', *args[:1]), *args[1:]],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=ROOT))
        assert proc.returncode == 2 and proc.stdout == '', args
        assert 'usage: python tools/' in proc.stderr, args


@pytest.mark.parametrize('script,words,bad', [
    ('setup_env.sh', 'Steps', ['--bad']), ('dist_launch.sh', 'TOOL NPROC', ['train.py']),
    ('dist_train.sh', 'CONFIG GPUS', ['c.py']), ('dist_test.sh', 'CONFIG CHECKPOINT', ['c.py']),
    ('slurm_train.sh', 'PARTITION JOB_NAME', ['p', 'j'])])
def test_shell_tools_help_and_usage_errors(script, words, bad):
    """--help prints the usage on stdout and exits 0 without running anything (setup_env.sh
    would install, dist_launch.sh launch); a call it cannot take exits 2 with the usage on
    stderr."""
    import subprocess
    path = os.path.join(ROOT, 'tools', script)
    proc = subprocess.run(['bash', path, '--help'], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and words in proc.stdout, (proc.stdout, proc.stderr)
    proc = subprocess.run(['bash', path, *bad], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, '') and f'tools/{script}' in proc.stderr, (
        proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize('args,message', [
    (['--work-dir', 'w'], 'no CONFIG among the arguments'),
    (['--work-dir', 'w', 'nope.py'], 'config file not found: nope.py'),
    (['--work-dir', 'w', '{tmp}/plain.py'], 'default_scope must be one of'),
])
def test_train_tool_bad_config_is_a_usage_error(args, message, tmp_path):
    import subprocess
    (tmp_path / 'plain.py').write_text('model = dict(type="X")\n')  # no default_scope
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'train.py'), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'tools/train.py: error: ' in proc.stderr and message in proc.stderr


def test_find_config_skips_options_and_values():
    from pathlib import Path

    from convzoo_mm.runner import config_scope, find_config
    assert config_scope(Path(ROOT) / SEG) == 'mmseg'  # paths as str or os.PathLike
    assert find_config(['--work-dir', 'w', 'c.py', '--cfg-options', 'a=b.py', 'd.py']) == 'c.py'
    with pytest.raises(ValueError, match='no CONFIG'):  # argparse gives both to --cfg-options
        find_config(['--work-dir', 'w', '--cfg-options', 'a=b.py', 'c.py'])
    assert find_config(['x.yaml', '--resume']) == 'x.yaml'
    assert find_config(['runs/lr=0.01/cfg.py', '--cfg-options', 'a=1']) == 'runs/lr=0.01/cfg.py'
    assert find_config(['--resume', 'ckpt.pth', '--cfg-options=a=b.py', 'c.py']) == 'c.py'


@pytest.mark.parametrize('env,expected', [
    (dict(CONVZOO_PYTHON='/opt/py/bin/python3', VIRTUAL_ENV='{venv}'), '/opt/py/bin/python3'),
    (dict(VIRTUAL_ENV='{venv}', VENV='{other}'), '{venv}/bin/python'),
    (dict(VENV='{venv}', CONDA_PREFIX='{other}'), '{venv}/bin/python'),
    (dict(), '{root}/.venv/bin/python'),  # DIR's .venv, as setup_env.sh makes it
    (dict(VENV='/does/not/exist', CONDA_PREFIX='{other}'), '{other}/bin/python'),
    (dict(VENV='/does/not/exist', PYTHON='python3.11'), 'python'),  # setup_env's PYTHON
])
def test_launch_scripts_pick_the_interpreter(env, expected, tmp_path):
    """tools/pick_python.sh (sourced by dist_launch.sh and slurm_train.sh): CONVZOO_PYTHON, else
    the activated virtualenv's python, else the set-up's venv when it exists, else the conda
    env's, else python."""
    import subprocess
    names = dict(venv=tmp_path / 'venv', other=tmp_path / 'other', root=tmp_path / 'root')
    for name in ('venv', 'other', 'root/.venv'):
        (tmp_path / name / 'bin').mkdir(parents=True)
        (tmp_path / name / 'bin' / 'python').write_text('#!/bin/sh\n')
        (tmp_path / name / 'bin' / 'python').chmod(0o755)
    clean = {k: v for k, v in os.environ.items()
             if k not in ('CONVZOO_PYTHON', 'PYTHON', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'VENV')}
    clean.update({k: v.format(**names) for k, v in env.items()})
    script = f'DIR={names["root"]}; source {ROOT}/tools/pick_python.sh; echo "$PY"'
    proc = subprocess.run(['bash', '-c', script], env=clean, capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == expected.format(**names)


def test_dist_train_two_processes_gloo(demo_data, tmp_path):
    """tools/dist_train.sh CONFIG 2 over torchrun on CPU (gloo, through convzoo_mm.compat's
    mmengine shims): both ranks train, rank 0 saves a checkpoint of the run's iteration."""
    import subprocess
    work = str(tmp_path / 'dist')
    env = dict(os.environ, CONVZOO_PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run(
        ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), SEG, '2', '--work-dir', work,
         '--cfg-options', 'train_cfg.max_iters=2',
         'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
         'train_dataloader.batch_size=2'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = open(glob.glob(os.path.join(work, '*', '*.log'))[0]).read()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log   # 2 processes
    assert _load(os.path.join(work, 'iter_2.pth'))['meta']['iter'] == 2


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_demo_data_root_options_point_every_dataset_at_it(task, tmp_path):
    """run_demo --data-root: the configs read data/demo; data_root_options make every split
    (and the COCO evaluators) read the data generated elsewhere."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from convzoo_mm.demo.data import make_demo_data
    from convzoo_mm.demo.run import data_root_options
    root = str(tmp_path / 'elsewhere')
    make_demo_data(root, num_train=3, num_val=2, verbose=False)
    config = os.path.join(ROOT, DEMO_CONFIGS[task])
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in data_root_options(task, root)))
    scope = cfg.default_scope
    __import__(f'{scope}.utils', fromlist=['x']).register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    datasets = __import__(f'{scope}.registry', fromlist=['DATASETS']).DATASETS
    for split, count in (('train', 3), ('val', 2), ('test', 2)):
        ds = datasets.build(cfg[f'{split}_dataloader'].dataset)
        assert len(ds) == count, split
        assert ds.get_data_info(0)['img_path'].startswith(root), split
    if task == 'det':
        for split in ('val', 'test'):
            assert cfg[f'{split}_evaluator'].ann_file.startswith(root)
            assert os.path.isfile(cfg[f'{split}_evaluator'].ann_file)


def test_run_demo_resolves_relative_paths_from_the_callers_directory(tmp_path, monkeypatch):
    from convzoo_mm.demo import run
    calls = []
    monkeypatch.setattr(run, 'make_demo_data', lambda root: calls.append(('data', root)))
    monkeypatch.setattr(run, 'train_and_test', lambda config, work_dir, extra: calls.append(
        ('train', work_dir, extra)) or {})
    monkeypatch.chdir(tmp_path)
    run.run_demo('wd', 'mydata', tasks=('det',), baselines=False)
    assert calls[0] == ('data', str(tmp_path / 'mydata'))
    _, work_dir, extra = calls[1]
    assert work_dir == str(tmp_path / 'wd' / 'det')
    assert f'train_dataloader.dataset.data_root={tmp_path / "mydata" / "coco"}/' in extra
    calls.clear()
    run.run_demo('wd', os.path.join(ROOT, 'data', 'demo'), tasks=('seg',), baselines=False)
    assert calls[1][2] == []  # the configs' own data root: no options
    calls.clear()
    with pytest.raises(ValueError, match="my data'.*spaces, commas"):
        run.run_demo('wd', 'my data', tasks=('det',), baselines=False)
    assert calls == []  # nothing generated or trained
