"""What the layers do to an image: DRConv's regions and OctaveConv's frequency split.

* DRConv: per chosen layer, the region index of every output position, ``argmax`` over the
  ``m`` channels of the layer's guide conv applied to the layer's input (what the forward uses).
* OctaveConv: per chosen layer, the energy (mean over channels of the squared output) of the
  high-frequency branch (full resolution) and of the low-frequency branch (half resolution; in
  drop-in mode read back from the nearest-upsampled output at every other pixel).

Both are read with forward hooks during one forward pass of the model on the image, so they work
inside any backbone/detector/segmentor. :func:`plot_layer_pictures` writes one PNG per layer.
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = ['find_layers', 'collect_layer_maps', 'plot_layer_pictures']


def _kind(module: nn.Module) -> Optional[str]:
    name = type(module).__name__
    if name == 'DRConv' or (hasattr(module, 'guide') and hasattr(module, 'num_regions')):
        return 'regions'
    if name == 'OctaveConv' or (hasattr(module, 'out_split') and hasattr(module, 'alpha_out')):
        return 'octave'
    return None


def find_layers(model: nn.Module, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Modules of ``model`` that can be pictured: name -> 'regions' | 'octave'. With ``names``,
    only those (each must exist and be a DRConv or an OctaveConv)."""
    found = {n: _kind(m) for n, m in model.named_modules() if _kind(m)}
    if names:
        bad = [n for n in names if n not in found]
        if bad:
            raise ValueError(f'not a DRConv/OctaveConv module of the model: {bad}; available: '
                             f'{sorted(found) or "none"}')
        found = {n: found[n] for n in names}
    return found


def _octave_branches(module, output):
    if isinstance(output, (tuple, list)):
        return output[0], output[1] if len(output) > 1 else None
    # drop-in mode: [high | low upsampled by nearest x2]; every other pixel is the low branch
    high = module.out_split[0]
    low = output[:, high:, ::2, ::2] if output.shape[1] > high else None
    return output[:, :high], low


@torch.no_grad()
def collect_layer_maps(model: nn.Module, image: torch.Tensor,
                       names: Optional[Sequence[str]] = None,
                       run: Optional[callable] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """Run ``model`` on ``image`` (1, 3, H, W) and return per pictured layer
    ``{'kind': 'regions', 'regions': (h, w) int}`` or
    ``{'kind': 'octave', 'high': (h, w), 'low': (h', w') float}``. ``run(model, image)`` replaces
    the plain ``model(image)`` call (e.g. to run only a detector's backbone)."""
    layers = find_layers(model, names)
    if not layers:
        raise ValueError('the model has no DRConv or OctaveConv layer to picture')
    modules = dict(model.named_modules())
    maps: Dict[str, Dict[str, np.ndarray]] = {}
    handles = []
    for name, kind in layers.items():
        def hook(mod, args, output, name=name, kind=kind):
            if kind == 'regions':
                regions = mod.guide(args[0]).argmax(1)[0]
                maps[name] = dict(kind=kind, regions=regions.cpu().numpy(),
                                  num_regions=mod.num_regions)
            else:
                high, low = _octave_branches(mod, output)
                item = dict(kind=kind, high=(high[0].float()**2).mean(0).cpu().numpy())
                if low is not None:
                    item['low'] = (low[0].float()**2).mean(0).cpu().numpy()
                maps[name] = item
        handles.append(modules[name].register_forward_hook(hook))
    try:
        model.eval()
        (run or (lambda m, x: m(x)))(model, image)
    finally:
        for h in handles:
            h.remove()
    return maps


def plot_layer_pictures(maps: Dict[str, Dict[str, np.ndarray]], image: Optional[np.ndarray],
                        out_dir: str, prefix: str = '') -> List[str]:
    """One PNG per layer in ``out_dir``: the image with the region map over it (DRConv), or the
    image and the high/low energy maps (OctaveConv). ``image``: (H, W, 3) uint8 or None."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, item in maps.items():
        octave = item['kind'] == 'octave'  # [input,] high[, low]; regions: one overlay
        panels = (1 + ('low' in item) + (image is not None)) if octave else 1
        fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4), squeeze=False)
        axes = list(axes[0])
        all_axes = list(axes)
        if item['kind'] == 'regions':
            ax = axes[0]
            extent = None
            if image is not None:
                ax.imshow(image)
                extent = (0, image.shape[1], image.shape[0], 0)
            ax.imshow(item['regions'], cmap='tab10' if item['num_regions'] <= 10 else 'tab20',
                      alpha=0.55 if image is not None else 1.0, interpolation='nearest',
                      extent=extent, vmin=0, vmax=item['num_regions'] - 1)
            counts = np.bincount(item['regions'].ravel(), minlength=item['num_regions'])
            ax.set_title(f'{name}\nDRConv regions (share: '
                         + ' '.join(f'{c / counts.sum():.2f}' for c in counts) + ')', fontsize=7)
        else:
            if image is not None:
                axes[0].imshow(image)
                axes[0].set_title('input', fontsize=8)
                axes = axes[1:]
            total_high, total_low = item['high'].mean(), item.get('low', np.zeros(1)).mean()
            axes[0].imshow(item['high'], cmap='magma')
            axes[0].set_title(f'{name}\nhigh branch energy (mean {total_high:.3g})', fontsize=7)
            if 'low' in item:
                axes[1].imshow(item['low'], cmap='magma')
                axes[1].set_title(f'low branch energy, half res. (mean {total_low:.3g})',
                                  fontsize=7)
        for ax in all_axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        path = os.path.join(out_dir, f'{prefix}{name.replace(".", "_") or "model"}.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
