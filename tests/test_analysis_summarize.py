"""summarize: README table values from work_dirs laid out like mmengine writes them (a synthetic
one with known numbers, and, in the slow test, a real demo training)."""
import glob
import json
import os

import pytest

from convzoo_mm.analysis.summarize import results_table, summarize_work_dir
from tests.utils import ROOT, run_tool

DET_CONFIG = '''default_scope = 'mmdet'
model = dict(type='MaskRCNN', backbone=dict(type='ResNet', depth=50,
             dcn=dict(type='WTConv', wt_levels=2), stage_with_dcn=(False, True, True, True)),
             neck=dict(type='FPN', conv_cfg=None))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12)
'''

SEG_CONFIG = '''default_scope = 'mmseg'
model = dict(type='EncoderDecoder', backbone=dict(type='ResNetV1c', depth=50,
             conv_cfg=dict(type='OctaveConv', alpha_in=0.5, alpha_out=0.5)))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000)
'''


def _write_run(work_dir, name, config_text, lines, stamp='20260101_120000'):
    os.makedirs(os.path.join(work_dir, stamp, 'vis_data'), exist_ok=True)
    with open(os.path.join(work_dir, f'{name}.py'), 'w') as f:
        f.write(config_text)
    with open(os.path.join(work_dir, stamp, 'vis_data', 'scalars.json'), 'w') as f:
        for line in lines:
            f.write(json.dumps(line) + '\n')


def test_detection_row(tmp_path):
    wd = str(tmp_path / 'det')
    _write_run(wd, 'mask-rcnn_r50-wtconv_fpn_1x_coco', DET_CONFIG, [
        dict(lr=0.02, loss=3.0, memory=1500, step=50, epoch=1, iter=50),
        dict(lr=0.02, loss=2.0, memory=2560, step=100, epoch=1, iter=100),
        {'coco/bbox_mAP': 0.101, 'coco/segm_mAP': 0.09, 'data_time': 0.1, 'step': 1},
        dict(lr=0.02, loss=1.0, memory=2048, step=150, epoch=2, iter=150),
        {'coco/bbox_mAP': 0.373, 'coco/segm_mAP': 0.342, 'time': 0.5, 'step': 2},
    ])
    row = summarize_work_dir(wd)
    assert row['backbone'] == 'ResNet-50'
    assert row['conv'].startswith('WTConv (wt_levels=2) in backbone')
    assert row['lr_schd'] == '1x'
    assert row['mem_gb'] == pytest.approx(2560 / 1024)      # max over training
    assert row['box_ap'] == pytest.approx(37.3)              # the last evaluation
    assert row['mask_ap'] == pytest.approx(34.2)
    assert row['miou'] is None
    assert [s for s, _ in row['train']] == [50, 100, 150]
    assert [s for s, _ in row['val']] == [1, 2] and 'time' not in row['val'][1][1]
    table = results_table([row])
    assert ('| ResNet-50 | WTConv (wt_levels=2) in backbone | 1x | 2.5 | 37.3 | 34.2 | - | '
            '[mask-rcnn_r50-wtconv_fpn_1x_coco]') in table


def test_newest_run_and_its_last_evaluation(tmp_path):
    """A work_dir trained twice: the newer run counts, with its last evaluation (not its best);
    36 epochs are '3x'."""
    wd = str(tmp_path / 'det')
    config = DET_CONFIG.replace('max_epochs=12', 'max_epochs=36')
    _write_run(wd, 'm', config, [dict(lr=0.02, loss=1.0, step=1), {'coco/bbox_mAP': 0.9,
                                                                     'step': 1}],
               stamp='20260101_120000')
    _write_run(wd, 'm', config, [dict(lr=0.02, loss=1.0, step=1),
                                 {'coco/bbox_mAP': 0.40, 'step': 1},
                                 {'coco/bbox_mAP': 0.373, 'step': 2}], stamp='20260102_080000')
    row = summarize_work_dir(wd)
    assert row['box_ap'] == pytest.approx(37.3)
    assert row['lr_schd'] == '3x'


def test_segmentation_row_without_memory(tmp_path):
    wd = str(tmp_path / 'seg')
    _write_run(wd, 'upernet_r50-oct', SEG_CONFIG, [
        dict(lr=0.01, loss=2.0, step=10, iter=10),
        dict(aAcc=70.0, mIoU=12.5, mAcc=20.0, step=10),
        dict(aAcc=71.0, mIoU=14.25, mAcc=21.0, step=20),
    ])
    row = summarize_work_dir(wd)
    assert row['conv'] == 'OctaveConv (alpha_in=0.5, alpha_out=0.5) in backbone'
    assert row['lr_schd'] == '160k' and row['mem_gb'] is None
    assert row['miou'] == pytest.approx(14.25)  # mmseg logs mIoU in %
    assert '| - | - | - | 14.25 |' in results_table([row])


def test_empty_or_missing_work_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        summarize_work_dir(str(tmp_path / 'nope'))
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match='no run with logged scalars'):
        summarize_work_dir(str(tmp_path / 'empty'))


@pytest.mark.slow
def test_summarize_a_demo_training(tmp_path, demo_data):
    """A few iterations of the segmentation demo through tools/train.py, then summarize."""
    configs = sorted(glob.glob(os.path.join(ROOT, 'configs', 'demo', 'upernet_*wtconv*.py')))
    if not configs:
        pytest.skip('no segmentation demo config')
    config = configs[0]
    wd = str(tmp_path / 'demo')
    run_tool('train.py', config, '--work-dir', wd, '--cfg-options', 'train_cfg.max_iters=4',
             'train_cfg.val_interval=4', 'default_hooks.logger.interval=1',
             'default_hooks.checkpoint.interval=4', 'train_dataloader.batch_size=2')
    out = str(tmp_path / 'summary')
    proc = run_tool('analysis/summarize.py', wd, '--out-dir', out)
    row = summarize_work_dir(wd)
    scalars = [json.loads(line) for line in open(os.path.join(
        row['run'], 'vis_data', 'scalars.json'))]
    assert [s for s, _ in row['train']] == [r['step'] for r in scalars if 'loss' in r]
    assert row['miou'] == [r['mIoU'] for r in scalars if 'mIoU' in r][-1]
    assert row['lr_schd'] == '4it' and 'WTConv' in row['conv']
    assert os.path.isfile(os.path.join(out, 'curves.png'))
    assert os.path.basename(config)[:-3] in proc.stdout


def test_cli_writes_table_and_curves(tmp_path):
    wd = str(tmp_path / 'seg')
    _write_run(wd, 'upernet_r50-oct', SEG_CONFIG, [dict(lr=0.01, loss=2.0, step=10),
                                                   dict(mIoU=14.25, step=10)])
    out = str(tmp_path / 'summary')
    proc = run_tool('analysis/summarize.py', wd, '--out-dir', out)
    assert '| ResNetV1c-50 | OctaveConv' in proc.stdout
    with open(os.path.join(out, 'curves.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(AssertionError, match='no run with logged scalars'):
        os.makedirs(tmp_path / 'empty')
        run_tool('analysis/summarize.py', str(tmp_path / 'empty'), '--out-dir', out)
    # --skip-bad: the unreadable one is skipped with a warning, the table has the other
    proc = run_tool('analysis/summarize.py', str(tmp_path / 'empty'), wd, '--skip-bad',
                    '--out-dir', out)
    assert '| ResNetV1c-50 | OctaveConv' in proc.stdout
    assert f'warning: skipping {tmp_path / "empty"}: ' in proc.stderr
