"""Build mmdet / mmseg models from configs and feed them dummy batches (shared by the tools).

The scope (``default_scope`` of the config: ``mmdet`` or ``mmseg``) picks the package whose
registry builds the model, as mmdet's and mmseg's own tools do.
"""
import importlib
import os
from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..runner import SCOPE_TO_PACKAGE, check_config_path, config_scope

__all__ = ['load_config', 'config_scope', 'build_model', 'backbone_from_config', 'dummy_batch',
           'forward_for_analysis', 'fixed_roi_supported', 'forward_fixed_rois',
           'model_complexity', 'load_weights']

#: the mmdet 2.x ``get_flops`` convention (``forward_dummy``): bbox heads on 1000 proposals per
#: stage, mask heads on the first 100 of them per stage (the FLOPs papers of that era quote)
PAPER_ROIS, PAPER_MASK_ROIS = 1000, 100

SCOPES = tuple(SCOPE_TO_PACKAGE)


def load_config(path: str, cfg_options: Optional[Dict[str, Any]] = None):
    """``Config.fromfile`` with a clear error for a missing or non-config file and
    ``cfg_options`` merged."""
    from mmengine.config import Config
    cfg = Config.fromfile(check_config_path(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_model(cfg, checkpoint: Optional[str] = None, device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in its scope, SyncBN reverted to BN, weights initialised (or loaded
    from ``checkpoint``), in eval mode on ``device``."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    scope = config_scope(cfg)
    importlib.import_module('convzoo_mm')
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model_cfg = cfg.model.copy()
    if checkpoint and 'backbone' in model_cfg:  # no pretrained download when we load weights
        model_cfg.backbone.pop('init_cfg', None)
    model = registry.build(model_cfg)
    model = revert_sync_batchnorm(model)
    if checkpoint:
        load_weights(model, checkpoint)
    elif hasattr(model, 'init_weights'):
        try:
            _quiet_init(model)
        except Exception as e:  # e.g. a Pretrained init_cfg without network access
            print(f'warning: init_weights failed ({type(e).__name__}: {e}); using the '
                  f'constructors\' initialisation')
    model.to(device)
    model.eval()  # not chained: mmdet/mmseg ResNet.train() returns None
    return model


def load_weights(model: nn.Module, checkpoint: str, strip_prefix: Optional[str] = None) -> None:
    """Load ``checkpoint`` into ``model`` like mmengine's ``load_checkpoint`` (non-strict, a DDP
    ``module.`` prefix removed), taking only the entries under ``strip_prefix`` when the
    checkpoint has any (e.g. a detector's ``backbone.`` for its backbone). ValueError when no
    entry names a parameter or buffer of ``model``: a wrong file would otherwise leave the
    model as initialised, with only a warning."""
    from mmengine.runner import CheckpointLoader, load_state_dict
    state = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state = state.get('state_dict', state)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if strip_prefix and any(k.startswith(strip_prefix) for k in state):
        state = {k[len(strip_prefix):]: v for k, v in state.items() if k.startswith(strip_prefix)}
    own = model.state_dict()
    if not any(k in own for k in state):
        raise ValueError(f'{checkpoint}: none of its {len(state)} entries (e.g. '
                         f'{next(iter(state), None)!r}) is a parameter or buffer of '
                         f'{type(model).__name__} (e.g. {next(iter(own), None)!r})')
    load_state_dict(model, state, strict=False)


def _quiet_init(model: nn.Module) -> None:
    """``model.init_weights()`` without mmengine's per-parameter INFO log."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def dummy_batch(model: nn.Module, scope: str, shape: Sequence[int], batch_size: int = 1,
                with_gt: bool = False, num_classes: int = 80, seed: int = 0,
                training: bool = False) -> Dict[str, Any]:
    """A preprocessed batch of random images of size ``shape = (H, W)`` with the metainfo
    mmdet / mmseg expect; ``with_gt`` adds random boxes + masks + labels (mmdet) or a random
    label map (mmseg) so that ``mode='loss'`` runs."""
    h, w = int(shape[0]), int(shape[1])
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.),
                    flip=False, flip_direction=None)
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=meta)
            if with_gt:
                k = 3
                xy = torch.rand(k, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
                wh = (torch.rand(k, 2, generator=gen) * 0.3 + 0.1) * torch.tensor([w, h])
                boxes = torch.cat([xy, xy + wh], 1)
                masks = torch.zeros(k, h, w, dtype=torch.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                    masks[i, y0:y1, x0:x1] = 1
                from mmdet.structures.mask import BitmapMasks
                gt = InstanceData(bboxes=boxes, labels=torch.randint(
                    0, num_classes, (k, ), generator=gen), masks=BitmapMasks(masks.numpy(), h, w))
                sample.gt_instances = gt
        else:
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            if with_gt:
                sample.gt_sem_seg = PixelData(data=torch.randint(
                    0, num_classes, (1, h, w), generator=gen))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training)


def forward_for_analysis(model: nn.Module, data: Dict[str, Any]) -> Tuple[nn.Module, Tuple]:
    """Make ``model(inputs)`` run the network part that mmdet's / mmseg's get_flops count
    (``mode='tensor'``: backbone, neck and heads, no post-processing) with the batch's
    ``data_samples`` bound; returns ``(model, (inputs, ))``."""
    model.forward = partial(type(model).forward, model, data_samples=data['data_samples'],
                            mode='tensor')
    return model, (data['inputs'], )


def fixed_roi_supported(model: nn.Module) -> bool:
    """Whether ``model`` is an mmdet two-stage detector whose RoI head can be counted on fixed
    proposals: a :class:`StandardRoIHead` or :class:`CascadeRoIHead` (or a subclass that keeps
    their ``forward``, i.e. the same tensor-mode computation)."""
    try:
        from mmdet.models.detectors import TwoStageDetector
        from mmdet.models.roi_heads import CascadeRoIHead, StandardRoIHead
    except ImportError:
        return False
    if not isinstance(model, TwoStageDetector) or not getattr(model, 'with_roi_head', False):
        return False
    head = type(model.roi_head)
    return ((issubclass(head, CascadeRoIHead) and head.forward is CascadeRoIHead.forward)
            or (issubclass(head, StandardRoIHead) and head.forward is StandardRoIHead.forward))


def random_proposals(shape: Sequence[int], num: int, seed: int = 0) -> torch.Tensor:
    """``num`` random ``(x1, y1, x2, y2)`` boxes inside an ``(H, W)`` image (seeded). Their
    coordinates do not change the FLOPs; mmdet 2.x used ``torch.randn(1000, 4)``."""
    h, w = float(shape[0]), float(shape[1])
    gen = torch.Generator().manual_seed(seed)
    size = torch.tensor([w, h])
    wh = (torch.rand(num, 2, generator=gen) * 0.3 + 0.02) * size
    xy = torch.rand(num, 2, generator=gen) * (size - wh)
    return torch.cat([xy, xy + wh], 1)


def _fixed_roi_forward(model: nn.Module, inputs: torch.Tensor, proposals: torch.Tensor,
                       num_mask_rois: int) -> Tuple:
    """mmdet 2.x ``TwoStageDetector.forward_dummy`` + ``(Cascade|Standard)RoIHead.forward_dummy``
    on mmdet 3 modules: backbone, neck, ``rpn_head`` forward (no proposal post-processing), then
    every bbox head on all ``proposals`` and every mask head on the first ``num_mask_rois``."""
    from mmdet.models.roi_heads import CascadeRoIHead
    from mmdet.structures.bbox import bbox2roi
    outs = ()
    x = model.extract_feat(inputs)
    if model.with_rpn:
        outs = outs + (model.rpn_head(x), )
    head = model.roi_head
    rois = bbox2roi([proposals.to(inputs.device)])
    mask_rois = rois[:num_mask_rois]
    if isinstance(head, CascadeRoIHead):
        for stage in range(head.num_stages):
            if head.with_bbox:
                res = head._bbox_forward(stage, x, rois)
                outs = outs + (res['cls_score'], res['bbox_pred'])
        for stage in range(head.num_stages if head.with_mask else 0):
            outs = outs + (head._mask_forward(stage, x, mask_rois)['mask_preds'], )
    else:
        if head.with_bbox:
            res = head._bbox_forward(x, rois)
            outs = outs + (res['cls_score'], res['bbox_pred'])
        if head.with_mask:
            outs = outs + (head._mask_forward(x, mask_rois)['mask_preds'], )
    return outs


def forward_fixed_rois(model: nn.Module, data: Dict[str, Any], rois: int = PAPER_ROIS,
                       mask_rois: int = PAPER_MASK_ROIS, seed: int = 0
                       ) -> Tuple[nn.Module, Tuple]:
    """Like :func:`forward_for_analysis`, but ``model(inputs)`` runs the two-stage detector the
    way mmdet 2.x's ``forward_dummy`` did (the convention of the FLOPs in the papers of that
    era): RoI heads on ``rois`` fixed random proposals instead of the RPN's output, bbox heads on
    all of them (every cascade stage), mask heads on the first ``min(mask_rois, rois)`` (every
    stage). Needs :func:`fixed_roi_supported` and a batch of one image."""
    if not fixed_roi_supported(model):
        raise ValueError(f'{type(model).__name__} with '
                         f'{type(getattr(model, "roi_head", None)).__name__}: fixed-RoI counting '
                         'needs a two-stage detector with a Standard/Cascade RoI head')
    if rois < 1 or mask_rois < 0:
        raise ValueError(f'rois must be >= 1 and mask_rois >= 0, got {rois}, {mask_rois}')
    inputs = data['inputs']
    if inputs.shape[0] != 1:
        raise ValueError('fixed-RoI counting takes a batch of one image')
    proposals = random_proposals(inputs.shape[-2:], rois, seed)
    model.forward = partial(_fixed_roi_forward, model, proposals=proposals,
                            num_mask_rois=min(mask_rois, rois))
    return model, (inputs, )


def model_complexity(cfg, shape: Sequence[int], max_depth: int = 3,
                     checkpoint: Optional[str] = None, rois: Optional[int] = None,
                     mask_rois: int = PAPER_MASK_ROIS) -> Dict[str, Any]:
    """FLOPs/params of the detector or segmentor of ``cfg`` for one ``(H, W)`` image, exact for
    convzoo layers (:func:`convzoo_mm.analysis.flops.get_model_complexity`).

    ``rois=None`` counts like mmdet 3's get_flops (``mode='tensor'``: a two-stage detector's RoI
    heads see whatever the RPN proposes, mask heads included). ``rois=N`` counts two-stage
    detectors with a Standard/Cascade RoI head like mmdet 2.x (:func:`forward_fixed_rois`: bbox
    heads on ``N`` fixed proposals and mask heads on ``min(mask_rois, N)`` per stage; the papers'
    convention is ``N=1000, mask_rois=100``); other models ignore it. ``result['roi_mode']`` says
    which count it is: ``'fixed'``, ``'rpn'`` (two-stage, mmdet 3) or ``None`` (no RoI head)."""
    from .flops import get_model_complexity
    scope = config_scope(cfg)
    model = build_model(cfg, checkpoint)
    with torch.no_grad():
        data = dummy_batch(model, scope, shape)
    roi_mode = None
    if scope == 'mmdet' and getattr(model, 'with_roi_head', False):
        roi_mode = 'rpn'
        if rois is not None:
            if fixed_roi_supported(model):
                roi_mode = 'fixed'
            else:
                print(f'warning: {type(model.roi_head).__name__} cannot be counted on fixed RoIs; '
                      'counting the RPN proposals (mmdet 3 convention)')
    if roi_mode == 'fixed':
        model, inputs = forward_fixed_rois(model, data, rois, mask_rois)
    else:
        model, inputs = forward_for_analysis(model, data)
    result = get_model_complexity(model, inputs, max_depth=max_depth)
    result['input_shape'] = tuple(data['inputs'].shape[-2:])
    result['scope'] = scope
    result['roi_mode'] = roi_mode
    result['rois'] = (rois, min(mask_rois, rois)) if roi_mode == 'fixed' else None
    del model.forward
    return result


def build_backbone_spec(spec: str, cfg_options: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Build a backbone from an inline spec ``"dict(type='WTConvNeXt', arch='tiny')"`` (a
    ``_scope_`` key picks mmdet/mmseg, default mmdet), initialised, in eval mode.
    ``cfg_options`` as for a config, with keys under ``model.backbone.``."""
    import ast

    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    def value(node):  # literals and nested dict(...) calls, nothing else
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict' \
                and not node.args:
            return {kw.arg: value(kw.value) for kw in node.keywords}
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        return ast.literal_eval(node)

    tree = ast.parse(spec, mode='eval').body
    if not (isinstance(tree, ast.Call) and getattr(tree.func, 'id', None) == 'dict'):
        raise ValueError(f"a backbone spec must look like dict(type='...', ...), got {spec!r}")
    cfg = value(tree)
    if cfg_options:
        wrong = [k for k in cfg_options if not k.startswith('model.backbone.')]
        if wrong:
            raise ValueError(f'with an inline backbone spec, --cfg-options keys must start with '
                             f'model.backbone., got {wrong}')
        merged = Config(dict(model=dict(backbone=cfg)))
        merged.merge_from_dict(cfg_options)
        cfg = merged.model.backbone.to_dict()
    scope = cfg.pop('_scope_', 'mmdet')
    if scope not in SCOPES:
        raise ValueError(f'_scope_ must be one of {list(SCOPES)}, got {scope!r}')
    importlib.import_module('convzoo_mm')
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    model = importlib.import_module(f'{scope}.registry').MODELS.build(cfg)
    if hasattr(model, 'init_weights'):
        _quiet_init(model)
    model.eval()
    return model


def backbone_from_config(path: str, checkpoint: Optional[str] = None,
                         cfg_options: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The backbone of the detector/segmentor of config ``path`` (weights from ``checkpoint``
    if given, else its initialisation), in eval mode. ``path`` may also be an inline backbone
    spec ``"dict(type=..., ...)"`` (see :func:`build_backbone_spec`)."""
    if not os.path.isfile(path) and path.strip().startswith('dict('):
        model = build_backbone_spec(path, cfg_options)
        if checkpoint:  # a backbone's own checkpoint, or a detector's/segmentor's
            load_weights(model, checkpoint, strip_prefix='backbone.')
        return model
    model = build_model(load_config(path, cfg_options), checkpoint)
    return model.backbone if hasattr(model, 'backbone') else model
