"""Registration in mmengine's root registry and the mmcv / mmdet / mmseg conv-slot contracts."""
import subprocess
import sys

import pytest
import torch
from mmcv.cnn import ConvModule, build_conv_layer
from mmengine.registry import MODELS, DefaultScope

import convzoo_mm
from convzoo_mm import layers
from tests.utils import ROOT

# the conv layers (drop-ins for any mm conv slot) the package exports
CONV_LAYERS = ['WTConv', 'OctaveConv', 'DRConv']


@pytest.mark.parametrize('name', CONV_LAYERS)
def test_layers_registered_in_root(name):
    assert name in layers.__all__
    assert MODELS.module_dict[name] is getattr(layers, name)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('name', CONV_LAYERS)
def test_build_from_child_scope(scope, name):
    """A plain type name resolves from mmdet's and mmseg's registries (children of the root)."""
    child = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        assert child.get(name) is getattr(layers, name)
        conv = build_conv_layer(dict(type=name), 4, 8, 3, padding=1)
    assert isinstance(conv, getattr(layers, name))


@pytest.mark.parametrize('name', CONV_LAYERS)
def test_mmcv_contract(name):
    """build_conv_layer with the full call (in=4, out=8, k=3, dilation=2) gives a layer exposing
    everything ConvModule reads back and the plain conv's output shape."""
    conv = build_conv_layer(dict(type=name), 4, 8, 3, stride=1, padding=2, dilation=2, groups=1,
                            bias=True)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (4, 8, 1)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert conv.dilation == (2, 2) and conv.padding == (2, 2)
    assert conv.transposed is False and tuple(conv.output_padding) == (0, 0)
    x = torch.randn(2, 4, 15, 12)
    reference = torch.nn.Conv2d(4, 8, 3, padding=2, dilation=2)
    assert conv(x).shape == reference(x).shape
    strided = build_conv_layer(dict(type=name), 4, 8, 3, stride=2, padding=1)
    assert strided(x).shape == torch.nn.Conv2d(4, 8, 3, 2, 1)(x).shape


