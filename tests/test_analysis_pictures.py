"""Layer pictures: DRConv regions equal the argmax of the guide conv on the layer's input
(recomputed here with F.conv2d), OctaveConv energies equal the mean squares of the two branches
(recomputed from the split-mode layer), and the PNGs are written."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo_mm.analysis.layer_pictures import collect_layer_maps, find_layers, plot_layer_pictures


def _model():
    drconv = pytest.importorskip('convzoo_mm.layers.drconv')
    octconv = pytest.importorskip('convzoo_mm.layers.octconv')
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                         drconv.DRConv(8, 8, 3, padding=1, num_regions=4),
                         octconv.OctaveConv(8, 8, 3, padding=1, alpha_in=0.5, alpha_out=0.5))


def test_regions_and_energies_match_independent_computation(tmp_path):
    model = _model()
    x = torch.randn(1, 3, 15, 13)
    maps = collect_layer_maps(model, x)
    assert set(maps) == {'1', '2'}
    with torch.no_grad():
        feat = model[0](x)
        g = model[1].guide
        expect = F.conv2d(feat, g.weight, g.bias, padding=1).argmax(1)[0].numpy()
        np.testing.assert_array_equal(maps['1']['regions'], expect)
        # the drop-in OctaveConv's output = [high | upsampled low]; the split-mode layer with the
        # same weights gives the branches themselves
        oct_in = model[1](feat)
        split = type(model[2])(8, 8, 3, padding=1, alpha_in=0.5, alpha_out=0.5, split=True)
        split.load_state_dict(model[2].state_dict())
        hi_in, lo_in = oct_in[:, :4], F.avg_pool2d(oct_in[:, 4:], 2, ceil_mode=True,
                                                   count_include_pad=False)
        y_h, y_l = split((hi_in, lo_in))
    np.testing.assert_allclose(maps['2']['high'], (y_h[0]**2).mean(0).numpy(), rtol=1e-5,
                               atol=1e-6)
    assert maps['2']['low'].shape == (8, 7)
    np.testing.assert_allclose(maps['2']['low'], (y_l[0]**2).mean(0).numpy(), rtol=1e-4,
                               atol=1e-5)
    image = np.zeros((15, 13, 3), dtype=np.uint8)
    paths = plot_layer_pictures(maps, image, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ['1.png', '2.png']
    with open(paths[0], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # one 4-inch panel each at 100 dpi: DRConv the overlay; OctaveConv input, high, low (no
    # empty panel), without an image high and low
    from PIL import Image
    widths = [Image.open(p).size[0] for p in sorted(paths)]
    assert widths == [400, 1200]
    no_image = plot_layer_pictures(maps, None, str(tmp_path / 'plain'))
    assert [Image.open(p).size[0] for p in sorted(no_image)] == [400, 800]


def test_unknown_layer_name_is_an_error():
    model = _model()
    assert find_layers(model) == {'1': 'regions', '2': 'octave'}
    with pytest.raises(ValueError, match='not a DRConv/OctaveConv'):
        find_layers(model, ['0'])
