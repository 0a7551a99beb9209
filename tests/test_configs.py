"""Every config under configs/ (except ``_base_`` folders) loads, imports convzoo_mm, and builds
its model in its own default scope; the demo configs also run one training step (loss forward and
backward) on a small random batch. Shared by all engineers: configs added anywhere under configs/
are picked up automatically."""
import glob
import os

import pytest
import torch

from tests.utils import ROOT

CONFIG_DIR = os.path.join(ROOT, 'configs')


def _configs():
    paths = glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    rel = [os.path.relpath(p, CONFIG_DIR) for p in paths]
    return sorted(p for p in rel if '_base_' not in p.split(os.sep))


ALL = _configs()
DEMO = [p for p in ALL if p.split(os.sep)[0] == 'demo']
FULL = [p for p in ALL if p not in DEMO]


def load(rel):
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, rel))
    scope = cfg.get('default_scope')
    assert scope in ('mmdet', 'mmseg'), f'{rel}: default_scope {scope!r}'
    imports = cfg.get('custom_imports', {})
    assert 'convzoo_mm' in imports.get('imports', []), f'{rel}: custom_imports lacks convzoo_mm'
    assert imports.get('allow_failed_imports') is False
    import_modules_from_strings(**imports)
    init_default_scope(scope)
    return cfg, scope


def build_model(cfg, scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


def test_there_are_configs():
    assert FULL, 'no configs found under configs/'


def test_config_names_are_unique():
    names = [os.path.basename(p) for p in ALL]
    assert len(names) == len(set(names))


@pytest.mark.parametrize('rel', FULL)
def test_config_builds(rel):
    cfg, scope = load(rel)
    model = build_model(cfg, scope)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 0
    # data roots follow mm's standard layout
    roots = {d.get('dataset', {}).get('data_root') for d in (
        cfg.get('train_dataloader', {}), cfg.get('val_dataloader', {}))} - {None}
    for root in roots:
        assert root.rstrip('/') in ('data/coco', 'data/ade/ADEChallengeData2016', 'data/cityscapes',
                                    'data/VOCdevkit/VOC2012'), f'{rel}: data_root {root}'


def _det_batch(num_classes, size=(3, 96, 128)):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[size, size], num_items=[3, 2],
                          num_classes=num_classes, with_mask=True)


def _seg_batch(num_classes, size=(64, 64)):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 255, (3, *size), generator=g, dtype=torch.uint8))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *size), generator=g))
        s.set_metainfo(dict(img_shape=size, ori_shape=size, pad_shape=size))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _num_classes(cfg, scope):
    m = cfg.model
    if scope == 'mmseg':
        return m.decode_head.num_classes
    head = m.get('roi_head', {}).get('bbox_head', m.get('bbox_head', {}))
    if isinstance(head, list):
        head = head[0]
    return head.get('num_classes', 80)


@pytest.mark.parametrize('rel', DEMO)
def test_demo_config_trains_one_step(rel):
    torch.manual_seed(0)
    cfg, scope = load(rel)
    model = build_model(cfg, scope)
    if 'Pretrained' not in str(cfg.model):   # demo configs must not need downloads
        model.init_weights()
    model.train()
    data = _det_batch(_num_classes(cfg, scope)) if scope == 'mmdet' else \
        _seg_batch(_num_classes(cfg, scope))
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters()
             if n.startswith('backbone.') and p.requires_grad]
    assert grads and all(g is not None for g in grads), 'backbone parameters without gradient'
    assert any(g.abs().sum() > 0 for g in grads)
