"""Effective receptive field: area ratios against hand-made maps, and on tiny WTConv backbones the
map peaks at the centre and spreads with the number of wavelet levels."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from convzoo_mm.analysis.erf import (compute_erf, erf_area_ratios, find_images, load_images,
                                     plot_erfs, save_erf_image, smooth_random_images)


def test_area_ratios_of_known_maps():
    erf = np.zeros((11, 11))
    erf[5, 5] = 1.0
    assert erf_area_ratios(erf, (0.5, 0.99)) == {0.5: 1 / 121, 0.99: 1 / 121}
    erf[5, 5] = 0.5
    erf[3, 5] = 0.5          # two pixels away: needs the 5x5 square for > 50%
    r = erf_area_ratios(erf, (0.2, 0.5, 0.99))
    assert r == {0.2: 1 / 121, 0.5: 1 / 121, 0.99: 25 / 121}
    assert erf_area_ratios(np.ones((10, 10)), (1.0, ))[1.0] == 1.0
    # even and non-square maps: the centre is (h // 2, w // 2), as in compute_erf, and the
    # ratio is of the map's own area
    even = np.zeros((10, 10))
    even[5, 5] = 1.0
    assert erf_area_ratios(even, (0.5, )) == {0.5: 1 / 100}
    tall = np.zeros((9, 5))
    tall[4, 2] = 1.0
    assert erf_area_ratios(tall, (0.5, )) == {0.5: 1 / 45}
    with pytest.raises(ValueError, match='zeros'):
        erf_area_ratios(np.zeros((4, 4)))


def test_erf_of_a_single_conv_is_its_kernel():
    """For one conv the ERF is |kernel summed over output channels| summed over inputs, around the
    centre; nothing outside the k x k window gets gradient."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 5, padding=2)
    with torch.no_grad():
        conv.bias.fill_(100.)  # every output > 0: the ReLU of the central scalar passes all
    erf = compute_erf(conv, smooth_random_images(2, 15))
    expect = np.zeros((15, 15))
    expect[5:10, 5:10] = conv.weight.detach().sum(0).abs().sum(0).numpy().astype(np.float64)
    np.testing.assert_allclose(erf, expect, rtol=1e-5, atol=1e-7)


def _wtconv_backbone(levels, seed=0):
    from convzoo_mm.layers.wtconv import WTConv
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 1), WTConv(8, 8, 3, groups=8, wt_levels=levels),
                         nn.GELU(), WTConv(8, 8, 3, groups=8, wt_levels=levels))