@pytest.mark.parametrize('name', CONV_LAYERS)
def test_conv_module_with_norm_and_act(name):
    module = ConvModule(4, 8, 3, padding=1, conv_cfg=dict(type=name),
                        norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    module.init_weights()
    x = torch.randn(2, 4, 9, 9)
    y = module(x)
    assert y.shape == (2, 8, 9, 9) and (y >= 0).all()
    y.sum().backward()
    assert all(p.grad is not None for p in module.conv.parameters() if p.requires_grad)


def test_conv_module_leaves_wtconv_init_alone():
    """ConvModule skips its Kaiming init for a conv with init_weights (WTConv has no .weight)."""
    module = ConvModule(4, 4, 3, padding=1, conv_cfg=dict(type='WTConv', wt_levels=1))
    before = {k: v.clone() for k, v in module.conv.state_dict().items()}
    module.init_weights()
    for k, v in module.conv.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_published_scales_survive_model_init_cfg():
    """After mmdet ResNet's default init_cfg (Kaiming on Conv2d, constants on norms) and the
    children's init_weights, every WTConv (also those in plain nn.Sequential downsample
    branches, which mmengine does not visit) keeps the published scales 1.0 / 0.1."""
    from mmdet.registry import MODELS as DET
    with DefaultScope.overwrite_default_scope('mmdet'):
        net = DET.build(dict(type='ResNet', depth=18, conv_cfg=dict(type='WTConv', wt_levels=1)))
    net.init_weights()
    wt = [m for m in net.modules() if isinstance(m, layers.WTConv)]
    assert len(wt) == 20
    assert all(torch.all(m.base_scale.weight == 1.0) for m in wt)
    assert all(torch.all(m.wavelet_scale[0].weight == 0.1) for m in wt)


# what keeps the layer's own init (its construction init) under a parent's Conv2d init_cfg
OWN_INIT = {'WTConv': ('base_scale.weight', 'wavelet_scale.0.weight'), 'OctaveConv': ('weight',),
            'DRConv': ('gen_bank',)}
# the nn.Conv2d modules inside the layer that such an init_cfg reaches
INNER_CONVS = {'WTConv': ('base_conv.weight', 'wavelet_convs.0.weight'), 'OctaveConv': (),
               'DRConv': ('guide.weight', 'gen_hidden.weight')}


@pytest.mark.parametrize('name', CONV_LAYERS)
@pytest.mark.parametrize('init_cfg', ['default', None], ids=['xavier', 'none'])
def test_init_in_conv_module_slots(name, init_cfg):
    """As the README says (Initialisation): in ConvModule slots held in lists (an FPN's convs),
    mmengine never calls the layer's init_weights; the parent's init_cfg (FPN: Xavier on
    Conv2d) reaches the nn.Conv2d modules inside the layer, as it reaches a plain conv there,
    and everything else keeps the layer's own init from construction; with init_cfg=None the
    whole layer keeps it."""
    from mmdet.registry import MODELS as DET
    cfg = dict(type='FPN', in_channels=[8, 8], out_channels=8, num_outs=2,
               conv_cfg=dict(type=name))
    if init_cfg is None:
        cfg['init_cfg'] = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        fpn = DET.build(cfg)
    layer = fpn.fpn_convs[0].conv
    assert type(layer).__name__ == name
    with torch.no_grad():  # values no init gives, to see which ones an init rewrites
        for p in layer.parameters():
            p.fill_(7.0)
    fpn.init_weights()
    state = layer.state_dict()
    for key in OWN_INIT[name]:
        assert torch.all(state[key] == 7.0), key
    for key in INNER_CONVS[name]:
        assert torch.all(state[key] == 7.0) == (init_cfg is None), key


def test_wtconv_1x1_in_dcn_slot_gets_the_hosts_init():
    """In mm ResNet's Bottleneck 3x3 slot the 1x1 after the depthwise WTConv gets the host's
    Kaiming init (normal, fan_out, as the dense 3x3 it replaces), not PyTorch's default that
    WTConv.init_weights gives the published depthwise part; the scales stay 1.0 / 0.1."""
    from mmdet.registry import MODELS as DET
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        net = DET.build(dict(type='ResNet', depth=50, dcn=dict(type='WTConv', wt_levels=1),
                             stage_with_dcn=(False, False, False, True)))
    net.init_weights()
    wt = [m for m in net.modules() if isinstance(m, layers.WTConv)]
    assert len(wt) == 3 and all(torch.all(m.wavelet_scale[0].weight == 0.1) for m in wt)
    for m in wt:
        w = m.pointwise.weight           # (512, 512, 1, 1): Kaiming fan_out std sqrt(2 / 512)
        kaiming, default = (2 / w.shape[0]) ** 0.5, (1 / (3 * w.shape[1])) ** 0.5
        assert abs(w.std().item() / kaiming - 1) < 0.02, (w.std().item(), kaiming, default)


def test_mmdet_resnet50_wtconv_in_dcn_slot_forward_backward():
    from mmdet.registry import MODELS as DET
    with DefaultScope.overwrite_default_scope('mmdet'):
        net = DET.build(dict(type='ResNet', depth=50, dcn=dict(type='WTConv', wt_levels=2),
                             stage_with_dcn=(False, True, True, True), init_cfg=None))
    net.init_weights()
    wt = [m for m in net.modules() if isinstance(m, layers.WTConv)]
    assert len(wt) == 4 + 6 + 3   # c3, c4, c5 bottlenecks
    assert all(m.in_channels == m.out_channels for m in wt)
    net.train()
    outs = net(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 24), (1, 512, 8, 12),
                                              (1, 1024, 4, 6), (1, 2048, 2, 3)]
    sum(o.mean() for o in outs).backward()
    assert all(m.wavelet_convs[0].weight.grad is not None for m in wt)


