"""The analysis tools on real mmdet/mmseg models (skipped until mmdet/mmseg are installed).

Oracles: mmengine's own complexity analysis run the way mmdet's get_flops runs it (for a model
without convzoo layers), the WTConv and plain conv formulas (tests.utils) for the layers and the
3x3 convs they replace, and PNG/table structure for the CLIs."""
import json
import os

import pytest
import torch

from tests.utils import conv_macs, haar_wtconv_macs, run_tool

pytest.importorskip('mmdet')
pytest.importorskip('mmcv.ops')

from convzoo_mm.analysis.mm_models import (build_model, dummy_batch,  # noqa: E402
                                           forward_for_analysis)

THIN_R50 = dict(stem_channels=16, base_channels=16)


def _det_config(tmp_path, backbone_extra=''):
    path = tmp_path / 'det.py'
    path.write_text(
        "_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']\n"
        "custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(stem_channels=16, base_channels=16, init_cfg=None"
        f"{backbone_extra}), neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),\n"
        "    rpn_head=dict(in_channels=32, feat_channels=32),\n"
        "    roi_head=dict(bbox_roi_extractor=dict(out_channels=32),\n"
        "                  bbox_head=dict(in_channels=32, fc_out_channels=64),\n"
        "                  mask_roi_extractor=dict(out_channels=32),\n"
        "                  mask_head=dict(in_channels=32, conv_out_channels=32)))\n")
    return str(path)


def test_detector_count_equals_mmengine_and_layer_deltas(tmp_path):
    from mmengine.analysis import get_model_complexity_info
    from mmengine.config import Config

    from convzoo_mm.analysis.mm_models import model_complexity
    # the RoI heads' FLOPs depend on how many proposals survive NMS: same seed, same weights
    cfg = Config.fromfile(_det_config(tmp_path))
    torch.manual_seed(0)
    ours = model_complexity(cfg, (96, 128))
    # mmengine, called the way mmdet's tools/analysis_tools/get_flops.py calls it
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        data = dummy_batch(model, 'mmdet', (96, 128))
    model, inputs = forward_for_analysis(model, data)
    ref = get_model_complexity_info(model, inputs=inputs, show_table=False, show_arch=False)
    assert ours['flops'] == ref['flops'] and ours['params'] == ref['params']
    assert ours['layers'] == {}

    # WTConv in the bottleneck 3x3 slots of stages 2-4 (like mmdet's dcn configs)
    cfg_wt = Config.fromfile(_det_config(
        tmp_path, ", dcn=dict(type='WTConv', wt_levels=1), "
        "stage_with_dcn=(False, True, True, True)"))
    torch.manual_seed(0)
    wt = model_complexity(cfg_wt, (96, 128))
    assert len(wt['layers']) == 4 + 6 + 3
    delta = 0
    for name, rec in wt['layers'].items():
        assert rec['type'] == 'WTConv' and name.startswith('backbone.layer')
        (shape, ) = rec['input_shapes']
        n, c, h, w = shape
        stride = 2 if name.endswith('.0.conv2') and not name.startswith('backbone.layer1') else 1
        ho, wo = -(-h // stride), -(-w // stride)
        # in == out with groups=1: the depthwise WTConv (k=3, one level), then a 1x1 conv
        layer = haar_wtconv_macs(n, c, h, w, 3, 1, stride) + conv_macs(n, c, c, 1, ho, wo)
        assert rec['flops'] == layer, name
        delta += layer - conv_macs(n, c, c, 3, ho, wo)
    # (heads differ with the proposals that survive NMS: compare the backbones)
    assert wt['by_module']['backbone'] - ours['by_module']['backbone'] == delta


def test_get_flops_cli(tmp_path):
    proc = run_tool('analysis/get_flops.py', _det_config(tmp_path, ", dcn=dict(type='WTConv'), "
                    "stage_with_dcn=(False, False, False, True)"), '--shape', '64', '96',
                    '--layers')
    assert 'Flops:' in proc.stdout and 'Params:' in proc.stdout
    assert 'convzoo layers counted exactly: 3' in proc.stdout
    assert '| model ' in proc.stdout and 'backbone' in proc.stdout


def test_erf_cli_inline_specs(tmp_path):
    out = str(tmp_path / 'erf.png')
    tiny = "arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 16, 16]), out_indices=(1, )"
    plain = f"dict(type='WTConvNeXt', conv_type='plain', {tiny})"
    proc = run_tool('analysis/erf.py', plain, f"dict(type='WTConvNeXt', {tiny})", plain,
                    '--names', 'plain', 'wt', 'plain again', '--size', '64',
                    '--num-images', '2', '--images', str(tmp_path / 'none'), '--out', out,
                    env=dict(OMP_NUM_THREADS='1'))
    assert '| plain |' in proc.stdout and '| wt |' in proc.stdout
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(out[:-4] + '.json') as f:
        ratios = json.load(f)
    assert set(ratios) == {'plain', 'wt', 'plain again'}
    assert all(0 < r['0.99'] <= 1 for r in ratios.values())
    assert ratios['plain'] == ratios['plain again']   # --seed (0) before each build


def test_model_benchmark_and_pictures_on_a_detector(tmp_path):
    cfg_dr = _det_config(tmp_path, ", dcn=dict(type='DRConv', num_regions=4), "
                         "stage_with_dcn=(False, False, False, True)")
    os.rename(cfg_dr, str(tmp_path / 'det_dr.py'))
    cfg_dr = str(tmp_path / 'det_dr.py')
    cfg_plain = _det_config(tmp_path)
    proc = run_tool('analysis/benchmark_model.py', cfg_dr, '--baseline', cfg_plain, '--shape',
                    '64', '64', '--batch-size', '2', '--repeats', '1', '--warmup', '0',
                    '--out-dir', str(tmp_path / 'bm'), env=dict(OMP_NUM_THREADS='1'))
    assert '| det_dr | train |' in proc.stdout and '| det (baseline) | infer |' in proc.stdout
    proc = run_tool('analysis/visualize_layers.py', cfg_dr, '--size', '64', '--out-dir',
                    str(tmp_path / 'pics'))
    assert len(os.listdir(tmp_path / 'pics')) == 3  # the three DRConvs of stage 4
