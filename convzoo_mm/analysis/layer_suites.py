"""The benchmark cases of each convzoo layer: representative shapes and the references.

* WTConv (k=5, depthwise, as in WTConvNeXt): WTConvNeXt-T stage shapes (C96@56² L5, C192@28² L4,
  C384@14² L3, C768@7² L2, batch 8) and a detection-size stage-1 map with odd sizes; references:
  the published layer's computation with the same weights (``exact``), the 7x7 depthwise conv
  WTConv replaces in ConvNeXt, and a plain dense 3x3 conv with the same channels.
* OctaveConv (drop-in, alpha_in = alpha_out = 0.5, k=3): ResNet-50 bottleneck 3x3 shapes
  (C64@56², C128@28², C256@14², C512@7², batch 8); reference: the plain 3x3 conv it replaces.
* DRConv (m=8, k=3): C256->256 @28², batch 8; references: the plain 3x3 conv and the naive
  all-m-regions form with the same weights (``exact``).
* Any other layer exported by ``convzoo_mm.layers`` with ``count_flops``: ``cls(C, C, 3,
  padding=1)`` at the ResNet-50 shapes against the plain 3x3 conv (with ``split=False`` where
  the layer has that option, e.g. ``OctaveConvModule``: tensors in and out).

``preset='tiny'`` shrinks every case (batch 1, few channels, small maps) for tests and smoke
runs; ``shapes`` overrides the shapes of every selected layer.
"""
import argparse
import inspect
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F

from .benchmark import BenchCase

__all__ = ['available_layers', 'build_cases', 'SHAPES']

Shape = Tuple[int, int, int, int]

# (label, (N, C, H, W), layer options)
SHAPES: Dict[str, Dict[str, List[Tuple[str, Shape, dict]]]] = {
    'WTConv': {
        'paper': [('C96@56² L5', (8, 96, 56, 56), dict(wt_levels=5)),
                  ('C192@28² L4', (8, 192, 28, 28), dict(wt_levels=4)),
                  ('C384@14² L3', (8, 384, 14, 14), dict(wt_levels=3)),
                  ('C768@7² L2', (8, 768, 7, 7), dict(wt_levels=2)),
                  ('C96@201x335 L5 (det)', (2, 96, 201, 335), dict(wt_levels=5))],
        'tiny': [('C8@16² L2', (1, 8, 16, 16), dict(wt_levels=2)),
                 ('C8@15x13 L2', (1, 8, 15, 13), dict(wt_levels=2))],
    },
    'OctaveConv': {
        'paper': [('C64@56²', (8, 64, 56, 56), {}), ('C128@28²', (8, 128, 28, 28), {}),
                  ('C256@14²', (8, 256, 14, 14), {}), ('C512@7²', (8, 512, 7, 7), {})],
        'tiny': [('C8@16²', (1, 8, 16, 16), {}), ('C8@15²', (1, 8, 15, 15), {})],
    },
    'DRConv': {
        'paper': [('C256@28² m8', (8, 256, 28, 28), dict(num_regions=8))],
        'tiny': [('C8@12² m4', (1, 8, 12, 12), dict(num_regions=4))],
    },
    '_default': {
        'paper': [('C64@56²', (8, 64, 56, 56), {}), ('C128@28²', (8, 128, 28, 28), {}),
                  ('C256@14²', (8, 256, 14, 14), {}), ('C512@7²', (8, 512, 7, 7), {})],
        'tiny': [('C8@16²', (1, 8, 16, 16), {})],
    },
}


def parse_shape(text: str) -> Tuple[int, int, int, int]:
    """'NxCxHxW' (command-line shape of a benchmark input) -> (N, C, H, W)."""
    parts = text.lower().split('x')
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f'shape must be NxCxHxW with positive ints, got {text!r}')
    return tuple(int(p) for p in parts)


def available_layers() -> Dict[str, type]:
    """Layers exported by ``convzoo_mm.layers`` (its ``__all__``) that implement
    ``count_flops``: name -> class."""
    import convzoo_mm.layers as layers
    out = {}
    for name in getattr(layers, '__all__', []):
        obj = getattr(layers, name, None)
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and callable(
                getattr(obj, 'count_flops', None)):
            out[name] = obj
    return out