def test_mmseg_dilated_resnet_conv_cfg_and_heads():
    from mmseg.registry import MODELS as SEG
    with DefaultScope.overwrite_default_scope('mmseg'):
        backbone = SEG.build(dict(type='ResNetV1c', depth=18, conv_cfg=dict(type='WTConv'),
                                  dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), init_cfg=None))
        head = SEG.build(dict(type='FCNHead', in_channels=512, channels=16, num_classes=3,
                              conv_cfg=dict(type='WTConv', wt_levels=2)))
    dilated = [m for m in backbone.modules() if isinstance(m, layers.WTConv) and m.dilation[0] > 1]
    assert {m.dilation[0] for m in dilated} == {2, 4}
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert outs[-1].shape == (1, 512, 8, 8)
    logits = head(list(outs))
    assert logits.shape == (1, 3, 8, 8)


def test_fpn_conv_cfg():
    from mmdet.registry import MODELS as DET
    with DefaultScope.overwrite_default_scope('mmdet'):
        fpn = DET.build(dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=3,
                             conv_cfg=dict(type='WTConv')))
    assert sum(isinstance(m, layers.WTConv) for m in fpn.modules()) == 4
    outs = fpn([torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8)])
    assert [o.shape[-1] for o in outs] == [16, 8, 4]


def _python(code):
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_after_mm_and_twice_is_harmless():
    out = _python('import mmdet.models, mmseg.models, importlib\n'
                  'import convzoo_mm, convzoo_mm.layers.wtconv as w\n'
                  'importlib.reload(w); importlib.reload(convzoo_mm)\n'
                  'from mmengine.registry import MODELS\n'
                  'print(MODELS.get("WTConv").__module__)')
    assert out.strip() == 'convzoo_mm.layers.wtconv'


def test_registering_a_foreign_class_under_our_name_fails():
    from convzoo_mm.registry import register
    impostor = type('WTConv', (torch.nn.Module, ), {})
    with pytest.raises(KeyError):
        register(impostor)


def test_core_imports_without_mmdet_and_mmseg():
    out = _python('import sys\n'
                  'for m in ("mmdet", "mmseg", "mmpretrain"): sys.modules[m] = None\n'
                  'import convzoo_mm\n'
                  'from mmengine.registry import MODELS\n'
                  'print(sorted(n for n in convzoo_mm.layers.__all__ if n in MODELS.module_dict))')
    assert 'WTConv' in out



EMPTY_CASES = {
    'WTConv-haar': lambda: layers.WTConv(4, 4, 3, groups=4, wt_levels=2),
    'WTConv-db2': lambda: layers.WTConv(4, 4, 3, groups=4, wt_levels=2, wt_type='db2'),
    'DRConv-m4': lambda: layers.DRConv(4, 6, 3, padding=1, num_regions=4),
    'DRConv-m8': lambda: layers.DRConv(4, 6, 3, stride=2, padding=1),
    'OctaveConv-1x1': lambda: layers.OctaveConv(4, 6, 1, alpha_in=0.5, alpha_out=0.5),
    'OctaveConv-split-1x1': lambda: layers.OctaveConv(4, 6, 1, alpha_in=0.5, alpha_out=0.5,
                                                      split=True),
}


