"""Bad layer options in real configs fail when the model is built (not in a forward pass), with
the option's name and what is allowed in the message; a checkpoint of another layer or other
options is explained when it is loaded.

Models are the demo configs (configs/demo) built through mmengine's Config and the mmdet / mmseg
MODELS registries, as tools/train.py builds them. (DRConv's config checks: tests/test_drconv.py.)
"""
import copy
import functools
import os
import re
import warnings

import pytest
import torch

from tests.utils import ROOT

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

DET_WT = 'configs/demo/fcos_r50-thin-wtconv-c3-c5_fpn_1xb8-12e_demo.py'
SEG_WT = 'configs/demo/upernet_r50-thin-wtconv-c3-c5_1xb8-300i_demo-128x128.py'
DET_OCT = 'configs/demo/fcos_r50-thin-octconv-a0.5_fpn_1xb8-12e_demo.py'
SEG_OCT = 'configs/demo/upernet_r50-thin-octconv-a0.5_1xb8-300i_demo-128x128.py'
DET_WTX = 'configs/demo/fcos_wtconvnext-demo_fpn_1xb8-12e_demo.py'
SEG_WTX = 'configs/demo/upernet_wtconvnext-demo_1xb8-300i_demo-128x128.py'
DET_PLAIN = 'configs/demo/fcos_r50-thin_fpn_1xb8-12e_demo.py'
DEMO_ARCH = dict(depths=(1, 1, 2, 1), channels=(64, 128, 256, 512))


@functools.lru_cache(maxsize=None)
def _config(rel):
    from mmengine.config import Config
    return Config.fromfile(os.path.join(ROOT, rel))


def build(rel, **backbone):
    """Build the model of config ``rel`` with ``model.backbone.<key>`` set (whole values: a
    ``dcn`` dict replaces the config's) in the config's default scope."""
    from importlib import import_module

    from mmengine.registry import init_default_scope

    import convzoo_mm  # noqa: F401
    cfg = copy.deepcopy(_config(rel))
    for key, value in backbone.items():
        cfg.model.backbone[key] = value
    init_default_scope(cfg.default_scope)
    return import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)


def wt(**kw):
    return dict(type='WTConv', **kw)


def oct_(**kw):
    return dict(type='OctaveConv', **kw)


# (backbone overrides, error, words that the message must contain): the option and what is
# allowed. The dcn slot of mmdet's/mmseg's ResNet calls the layer with (in_channels,
# out_channels, kernel_size=3, stride=, padding=dilation, dilation=, bias=False) and the dict.
RESNET_SLOT = [
    (dict(dcn=wt(wt_levels=-1)), ValueError, ['wt_levels', '>= 0', '-1']),
    (dict(dcn=wt(wt_levels=1.5)), ValueError, ['wt_levels', 'int']),
    (dict(dcn=wt(wt_type='bior2.2')), ValueError, ["wt_type='bior2.2'", 'orthogonal', "'db1'"]),
    (dict(dcn=wt(wt_type='haar2')), ValueError, ["wt_type='haar2'", 'pywt.wavelist']),
    (dict(dcn=wt(wt_level=2)), TypeError, ["'wt_level'", "did you mean 'wt_levels'",
                                           'options are']),
    (dict(dcn=wt(groups=3)), ValueError, ['groups=3', 'in_channels=32']),
    # the slot passes kernel_size itself: Python's own message, which names the key
    (dict(dcn=wt(kernel_size=0)), TypeError, ['kernel_size']),
    (dict(dcn=oct_(alpha_in=1.5)), ValueError, ['alpha_in', '[0.0, 1.0)', '1.5']),
    (dict(dcn=oct_(alpha_out=0.01)), ValueError, ['alpha_out=0.01', '32 channels', 'low=0',
                                                  'alpha_out in [0.03125, 0.9688]']),
    (dict(dcn=oct_(alpha=0.5)), TypeError, ["'alpha'", "did you mean 'alpha_in'"]),
    (dict(dcn=oct_(groups=4, alpha_in=0.25, alpha_out=0.25)), None, []),  # 32 -> 24 + 8: fits
    (dict(dcn=oct_(groups=16, alpha_in=0.25, alpha_out=0.25)), ValueError,
     ['groups=16', 'alpha_in=0.25', 'high=24, low=8']),
]
OCT_RESNET = [
    (dict(alpha=1.5), ValueError, ['alpha', '[0.0, 1.0)', '1.5']),
    (dict(alpha=0.03), ValueError, ['alpha=0.03', 'stage 1', 'high=16, low=0',
                                    'alpha in [0.0625, 0.9375]']),
    (dict(alpha=(0.5, 0.5, 0.005, 0)), ValueError, ['alpha[2]=0.005', 'stage 3']),
    (dict(alpha=(0.5, 0.5)), ValueError, ['alpha', 'num_stages=4']),
    (dict(alpah=0.5), TypeError, ["'alpah'", "did you mean 'alpha'"]),
]
WTCONVNEXT = [
    (dict(kernel_size=0), ValueError, ['kernel_size', '>= 1', '0']),
    (dict(kernel_size=4), ValueError, ['kernel_size', 'odd']),
    (dict(wt_type='bior2.2'), ValueError, ["wt_type='bior2.2'", 'orthogonal']),
    (dict(arch=dict(DEMO_ARCH, wt_levels=(-1, 2, 2, 1))), ValueError, ['wt_levels[0]', '>= 0']),
    (dict(arch=dict(DEMO_ARCH, wt_levels=(3, 2, 2))), ValueError, ['wt_levels', '4 entries']),
    # an arch dict's levels would silently win over wt_levels: both given is an error
    (dict(wt_levels=(1, 1, 1, 1)), ValueError, ['wt_levels=(1, 1, 1, 1)', "arch['wt_levels']"]),
    (dict(wt_level=(1, 1, 1, 1)), TypeError, ["'wt_level'", "did you mean 'wt_levels'"]),
]
CASES = ([(c, *case) for c in (DET_WT, SEG_WT) for case in RESNET_SLOT]
         + [(c, *case) for c in (DET_OCT, SEG_OCT) for case in OCT_RESNET]
         + [(c, *case) for c in (DET_WTX, SEG_WTX) for case in WTCONVNEXT])


