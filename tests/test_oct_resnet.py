"""Oct-ResNet: equality with mmdet/mmseg ResNet at alpha 0, plain checkpoints, shapes at detection
and segmentation sizes, FLOPs against the paper, mm options, configs and a demo training run.

Oracles: mmdet ``ResNet`` / mmseg ``ResNetV1c`` (same weights), ``FlopCounterMode`` (convs the
forward actually runs), the paper's GFLOPs, a bottleneck re-composed from the plain reference
functions of test_octconv.py.
"""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip('mmcv.cnn')

from convzoo_mm.backbones.oct_resnet import OctBottleneck, OctResNet, OctResNetV1c  # noqa: E402
from convzoo_mm.layers.octconv import OctaveConv  # noqa: E402
from tests.utils import ROOT, train_demo_briefly  # noqa: E402

THIN = dict(stem_channels=16, base_channels=16)
PAPER_GFLOPS = {0.0: 4.1, 0.125: 3.6, 0.25: 3.1, 0.5: 2.4, 0.75: 1.9}


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _ceil_sizes(h, w, n):
    sizes = []
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


# ------------------------------------------------------------------ alpha 0 == plain ResNet
@pytest.mark.parametrize('style', ['pytorch', 'caffe'])
@pytest.mark.parametrize('widths', [THIN, dict(stem_channels=64, base_channels=16,
                                               strides=(2, 2, 2, 2))],
                         ids=['thin', 'strided-first-stage-same-width'])
