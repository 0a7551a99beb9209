"""Two-stage detector FLOPs in the mmdet 2.x / paper convention (fixed RoIs).

Oracles: the bbox / mask heads counted alone on one RoI with mmengine's FlopAnalyzer (RoI part =
rois x per-RoI cost, summed over the stages), mmdet 3's tensor-mode count for the parts before
the RoI heads, and the ConvNeXt paper's 86M / 741G for Cascade Mask R-CNN ConvNeXt-T (slow)."""
import os

import pytest
import torch

from tests.utils import ROOT, run_tool

pytest.importorskip('mmdet')
pytest.importorskip('mmcv.ops')

from convzoo_mm.analysis.mm_models import build_model, load_config, model_complexity  # noqa: E402

SHAPE = (96, 128)
C = 32  # RoI feature channels of the tiny detectors


def _tiny_two_stage(tmp_path, cascade):
    """Config of a thin-ResNet Mask R-CNN or Cascade Mask R-CNN (3 stages)."""
    from mmengine.config import Config
    base = ('cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py' if cascade
            else 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    path = tmp_path / ('cascade.py' if cascade else 'mask.py')
    path.write_text(
        f"_base_ = ['mmdet::{base}']\n"
        "model = dict(backbone=dict(stem_channels=16, base_channels=16, init_cfg=None),\n"
        f"    neck=dict(in_channels=[64, 128, 256, 512], out_channels={C}),\n"
        f"    rpn_head=dict(in_channels={C}, feat_channels={C}),\n"
        f"    roi_head=dict(bbox_roi_extractor=dict(out_channels={C}),\n"
        f"                  mask_roi_extractor=dict(out_channels={C}),\n"
        f"                  mask_head=dict(in_channels={C}, conv_out_channels={C})))\n")
    cfg = Config.fromfile(str(path))
    heads = cfg.model.roi_head.bbox_head
    for i, head in enumerate(heads if cascade else [heads]):
        head.in_channels = C
        head.fc_out_channels = 48 + 8 * i  # stages differ: a per-stage mix-up would show
    return cfg


def _per_roi_costs(model):
    """[(bbox head FLOPs, mask head FLOPs) on ONE RoI] per stage, each head counted alone."""
    from mmengine.analysis import FlopAnalyzer

    def alone(head, extractor):
        size = extractor.roi_layers[0].output_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        analyzer = FlopAnalyzer(head, torch.randn(1, extractor.out_channels, *size))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            return analyzer.total()

    rh = model.roi_head
    if hasattr(rh, 'num_stages'):
        return [(alone(rh.bbox_head[s], rh.bbox_roi_extractor[s]),
                 alone(rh.mask_head[s], rh.mask_roi_extractor[s])) for s in range(rh.num_stages)]
    return [(alone(rh.bbox_head, rh.bbox_roi_extractor),
             alone(rh.mask_head, rh.mask_roi_extractor))]


@pytest.mark.parametrize('cascade', [False, True])
@pytest.mark.parametrize('rois,mask_rois', [(37, 11), (5, 9)])
def test_roi_part_is_rois_times_per_roi_cost(tmp_path, cascade, rois, mask_rois):
    cfg = _tiny_two_stage(tmp_path, cascade)
    torch.manual_seed(0)
    fixed = model_complexity(cfg, SHAPE, rois=rois, mask_rois=mask_rois)
    assert fixed['roi_mode'] == 'fixed'
    costs = _per_roi_costs(build_model(cfg))
    assert len(costs) == (3 if cascade else 1)
    m = min(mask_rois, rois)  # mask heads run on the first mask_rois of the RoIs
    assert all(b > 0 and k > 0 for b, k in costs)
    expected = sum(rois * b + m * k for b, k in costs)
    assert fixed['by_module']['roi_head'] == expected
    bbox = sum(v for n, v in fixed['by_module'].items() if n.startswith('roi_head.bbox_head')
               and n.count('.') == (2 if cascade else 1))
    assert bbox == rois * sum(b for b, _ in costs)

    # everything before the RoI heads is counted as mmdet 3 counts it (mode='tensor')
    torch.manual_seed(0)
    tensor = model_complexity(cfg, SHAPE)
    assert tensor['roi_mode'] == 'rpn'
    for part in ('backbone', 'neck', 'rpn_head'):
        assert fixed['by_module'][part] == tensor['by_module'][part] > 0
    assert fixed['flops'] == sum(fixed['by_module'][p] for p in
                                 ('backbone', 'neck', 'rpn_head', 'roi_head'))
    assert fixed['params'] == tensor['params']


def test_single_stage_and_segmentor_unchanged():
    from mmengine.config import Config
    for name in ('fcos_wtconvnext-demo_fpn_1xb8-12e_demo.py',
                 'upernet_wtconvnext-demo_1xb8-300i_demo-128x128.py'):
        cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'demo', name))
        a = model_complexity(cfg, (64, 64), rois=1000, mask_rois=100)
        b = model_complexity(cfg, (64, 64))
        assert a['roi_mode'] is None and a['rois'] is None
        assert a['flops'] == b['flops'] > 0 and a['layers'] == b['layers']


def test_get_flops_cli_roi_options(tmp_path):
    cfg = _tiny_two_stage(tmp_path, cascade=True)
    path = str(tmp_path / 'cascade_full.py')
    cfg.dump(path)
    proc = run_tool('analysis/get_flops.py', path, '--shape', *SHAPE, '--rois', 20,
                    '--mask-rois', 4, '--max-depth', 1)
    assert 'bbox heads on 20, mask heads on 4 per stage' in proc.stdout
    torch.manual_seed(0)
    flops = model_complexity(cfg, SHAPE, rois=20, mask_rois=4)['flops']
    assert f'({flops} MACs)' in proc.stdout
    proc = run_tool('analysis/get_flops.py', path, '--shape', *SHAPE, '--rpn-proposals',
                    '--max-depth', 1)
    assert 'RPN proposals (mmdet 3 convention' in proc.stdout
    # defaults 1000 / 100 RoIs; --cfg-options reach the counted model; H x W in that order
    opts = {'model.rpn_head.feat_channels': 16}
    proc = run_tool('analysis/get_flops.py', path, '--shape', *SHAPE, '--max-depth', 1,
                    '--cfg-options', 'model.rpn_head.feat_channels=16')
    assert 'bbox heads on 1000, mask heads on 100 per stage' in proc.stdout
    assert 'Input shape: (96, 128) (padded to (96, 128))' in proc.stdout
    torch.manual_seed(0)
    flops = model_complexity(load_config(path, opts), SHAPE, rois=1000, mask_rois=100)['flops']
    assert f'({flops} MACs)' in proc.stdout


@pytest.mark.slow
def test_cascade_mask_rcnn_convnext_t_matches_paper():
    """ConvNeXt paper, Table 3: Cascade Mask R-CNN ConvNeXt-T, 86M params / 741G FLOPs at
    1280x800 (mmdet 2.x get_flops). The issue asks for both within 1%."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(
        ROOT, 'configs', 'wtconvnext',
        'cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'))
    res = model_complexity(cfg, (1280, 800), rois=1000, mask_rois=100)
    assert res['roi_mode'] == 'fixed'
    assert abs(res['flops'] / 741e9 - 1) < 0.01, res['flops_str']
    assert abs(res['params'] / 86e6 - 1) < 0.01, res['params_str']
