"""Checkpoint conversion for WTConvNeXt / ConvNeXt: state dicts in the official timm naming, the
facebookresearch naming and mmpretrain's naming are generated here from the key schemes (random
tensors, shapes computed from the arch), converted, and loaded into the backbone."""
import os
import pickle

import pytest
import torch

from convzoo_mm.backbones.wtconvnext import (WTConvNeXt, check_converted, convert_state_dict,
                                             load_source_checkpoint)
from tests.utils import run_tool

TINY = ((3, 3, 9, 3), (96, 192, 384, 768), (5, 4, 3, 2))
TOY = ((1, 2, 1, 1), (8, 16, 24, 32), (2, 2, 1, 1))
TOY_ARCH = dict(depths=TOY[0], channels=TOY[1], wt_levels=TOY[2])


class TrainArgs:
    """Stands for a pickled training-args object inside a checkpoint."""
    lr = 1e-3


def timm_state_dict(depths, channels, wt_levels, wavelet=True, k=5, seed=0):
    """Official WTConvNeXt (wavelet=True) / timm ConvNeXt (False) key scheme."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {'stem.0.weight': r(channels[0], 3, 4, 4), 'stem.0.bias': r(channels[0]),
          'stem.1.weight': r(channels[0]), 'stem.1.bias': r(channels[0])}
    for i, (d, c) in enumerate(zip(depths, channels)):
        if i > 0:
            p = channels[i - 1]
            sd.update({f'stages.{i}.downsample.0.weight': r(p),
                       f'stages.{i}.downsample.0.bias': r(p),
                       f'stages.{i}.downsample.1.weight': r(c, p, 2, 2),
                       f'stages.{i}.downsample.1.bias': r(c)})
        for j in range(d):
            b = f'stages.{i}.blocks.{j}.'
            sd[b + 'gamma'] = r(c)
            if wavelet:
                sd[b + 'conv_dw.base_conv.weight'] = r(c, 1, 5, 5)
                sd[b + 'conv_dw.base_conv.bias'] = r(c)
                sd[b + 'conv_dw.base_scale.weight'] = r(1, c, 1, 1)
                sd[b + 'conv_dw.wt_filter'] = r(4 * c, 1, 2, 2)
                sd[b + 'conv_dw.iwt_filter'] = r(4 * c, 1, 2, 2)
                for lvl in range(wt_levels[i]):
                    sd[b + f'conv_dw.wavelet_convs.{lvl}.weight'] = r(4 * c, 1, 5, 5)
                    sd[b + f'conv_dw.wavelet_scale.{lvl}.weight'] = r(1, 4 * c, 1, 1)
            else:
                sd[b + 'conv_dw.weight'] = r(c, 1, 7, 7)
                sd[b + 'conv_dw.bias'] = r(c)
            sd.update({b + 'norm.weight': r(c), b + 'norm.bias': r(c),
                       b + 'mlp.fc1.weight': r(4 * c, c), b + 'mlp.fc1.bias': r(4 * c),
                       b + 'mlp.fc2.weight': r(c, 4 * c), b + 'mlp.fc2.bias': r(c)})
    c = channels[-1]
    sd.update({'head.norm.weight': r(c), 'head.norm.bias': r(c), 'head.fc.weight': r(1000, c),
               'head.fc.bias': r(1000)})
    return sd


def expected_name(src):
    """The mapping of the issue, written as string rules."""
    parts = src.split('.')
    if parts[0] == 'stem':
        return 'downsample_layers.0.' + '.'.join(parts[1:])
    if parts[0] == 'head' and parts[1] == 'norm':
        return 'norm3.' + parts[2]
    if parts[2] == 'downsample':
        return f'downsample_layers.{parts[1]}.' + '.'.join(parts[3:])
    rest = '.'.join(parts[4:])
    rest = rest.replace('conv_dw', 'depthwise_conv').replace('mlp.fc1', 'pointwise_conv1')
    rest = rest.replace('mlp.fc2', 'pointwise_conv2')
    return f'stages.{parts[1]}.{parts[3]}.{rest}'


def _assert_loaded(model, src, skip=('head.fc.', 'wt_filter', 'iwt_filter')):
    own = model.state_dict()
    n = 0
    for key, value in src.items():
        if any(s in key for s in skip):
            continue
        torch.testing.assert_close(own[expected_name(key)], value, rtol=0, atol=0)
        n += 1
    return n


@pytest.mark.parametrize('wavelet', [True, False])
def test_convert_toy_maps_every_key(wavelet):
    src = timm_state_dict(*TOY, wavelet=wavelet)
    new, report = convert_state_dict(src)
    n_frozen = 2 * sum(TOY[0]) if wavelet else 0
    assert len(report['dropped_frozen']) == n_frozen
    assert all(k.endswith(('wt_filter', 'iwt_filter')) for k in report['dropped_frozen'])
    assert sorted(report['dropped_head']) == ['head.fc.bias', 'head.fc.weight']
    assert len(report['mapped']) + n_frozen + 2 == len(src)
    assert all(k.startswith('backbone.') for k in new)
    model = WTConvNeXt(TOY_ARCH, conv_type='wtconv' if wavelet else 'plain')
    missing = check_converted(model, new)
    assert missing == ['norm0.bias', 'norm0.weight', 'norm1.bias', 'norm1.weight',
                       'norm2.bias', 'norm2.weight']
    assert _assert_loaded(model, src) == len(report['mapped'])


def test_drop_head_norm():
    src = timm_state_dict(*TOY)
    new, report = convert_state_dict(src, keep_head_norm=False)
    assert 'backbone.norm3.weight' not in new
    assert sorted(report['dropped_head']) == ['head.fc.bias', 'head.fc.weight',
                                              'head.norm.bias', 'head.norm.weight']


def test_unknown_key_is_an_error():
    src = timm_state_dict(*TOY)
    src['stages.0.blocks.0.conv_dw.mystery.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='mystery'):
        convert_state_dict(src)
    src = timm_state_dict(*TOY)
    src['pos_embed'] = torch.zeros(1)
    with pytest.raises(ValueError, match='pos_embed'):
        convert_state_dict(src)
    with pytest.raises(ValueError, match='format'):
        convert_state_dict({'encoder.layer.0.weight': torch.zeros(1)})


def test_wrong_arch_is_an_error():
    new, _ = convert_state_dict(timm_state_dict(*TOY))
    with pytest.raises(ValueError, match='missing|unexpected|shape'):
        check_converted(WTConvNeXt(dict(TOY_ARCH, channels=(8, 16, 24, 40))), new)
    with pytest.raises(ValueError, match='missing'):
        check_converted(WTConvNeXt(dict(TOY_ARCH, depths=(2, 2, 1, 1))), new)
    # a WTConvNeXt checkpoint does not fit the plain baseline
    with pytest.raises(ValueError, match='unexpected'):
        check_converted(WTConvNeXt(dict(depths=TOY[0], channels=TOY[1]), conv_type='plain'), new)


def fb_state_dict(depths, channels, seed=0):
    """facebookresearch/ConvNeXt key scheme."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {'downsample_layers.0.0.weight': r(channels[0], 3, 4, 4),
          'downsample_layers.0.0.bias': r(channels[0]),
          'downsample_layers.0.1.weight': r(channels[0]),
          'downsample_layers.0.1.bias': r(channels[0])}
    for i, (d, c) in enumerate(zip(depths, channels)):
        if i > 0:
            p = channels[i - 1]
            sd.update({f'downsample_layers.{i}.0.weight': r(p),
                       f'downsample_layers.{i}.0.bias': r(p),
                       f'downsample_layers.{i}.1.weight': r(c, p, 2, 2),
                       f'downsample_layers.{i}.1.bias': r(c)})
        for j in range(d):
            b = f'stages.{i}.{j}.'
            sd.update({b + 'gamma': r(c), b + 'dwconv.weight': r(c, 1, 7, 7),
                       b + 'dwconv.bias': r(c),
                       b + 'norm.weight': r(c), b + 'norm.bias': r(c),
                       b + 'pwconv1.weight': r(4 * c, c), b + 'pwconv1.bias': r(4 * c),
                       b + 'pwconv2.weight': r(c, 4 * c), b + 'pwconv2.bias': r(c)})
    c = channels[-1]
    sd.update({'norm.weight': r(c), 'norm.bias': r(c), 'head.weight': r(1000, c),
               'head.bias': r(1000)})
    return sd