@pytest.mark.parametrize('rel,backbone,error,words', CASES,
                         ids=[f'{os.path.basename(c[0])[:14]}-{c[1]}' for c in CASES])
def test_bad_option_fails_at_build_naming_it(rel, backbone, error, words):
    if error is None:
        build(rel, **backbone)
        return
    with pytest.raises(error) as info:
        build(rel, **backbone)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize('rel', [DET_WT, SEG_WT, DET_OCT, SEG_OCT, DET_WTX, SEG_WTX])
def test_demo_configs_build_unchanged(rel):
    """The control of the cases above: the configs themselves build."""
    build(rel)


# ----------------------------------------------------------------------------- checkpoints
def _save(model, path):
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def _load(model, path, strict=False):
    """mmengine's load_checkpoint (what ``load_from`` and ``init_cfg=Pretrained`` run); returns
    the text of mmengine's warning and of our layers' warnings."""
    import io
    from contextlib import redirect_stdout

    from mmengine.runner import load_checkpoint
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(out):
        warnings.simplefilter('always')
        load_checkpoint(model, path, map_location='cpu', strict=strict)
    return out.getvalue(), [str(w.message) for w in caught
                            if type(w.message).__name__ == 'StateDictMismatchWarning']


def test_plain_conv_checkpoint_in_the_wtconv_slot_is_explained(tmp_path):
    """load_from a plain-R50 checkpoint into the WTConv model: mmengine warns (strict=False, as
    for load_from) with the full key names; each WTConv layer says that the checkpoint holds
    another layer's entries there and where to look."""
    path = _save(build(DET_PLAIN), tmp_path / 'plain.pth')
    model = build(DET_WT)
    before = model.backbone.layer2[0].conv2.base_conv.weight.clone()
    log, ours = _load(model, path)
    assert 'unexpected key in source state_dict: ' in log
    assert 'backbone.layer2.0.conv2.weight' in log
    assert 'backbone.layer2.0.conv2.base_conv.weight' in log  # missing, full name
    assert len(ours) == 4 + 6 + 3  # one per WTConv (stages c3-c5 of the thin R50)
    msg = next(m for m in ours if m.startswith('backbone.layer2.0.conv2 (WTConv)'))
    for word in ('missing: base_conv.weight', 'unexpected: weight',
                 'holds weight (32, 32, 3, 3)', "not a WTConv's entries", 'model.backbone.dcn'):
        assert word in msg, (word, msg)
    assert torch.equal(model.backbone.layer2[0].conv2.base_conv.weight, before)  # untouched
    # the layers the two models share did load
    plain = torch.load(path, weights_only=True)['state_dict']
    assert torch.equal(model.backbone.layer1[0].conv2.weight,
                       plain['backbone.layer1.0.conv2.weight'])