def test_wtconv_erf_peaks_at_centre_and_grows_with_levels(tmp_path):
    pytest.importorskip('convzoo_mm.layers.wtconv')
    images = smooth_random_images(3, 64)
    erfs, spread = {}, []
    for levels in (0, 1, 2, 3):
        erf = compute_erf(_wtconv_backbone(levels), images)
        erfs[f'L={levels}'] = erf
        path = save_erf_image(erf, str(tmp_path / f'erf_L{levels}.png'))
        png = np.asarray(Image.open(path))
        assert png.shape == (64, 64)
        peak = np.unravel_index(png.argmax(), png.shape)
        # the Haar 2x2 blocks make the four pixels around the centre (32, 32) equivalent
        assert abs(peak[0] - 32) <= 1 and abs(peak[1] - 32) <= 1, (levels, peak)
        spread.append(erf_area_ratios(erf, (0.99, ))[0.99])
    assert all(a < b for a, b in zip(spread, spread[1:])), spread
    fig = plot_erfs(erfs, str(tmp_path / 'erf.png'))
    with open(fig, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_load_images_resizes_crops_and_normalises(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :, 0] = 255
    Image.fromarray(arr).save(tmp_path / 'a.png')
    (img, ) = load_images([str(tmp_path / 'a.png')], 16, mean=(0, 0, 0), std=(255, 1, 1))
    assert img.shape == (3, 16, 16)
    assert torch.allclose(img[0], torch.ones(16, 16)) and img[1:].abs().max() == 0


def test_find_images_skips_label_maps(tmp_path):
    """An mm dataset folder (ADE20K layout, as data/demo/ade): the images, not the label PNGs
    of annotations/ that sort first; naming the annotation folder itself lists them."""
    for sub in ('ade/annotations/training', 'ade/images/training', 'cityscapes/gtFine/train'):
        (tmp_path / sub).mkdir(parents=True)
    for name in ('ade/annotations/training/a_0.png', 'ade/images/training/a_0.jpg',
                 'ade/images/training/a_1.JPG', 'cityscapes/gtFine/train/c_labelIds.png',
                 'ade/images/training/notes.txt'):
        (tmp_path / name).write_bytes(b'')
    assert find_images(str(tmp_path)) == [str(tmp_path / 'ade/images/training/a_0.jpg'),
                                          str(tmp_path / 'ade/images/training/a_1.JPG')]
    assert find_images(str(tmp_path / 'ade/annotations')) == [
        str(tmp_path / 'ade/annotations/training/a_0.png')]


def test_backbone_whose_train_returns_none():
    """mmdet/mmseg ResNet override train() without returning self, so .eval() gives None."""
    class Backbone(nn.Conv2d):
        def train(self, mode=True):
            super().train(mode)

    torch.manual_seed(0)
    erf = compute_erf(Backbone(3, 2, 3, padding=1), smooth_random_images(1, 9))
    assert erf.shape == (9, 9) and erf[4, 4] > 0


SPEC = "dict(type='WTConvNeXt', arch=dict(depths=(1, 1, 1, 1), channels=(8, 16, 16, 16)))"


def test_inline_backbone_spec_takes_cfg_options_and_detector_checkpoints(tmp_path):
    """erf.py's inline backbone spec: --cfg-options under model.backbone. apply to it, and a
    detector's checkpoint (keys under backbone.) loads into it; a checkpoint with none of its
    keys is an error, not a silent initialisation."""
    from convzoo_mm.analysis.mm_models import backbone_from_config
    plain = backbone_from_config(SPEC)
    scaled = backbone_from_config(SPEC, cfg_options={'model.backbone.layer_scale_init_value': 7.0})
    gammas = [p for n, p in scaled.named_parameters() if n.endswith('gamma')]
    assert gammas and all(torch.all(g == 7.0) for g in gammas)
    assert not any(torch.all(p == 7.0) for n, p in plain.named_parameters() if n.endswith('gamma'))
    with pytest.raises(ValueError, match='model.backbone.'):
        backbone_from_config(SPEC, cfg_options={'model.neck.out_channels': 4})

    detector = {'state_dict': {**{'backbone.' + k: v for k, v in scaled.state_dict().items()},
                               'neck.conv.weight': torch.zeros(1)}}
    torch.save(detector, tmp_path / 'det.pth')
    loaded = backbone_from_config(SPEC, checkpoint=str(tmp_path / 'det.pth'))
    for (name, a), b in zip(loaded.state_dict().items(), scaled.state_dict().values()):
        assert torch.equal(a, b), name
    torch.save({'state_dict': {'head.fc.weight': torch.zeros(1)}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='none of its 1 entries'):
        backbone_from_config(SPEC, checkpoint=str(tmp_path / 'other.pth'))


def test_erf_cli_uses_its_images_and_cfg_options(tmp_path):
    """tools/analysis/erf.py: the first --num-images images of the folder, the backbone with
    --cfg-options applied, seeded: its ratios equal compute_erf on the same inputs."""
    import json

    from convzoo_mm.analysis.mm_models import backbone_from_config
    from tests.utils import run_tool
    folder = tmp_path / 'imgs'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            folder / f'{i}.png')
    spec = SPEC[:-1] + ', out_indices=(1, ))'
    out = str(tmp_path / 'erf.png')
    proc = run_tool('analysis/erf.py', spec, '--names', 'a', '--size', '64', '--num-images', '2',
                    '--images', str(folder), '--out', out, '--cfg-options',
                    'model.backbone.layer_scale_init_value=1.0', env=dict(OMP_NUM_THREADS='1'))
    assert f'ERF on 2 images from {folder}' in proc.stderr
    torch.manual_seed(0)                                   # the tool's default --seed
    backbone = backbone_from_config(
        spec, cfg_options={'model.backbone.layer_scale_init_value': 1.0})
    want = erf_area_ratios(compute_erf(backbone, load_images(find_images(str(folder))[:2], 64)))
    with open(out[:-4] + '.json') as f:
        got = json.load(f)['a']
    assert got == pytest.approx({str(k): v for k, v in want.items()})