def test_alpha0_equals_mmdet_resnet(style, widths):
    """Also a first stage of stride 2 whose input already has its output width (64 = 4 x 16):
    its first block still needs the projection shortcut."""
    mmdet_bb = pytest.importorskip('mmdet.models.backbones')
    torch.manual_seed(0)
    ref = mmdet_bb.ResNet(depth=50, style=style, norm_eval=False, **widths)
    oct_ = OctResNet(depth=50, alpha=0.0, style=style, norm_eval=False, **widths)
    _randomize_bn(ref)
    oct_.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 61, 50)
    for mode in ('train', 'eval'):
        getattr(ref, mode)(), getattr(oct_, mode)()
        for a, b in zip(ref(x), oct_(x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_alpha0_v1c_equals_mmseg_resnetv1c_dilated():
    mmseg_bb = pytest.importorskip('mmseg.models.backbones')
    torch.manual_seed(0)
    kw = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True, **THIN)
    ref = mmseg_bb.ResNetV1c(depth=50, **kw)
    oct_ = OctResNetV1c(depth=50, alpha=0.0, **kw)
    ref.eval(), oct_.eval()  # (mmseg's ResNet.train returns None)
    _randomize_bn(ref)
    oct_.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 45, 38)
    for a, b in zip(ref(x), oct_(x)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ plain checkpoints
def test_torchvision_format_checkpoint_loads(tmp_path):
    mmdet_bb = pytest.importorskip('mmdet.models.backbones')
    torch.manual_seed(0)
    plain = mmdet_bb.ResNet(depth=50)
    _randomize_bn(plain)
    sd = dict(plain.state_dict())
    assert 'conv1.weight' in sd and 'layer1.0.downsample.0.weight' in sd
    sd['fc.weight'], sd['fc.bias'] = torch.randn(1000, 2048), torch.randn(1000)  # torchvision
    path = tmp_path / 'resnet50_tv.pth'
    torch.save(sd, path)
    for alpha in (0.5, 0.125):
        m = OctResNet(depth=50, alpha=alpha,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        own = m.state_dict()
        assert set(own) == set(sd) - {'fc.weight', 'fc.bias'}  # no missing, only fc unexpected
        assert all(own[k].shape == sd[k].shape for k in own)
        m.init_weights()
        for k, v in m.state_dict().items():
            assert torch.equal(v, sd[k]), k


def test_open_mmlab_v1c_format_checkpoint_loads(tmp_path):
    mmseg_bb = pytest.importorskip('mmseg.models.backbones')
    torch.manual_seed(0)
    plain = mmseg_bb.ResNetV1c(depth=50, **THIN)
    _randomize_bn(plain)
    sd = plain.state_dict()
    assert 'stem.0.weight' in sd and 'stem.7.running_var' in sd
    path = tmp_path / 'resnet50_v1c.pth'
    torch.save({'state_dict': sd, 'meta': {}}, path)
    m = OctResNetV1c(depth=50, alpha=0.5, pretrained=str(path), **THIN)
    assert set(m.state_dict()) == set(sd)
    m.init_weights()
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k


# ------------------------------------------------------------------ shapes, gradients
@pytest.mark.parametrize('cls,size', [(OctResNet, (401, 667)), (OctResNetV1c, (512, 683)),
                                      (OctResNet, (57, 93))])
def test_forward_backward_shapes(cls, size):
    """Detection-like (800x1333 halved: odd sizes in every stage) and mmseg whole-image 683x512
    inputs; each output is one tensor with the plain widths at strides 4/8/16/32."""
    torch.manual_seed(0)
    m = cls(depth=50, alpha=0.5, norm_eval=False, **THIN).train()
    x = torch.randn(1, 3, *size)
    outs = m(x)
    sizes = _ceil_sizes(*size, 5)[1:]
    assert [tuple(o.shape) for o in outs] == [
        (1, 64 * 2**i, *sizes[i]) for i in range(4)]
    sum(o.mean() for o in outs).backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_bottleneck_matches_reference_composition():
    """One stride-2 bottleneck with a projection shortcut (alpha 0.25 -> 0.5), re-composed from
    the four-path reference and per-branch F.batch_norm."""
    from tests.test_octconv import ref_octave, ref_pool
    torch.manual_seed(0)
    from convzoo_mm.backbones.oct_resnet import _OctDownsample
    from convzoo_mm.backbones.oct_resnet import _build_norm
    down = _OctDownsample(OctaveConv(32, 64, 1, stride=2, bias=False, alpha_in=0.25,
                                     alpha_out=0.5, split=True),
                          _build_norm(dict(type='BN'), 64)[1])
    blk = OctBottleneck(32, 16, stride=2, downsample=down, alpha_in=0.25, alpha=0.5).double()
    _randomize_bn(blk)
    blk.train()
    xh, xl = torch.randn(2, 24, 15, 12, dtype=torch.double), torch.randn(
        2, 8, 8, 6, dtype=torch.double)

    def conv(c, h, l):
        return ref_octave(h, l, c.weight, None, c.out_split[0], c.stride[0], c.padding[0],
                          c.dilation[0], 1, False)

    def bn(norm, h, l):
        c = h.shape[1]
        return (F.batch_norm(h, None, None, norm.weight[:c], norm.bias[:c], True, 0., norm.eps),
                F.batch_norm(l, None, None, norm.weight[c:], norm.bias[c:], True, 0., norm.eps))

    h, l = bn(blk.bn1, *conv(blk.conv1, xh, xl))
    h, l = bn(blk.bn2, *conv(blk.conv2, h.relu(), l.relu()))
    h, l = bn(blk.bn3, *conv(blk.conv3, h.relu(), l.relu()))
    sh, sl = bn(down[1], *conv(down[0], xh, xl))
    yh, yl = blk((xh, xl))
    torch.testing.assert_close(yh, (h + sh).relu())
    torch.testing.assert_close(yl, (l + sl).relu())
    assert ref_pool  # the reference pooling is the one used inside ref_octave


# ------------------------------------------------------------------ FLOPs vs the paper
def test_flops_match_paper_within_3_percent():
    """Oct-R50 at 224x224 (ImageNet classifier: backbone + 2048x1000 fc). Counted twice: the sum
    of OctaveConv.count_flops + the plain stem conv, and FlopCounterMode over the whole forward;
    both must agree and be within 3% of the paper's 4.1/3.6/3.1/2.4/1.9 GFLOPs."""
    fc = 2048 * 1000
    for alpha, paper in PAPER_GFLOPS.items():
        m = OctResNet(depth=50, alpha=alpha).eval()
        shapes = []
        hooks = [mod.register_forward_pre_hook(
            lambda mod, inp: shapes.append((mod, inp[0][0].shape if isinstance(inp[0], tuple)
                                            else inp[0].shape)))
            for mod in m.modules() if isinstance(mod, OctaveConv)]
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            m(torch.randn(1, 3, 224, 224))
        for h in hooks:
            h.remove()
        executed = counter.get_total_flops() // 2 + fc
        stem = m.conv1.weight.numel() * 112 * 112
        counted = sum(mod.count_flops(tuple(s)) for mod, s in shapes) + stem + fc
        assert counted == executed
        assert abs(counted / 1e9 - paper) / paper < 0.03, (alpha, counted / 1e9, paper)


def test_layer_aware_flop_analyzer_agrees():
    """The shared analysis tool (mmengine FlopAnalyzer + count_flops) on Oct-R50 alpha 0.5."""
    flops_mod = pytest.importorskip('convzoo_mm.analysis.flops')
    m = OctResNet(depth=50, alpha=0.5, **THIN).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x)
    convs = counter.get_flop_counts()['Global']
    # convolutions, and the eager fast path's 1x1 convolutions, which run as (b)mm GEMMs
    conv_macs = sum(v for k, v in convs.items()
                    if any(op in str(k) for op in ('convolution', 'mm'))) // 2
    analyzer = flops_mod.LayerAwareFlopAnalyzer(m, (x,))
    by_op = analyzer.by_operator()
    assert by_op.get('OctaveConv', 0) + by_op.get('conv', 0) == conv_macs


# ------------------------------------------------------------------ mm options
def test_frozen_stages_norm_eval_and_with_cp():
    torch.manual_seed(0)
    m = OctResNet(depth=50, alpha=0.5, frozen_stages=1, norm_eval=True, **THIN)
    m.train()
    frozen = [m.conv1, m.bn1, m.layer1]
    assert all(not p.requires_grad for f in frozen for p in f.parameters())
    assert all(p.requires_grad for p in m.layer2.parameters())
    assert all(not b.training for b in m.modules()
               if isinstance(b, torch.nn.modules.batchnorm._BatchNorm))
    x = torch.randn(1, 3, 64, 72)
    cp = OctResNet(depth=50, alpha=0.5, with_cp=True, norm_eval=False, **THIN).train()
    plain = OctResNet(depth=50, alpha=0.5, with_cp=False, norm_eval=False, **THIN).train()
    plain.load_state_dict(cp.state_dict())
    for net in (cp, plain):
        sum(o.sum() for o in net(x)).backward()
    for (n, a), b in zip(cp.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=n)


def test_random_init_mirrors_mm():
    m = OctResNet(depth=50, alpha=0.5, **THIN)
    m.init_weights()
    assert all(torch.count_nonzero(b.norm3.weight) == 0 for b in m.modules()
               if isinstance(b, OctBottleneck))   # zero_init_residual
    w = m.layer3[1].conv2.weight
    assert abs(w.std().item() - math.sqrt(2 / (w.shape[0] * 9))) < 0.1 * math.sqrt(
        2 / (w.shape[0] * 9))  # kaiming normal, fan_out


@pytest.mark.parametrize('kwargs,word', [
    (dict(alpha=1.0), 'alpha'), (dict(alpha=(0.5, 0.5)), 'alpha'), (dict(depth=34), 'depth'),
    (dict(alpha=0.01), 'alpha'), (dict(out_indices=(4,)), 'out_indices'),
    (dict(strides=(1, 3, 2, 2)), 'strides'), (dict(style='tf'), 'style'),
    (dict(pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='y')), 'pretrained')])