def test_convert_fb_convnext():
    src = fb_state_dict(*TOY[:2])
    new, report = convert_state_dict(src)
    assert sorted(report['dropped_head']) == ['head.bias', 'head.weight']
    model = WTConvNeXt(dict(depths=TOY[0], channels=TOY[1]), conv_type='plain')
    check_converted(model, new)
    own = model.state_dict()
    for k, v in src.items():
        if k.startswith('head.'):
            continue
        ours = 'norm3.' + k[5:] if k.startswith('norm.') else \
            k.replace('dwconv', 'depthwise_conv').replace('pwconv', 'pointwise_conv')
        assert torch.equal(own[ours], v), k


def mmpretrain_state_dict(depths, channels, seed=0):
    """mmpretrain ConvNeXt classifier checkpoint: backbone.* (out_indices=-1 -> norm3) + head.fc."""
    fb = fb_state_dict(depths, channels, seed)
    sd = {}
    for k, v in fb.items():
        if k.startswith('head.'):
            sd['head.fc.' + k[5:]] = v
        elif k.startswith('norm.'):
            sd['backbone.norm3.' + k[5:]] = v
        else:
            sd['backbone.' + k.replace('dwconv', 'depthwise_conv').replace(
                'pwconv', 'pointwise_conv')] = v
    return sd