@pytest.mark.parametrize('name', list(EMPTY_CASES))
def test_batch_of_zero_samples_like_a_plain_conv(name):
    """A batch of zero samples (mmdet's mask heads pass one for an image without positive RoIs)
    gives an empty output of the right shape and trains: zero gradients, as nn.Conv2d."""
    torch.manual_seed(0)
    layer = EMPTY_CASES[name]()
    split = name.endswith('split-1x1')

    def batch(n):
        if split:
            return (torch.randn(n, 2, 9, 7, requires_grad=True),
                    torch.randn(n, 2, 5, 4, requires_grad=True))
        return torch.randn(n, 4, 9, 7, requires_grad=True)

    outs = [layer(batch(n)) for n in (1, 0)]
    one, empty = [o if isinstance(o, tuple) else (o,) for o in outs]
    assert [tuple(t.shape) for t in empty] == [(0, *t.shape[1:]) for t in one]
    if split:  # a mismatched pair is still an error, not an empty output
        with pytest.raises(ValueError, match='low branch must be'):
            layer((torch.randn(0, 2, 9, 7), torch.randn(3, 2, 5, 4)))
    x = batch(0)
    y = layer(x)
    sum(t.sum() for t in (y if isinstance(y, tuple) else (y,))).backward()
    for t in (x if isinstance(x, tuple) else (x,)):
        assert t.grad is not None and t.grad.shape == t.shape
    grads = [p.grad for p in layer.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize('name', ['WTConv', 'OctaveConv', 'DRConv'])
def test_meta_device_build_then_load(name):
    """Built on the meta device (shapes only: a forward gives the output shape), then
    materialised with to_empty() or load_state_dict(assign=True): equal to the layer it was
    loaded from. WTConv's wavelet filters are not in the state dict and are rebuilt."""
    kwargs = dict(WTConv=dict(groups=4, wt_levels=2, wt_type='db2'),
                  OctaveConv=dict(padding=1), DRConv=dict(padding=1, num_regions=4))[name]
    cls = getattr(layers, name)
    torch.manual_seed(0)
    ref = cls(4, 4, 3, **kwargs)
    x = torch.randn(2, 4, 9, 10)
    for assign in (False, True):
        with torch.device('meta'):
            layer = cls(4, 4, 3, **kwargs)
            assert layer(torch.empty(2, 4, 9, 10)).shape == ref(x).shape
        if not assign:
            layer.to_empty(device='cpu')
        state = ref.state_dict()
        if name == 'WTConv':  # as the published layer saves them: compared, then dropped
            state.update(wt_filter=ref.wt_filter.clone(), iwt_filter=ref.iwt_filter.clone())
        layer.load_state_dict(state, assign=assign)
        torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)
    # to_empty() then parameters copied in place (as FSDP-style initialisation does: no load)
    with torch.device('meta'):
        layer = cls(4, 4, 3, **kwargs)
    layer.to_empty(device='cpu')
    with torch.no_grad():
        for mine, theirs in zip(layer.parameters(), ref.parameters()):
            mine.copy_(theirs)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)


def _readme_model_examples():
    """Each ``model = dict(...)`` statement of the README's *Use it in your project* block."""
    import ast
    import os
    import re
    text = open(os.path.join(ROOT, 'README.md')).read()
    block = re.search(r'## Use it in your project\s+```python\n(.*?)```', text, re.S).group(1)
    tree = ast.parse(block)
    return [ast.get_source_segment(block, node) for node in tree.body
            if isinstance(node, ast.Assign) and node.targets[0].id == 'model']


def test_readme_examples_build_and_run_on_an_mmdet_r50_detector(tmp_path):
    """Every model override the README shows, put on mmdet's RetinaNet R50-FPN as its own
    config (with the README's custom_imports line), builds and runs: the overrides are complete
    (a backbone swap also gives the neck the new widths), not just valid Python."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.config import Config
    examples = _readme_model_examples()
    assert len(examples) == 4 and any('WTConvNeXt' in e for e in examples), examples
    for i, example in enumerate(examples):
        path = tmp_path / f'example{i}.py'
        path.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
                        "custom_imports = dict(imports=['convzoo_mm'], "
                        "allow_failed_imports=False)\n" + example + '\n')
        cfg = Config.fromfile(str(path))
        with DefaultScope.overwrite_default_scope('mmdet'):
            model = MMDET_MODELS.build(cfg.model).eval()
            with torch.no_grad():
                cls_scores, _ = model(torch.randn(1, 3, 64, 64), mode='tensor')
        assert [tuple(s.shape) for s in cls_scores] == [
            (1, 720, 8, 8), (1, 720, 4, 4), (1, 720, 2, 2), (1, 720, 1, 1), (1, 720, 1, 1)], i