def test_bad_config_values(kwargs, word):
    args = dict(depth=50, **THIN)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        OctResNet(**args)


# ------------------------------------------------------------------ configs and training
OCT_CONFIGS = {
    'octconv/mask-rcnn_r50-octconv-a0.125_fpn_1x_coco.py': ('OctResNet', 0.125),
    'octconv/mask-rcnn_r50-octconv-a0.25_fpn_1x_coco.py': ('OctResNet', 0.25),
    'octconv/mask-rcnn_r50-octconv-a0.5_fpn_1x_coco.py': ('OctResNet', 0.5),
    'octconv/mask-rcnn_r50_fpn_1x_coco.py': ('ResNet', None),
    'octconv/faster-rcnn_r50-octconv-a0.5_fpn_1x_coco.py': ('OctResNet', 0.5),
    'octconv/faster-rcnn_r50_fpn_1x_coco.py': ('ResNet', None),
    'octconv/upernet_r50-octconv-a0.25_4xb4-160k_ade20k-512x512.py': ('OctResNetV1c', 0.25),
    'octconv/upernet_r50-octconv-a0.5_4xb4-160k_ade20k-512x512.py': ('OctResNetV1c', 0.5),
    'octconv/upernet_r50_4xb4-160k_ade20k-512x512.py': ('ResNetV1c', None),
    'demo/fcos_r50-thin-octconv-a0.5_fpn_1xb8-12e_demo.py': ('OctResNet', 0.5),
    'demo/upernet_r50-thin-octconv-a0.5_1xb8-300i_demo-128x128.py': ('OctResNetV1c', 0.5),
}