def test_other_wt_levels_checkpoint_names_wt_levels(tmp_path):
    path = _save(build(DET_WT), tmp_path / 'wt2.pth')  # wt_levels=2
    log, ours = _load(build(DET_WT, dcn=wt(wt_levels=3)), path)
    assert 'backbone.layer3.1.conv2.wavelet_convs.2.weight' in log
    msg = next(m for m in ours if m.startswith('backbone.layer3.1.conv2 (WTConv)'))
    assert 'missing: wavelet_convs.2.weight, wavelet_scale.2.weight' in msg
    assert 'saved with wt_levels=2, this layer was built with wt_levels=3' in msg
    # strict: mmengine raises with the keys; the explanation is still given
    from mmengine.runner import load_checkpoint

    from convzoo_mm.layers.state_dict import StateDictMismatchWarning
    with pytest.raises(RuntimeError, match=re.escape(
            'unexpected key in source state_dict: backbone.layer2.0.conv2.wavelet_convs.1')), \
            pytest.warns(StateDictMismatchWarning, match='saved with wt_levels=2, this layer was '
                                                         'built with wt_levels=1'):
        load_checkpoint(build(DET_WT, dcn=wt(wt_levels=1)), path, strict=True)


def test_shape_mismatch_names_the_option_in_the_load_error(tmp_path):
    """A shape mismatch is an error of the load: torch raises it and mmengine warns it (strict
    False), in both with the layer's options that explain it."""
    small = dict(DEMO_ARCH, wt_levels=(1, 1, 1, 1))
    path = _save(build(DET_WTX, arch=small), tmp_path / 'k5.pth')
    model = build(DET_WTX, arch=small, kernel_size=7)
    log, _ = _load(model, path)
    for word in ('backbone.stages.0.0.depthwise_conv (WTConv)',
                 'base_conv.weight is (64, 1, 5, 5) in the checkpoint, (64, 1, 7, 7) here',
                 'saved with kernel_size=5, this layer was built with kernel_size=7'):
        assert word in log, (word, log[-3000:])
    state = torch.load(path, weights_only=True)['state_dict']
    with pytest.raises(RuntimeError, match='kernel_size=5, this layer was built with '
                                           'kernel_size=7'):
        model.load_state_dict(state)


def test_octave_and_dense_wtconv_explanations():
    """OctaveConv keeps the plain conv's shapes (a plain checkpoint fits, alpha does not show in
    them); a WTConv with a 1x1 part names in/out channels and groups."""
    from convzoo_mm.layers import OctaveConv, WTConv
    plain = torch.nn.Conv2d(8, 16, 3, padding=1)
    OctaveConv(8, 16, 3, alpha_in=0.5, alpha_out=0.25).load_state_dict(plain.state_dict())
    with pytest.raises(RuntimeError, match=r"OctaveConv: .*weight is \(16, 8, 3, 3\) in the "
                                           r"checkpoint, \(16, 8, 5, 5\) here.*kernel_size=3"):
        OctaveConv(8, 16, 5).load_state_dict(plain.state_dict())
    dense = WTConv(8, 16, 3, groups=2).state_dict()
    with pytest.raises(RuntimeError, match=r"saved with out_channels=16, groups=2, this layer "
                                           r"was built with out_channels=8, groups=1"):
        WTConv(8, 8, 3, groups=1).load_state_dict(dense)
    # torch, strict=False, names only: no error (PyTorch's contract), the warning explains
    with pytest.warns(UserWarning, match="unexpected: wavelet_convs.0.weight.*wt_levels=1, "
                                         "this layer was built with wt_levels=0"):
        result = WTConv(8, 16, 3, groups=2, wt_levels=0).load_state_dict(dense, strict=False)
    assert result.unexpected_keys == ['wavelet_convs.0.weight', 'wavelet_scale.0.weight']