def test_mmpretrain_checkpoint_loads_into_baseline_directly(tmp_path):
    """What mmdet/mmseg's own ConvNeXt configs load: no missing backbone keys but norm0-2."""
    depths, channels = TOY[:2]
    src = mmpretrain_state_dict(depths, channels)
    path = tmp_path / 'mmpretrain_convnext.pth'
    torch.save({'state_dict': src, 'meta': {'mmpretrain_version': '1.0.0'}}, path)
    model = WTConvNeXt(dict(depths=depths, channels=channels), conv_type='plain',
                       init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    own = model.state_dict()
    backbone_src = {k[len('backbone.'):]: v for k, v in src.items() if k.startswith('backbone.')}
    assert set(own) - set(backbone_src) == {f'norm{i}.{b}' for i in range(3)
                                            for b in ('weight', 'bias')}
    assert set(backbone_src) <= set(own)
    for k, v in backbone_src.items():
        assert torch.equal(own[k], v), k
    # the converter accepts it too (validation + head dropped)
    new, report = convert_state_dict(src)
    assert report['dropped_head'] == ['head.fc.weight', 'head.fc.bias']
    check_converted(WTConvNeXt(dict(depths=depths, channels=channels), conv_type='plain'), new)


def test_load_source_checkpoint_unwraps(tmp_path):
    sd = timm_state_dict(*TOY)
    path = tmp_path / 'wrapped.pth'
    torch.save({'model': {'module.' + k: v for k, v in sd.items()}, 'epoch': 300}, path)
    loaded = load_source_checkpoint(str(path))
    assert set(loaded) == set(sd)
    # pickled non-tensor objects are refused (weights_only=True)
    torch.save({'state_dict': sd, 'args': TrainArgs()}, tmp_path / 'unsafe.pth')
    with pytest.raises(pickle.UnpicklingError):
        load_source_checkpoint(str(tmp_path / 'unsafe.pth'))


def test_cli_tiny_roundtrip_through_pretrained_init(tmp_path):
    """Full tiny checkpoint in the official naming -> CLI -> init_cfg Pretrained."""
    src = timm_state_dict(*TINY)
    src_path, dst_path = tmp_path / 'WTConvNeXt_tiny_5_300e_ema.pth', tmp_path / 'out' / 'wt.pth'
    torch.save(src, src_path)
    proc = run_tool('convert_wtconvnext.py', src_path, dst_path, '--arch', 'tiny')
    assert 'dropped (frozen wavelet filter' in proc.stdout
    assert f'{sum(TINY[0]) * 2} frozen filter keys dropped' in proc.stdout
    assert os.path.isfile(dst_path)
    model = WTConvNeXt('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(dst_path),
                                             prefix='backbone.'))
    model.init_weights()
    n = _assert_loaded(model, src)
    assert n == len(src) - 2 * sum(TINY[0]) - 2


def test_cli_help_and_errors(tmp_path):
    proc = run_tool('convert_wtconvnext.py', '--help')
    for word in ('wt_filter', 'head', 'norm3', '--arch', 'prefix=\'backbone.\''):
        assert word in proc.stdout
    src = timm_state_dict(*TOY)
    src['head.pre_logits.fc.weight'] = torch.zeros(2, 2)
    torch.save(src, tmp_path / 'bad.pth')
    with pytest.raises(AssertionError, match='pre_logits'):
        run_tool('convert_wtconvnext.py', tmp_path / 'bad.pth', tmp_path / 'o.pth')


def test_documented_convert_commands_write_what_the_configs_load():
    """Every ``convert_wtconvnext.py SRC DST`` command for WTConvNeXt weights in README.md,
    docs/ and the configs' comments writes a DST that some config loads as its checkpoint (the
    ConvNeXt baselines load mmpretrain's checkpoint by URL; converting theirs is optional)."""
    import glob
    import re
    from tests.utils import ROOT
    texts = [os.path.join(ROOT, 'README.md')] + glob.glob(os.path.join(ROOT, 'docs', '*.md'))
    configs = glob.glob(os.path.join(ROOT, 'configs', 'wtconvnext', '*.py'))
    loaded = set()
    for path in configs:
        loaded |= set(re.findall(r"^[^#\n]*'(checkpoints/[^']+\.pth)'", open(path).read(), re.M))
    commands = []
    for path in texts + configs:
        text = open(path).read().replace('\\\n', ' ')
        commands += re.findall(r'convert_wtconvnext\.py\s+[^\s]+\s+(?:#\s*)?(checkpoints/\S+\.pth)',
                               text.replace('\n#', ' '))
    commands = [c for c in commands if c.startswith('checkpoints/wtconvnext-')]
    assert loaded and len(commands) >= 3
    assert set(commands) <= loaded, set(commands) - loaded