@pytest.mark.parametrize('rel', sorted(OCT_CONFIGS))
def test_config_backbone(rel):
    """Each config builds its backbone with the intended type/alpha and pretrained source; the
    Oct backbones take the plain baseline's state dict unchanged."""
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    import convzoo_mm  # noqa: F401
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', rel))
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        import mmdet.models  # noqa: F401
    else:
        import mmseg.models  # noqa: F401
    bb = cfg.model.backbone.copy()
    want_type, alpha = OCT_CONFIGS[rel]
    assert bb.type == want_type
    if rel.startswith('octconv/'):
        ckpt = str(cfg.model.get('pretrained') or bb.get('init_cfg', {}).get('checkpoint'))
        assert ckpt == ('torchvision://resnet50' if cfg.default_scope == 'mmdet'
                        else 'open-mmlab://resnet50_v1c')
    bb.pop('init_cfg', None)
    bb.pop('pretrained', None)
    if bb.get('norm_cfg', {}).get('type') == 'SyncBN':
        bb.norm_cfg = dict(type='BN', requires_grad=True)
    from mmengine.registry import DefaultScope
    registry = MODELS
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS as registry
    else:
        from mmseg.registry import MODELS as registry
    assert DefaultScope.get_current_instance().scope_name == cfg.default_scope
    model = registry.build(bb)
    if alpha is not None:
        assert isinstance(model, OctResNet) and model.alphas == (alpha, alpha, alpha, 0.0)
        plain_cfg = dict(bb, type='ResNetV1c' if want_type == 'OctResNetV1c' else 'ResNet')
        plain_cfg.pop('alpha')
        plain = registry.build(plain_cfg)
        model.load_state_dict(plain.state_dict(), strict=True)


@pytest.mark.slow
def test_demo_config_trains_through_mm_tools(tmp_path):
    """mmdet's own tools/train.py on the generated data, 2 iterations: finite losses, the
    backbone's weights move, and the saved checkpoint has exactly the plain ResNet's keys."""
    pytest.importorskip('mmdet')
    from convzoo_mm.demo import make_demo_data
    make_demo_data(os.path.join(ROOT, 'data', 'demo'))
    work = tmp_path / 'work'
    sds = train_demo_briefly('configs/demo/fcos_r50-thin-octconv-a0.5_fpn_1xb8-12e_demo.py', work)
    from mmdet.models.backbones import ResNet
    plain_keys = {f'backbone.{k}' for k in ResNet(50, **THIN).state_dict()}
    assert {k for k in sds[0] if k.startswith('backbone.')} == plain_keys
    assert not torch.equal(sds[0]['backbone.layer2.0.conv2.weight'],
                           sds[1]['backbone.layer2.0.conv2.weight'])
    logs = [json.loads(line) for path in work.rglob('scalars.json') for line in open(path)]
    losses = [rec['loss'] for rec in logs if 'loss' in rec]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