def _plain_conv(c_in: int, c_out: int, k: int = 3) -> Callable[[nn.Module], nn.Module]:
    return lambda layer: nn.Conv2d(c_in, c_out, k, padding=k // 2)


# ----------------------------------------------------------------------------- WTConv
def _published_wtconv(levels: int) -> Callable[[nn.Module], nn.Module]:
    def build(layer):
        from .references import PublishedWTConv2d
        ref = PublishedWTConv2d(layer.in_channels, layer.kernel_size[0], layer.stride[0],
                                layer.base_conv.bias is not None, levels, layer.wt_type)
        missing, unexpected = ref.load_state_dict(layer.state_dict(), strict=False)
        if unexpected or set(missing) - {'wt_filter', 'iwt_filter', 'stride_filter'}:
            raise RuntimeError(f'cannot copy WTConv weights into the published layer: missing '
                               f'{missing}, unexpected {unexpected}')
        return ref
    return build


def _wtconv_cases(cls, shapes) -> List[BenchCase]:
    cases = []
    for label, shape, opts in shapes:
        c = shape[1]
        levels = opts.get('wt_levels', 1)
        cases.append(BenchCase(
            'WTConv', label, shape,
            make_layer=lambda c=c, opts=opts: cls(c, c, 5, groups=c, **opts),
            references={'published WTConv2d': _published_wtconv(levels),
                        'dw conv 7x7': lambda layer, c=c: nn.Conv2d(c, c, 7, padding=3, groups=c),
                        'plain conv 3x3': _plain_conv(c, c)},
            exact=('published WTConv2d', )))
    return cases


# ----------------------------------------------------------------------------- DRConv
class NaiveDRConv(nn.Module):
    """The naive DRConv: every region's conv at every position (m x the FLOPs and memory of a
    conv), mixed by the one-hot mask with the softmax straight-through gradient. Shares the
    parameters of ``layer`` (same output)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.forward_naive(x)


def _drconv_cases(cls, shapes) -> List[BenchCase]:
    cases = []
    for label, shape, opts in shapes:
        c = shape[1]
        cases.append(BenchCase(
            'DRConv', label, shape,
            make_layer=lambda c=c, opts=opts: cls(c, c, 3, padding=1, **opts),
            references={'plain conv 3x3': _plain_conv(c, c), 'naive m-conv DRConv': NaiveDRConv},
            exact=('naive m-conv DRConv', )))
    return cases


# ----------------------------------------------------------------------------- OctaveConv
def _octconv_cases(cls, shapes) -> List[BenchCase]:
    cases = []
    for label, shape, opts in shapes:
        c = shape[1]
        opts = dict(dict(alpha_in=0.5, alpha_out=0.5), **opts)
        cases.append(BenchCase(
            'OctaveConv', f'{label} a{opts["alpha_in"]}', shape,
            make_layer=lambda c=c, opts=opts: cls(c, c, 3, padding=1, **opts),
            references={'plain conv 3x3': _plain_conv(c, c)}))
    return cases


def _default_cases(name, cls, shapes) -> List[BenchCase]:
    if 'split' in inspect.signature(cls).parameters:  # octave layers: tensors in and out
        shapes = [(label, shape, {'split': False, **opts}) for label, shape, opts in shapes]
    return [BenchCase(name, label, shape,
                      make_layer=lambda c=shape[1], opts=opts: cls(c, c, 3, padding=1, **opts),
                      references={'plain conv 3x3': _plain_conv(shape[1], shape[1])})
            for label, shape, opts in shapes]


_BUILDERS = {'WTConv': _wtconv_cases, 'DRConv': _drconv_cases, 'OctaveConv': _octconv_cases}


def build_cases(layers: Optional[Sequence[str]] = None, preset: str = 'paper',
                shapes: Optional[Sequence[Shape]] = None) -> List[BenchCase]:
    """Benchmark cases for ``layers`` (default: every available layer that has a suite here).

    Args:
        layers (list[str], optional): names from :func:`available_layers`.
        preset (str): ``'paper'`` (the shapes above) or ``'tiny'``.
        shapes (list[tuple], optional): ``(N, C, H, W)`` shapes replacing the preset's; the
            layer options of the preset's first case are kept (e.g. WTConv levels).
    """
    avail = available_layers()
    if not avail:
        raise ValueError('convzoo_mm.layers exports no layer with count_flops')
    # default: the layers with a suite; others (e.g. wrappers with count_flops) when named
    names = [n for n in avail if n in _BUILDERS] if not layers else list(layers)
    unknown = [n for n in names if n not in avail]
    if unknown:
        raise ValueError(f'unknown layer(s) {unknown}; available: {sorted(avail)}')
    if preset not in ('paper', 'tiny'):
        raise ValueError(f"preset must be 'paper' or 'tiny', got {preset!r}")
    cases = []
    for name in names:
        table = SHAPES.get(name, SHAPES['_default'])[preset]
        if shapes:
            opts = table[0][2]
            extra = ''.join(f' {k}={v}' for k, v in opts.items())
            table = [(f'C{s[1]}@{s[2]}x{s[3]} N{s[0]}{extra}', tuple(s), opts) for s in shapes]
        builder = _BUILDERS.get(name)
        cases += builder(avail[name], table) if builder else _default_cases(name, avail[name],
                                                                             table)
    return cases
