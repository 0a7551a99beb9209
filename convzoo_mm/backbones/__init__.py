"""Backbones built from convzoo_mm layers, registered in mmengine's root MODELS registry."""
from .wtconvnext import WTConvNeXt  # noqa: F401
__all__ = [*globals().get('__all__', []), 'WTConvNeXt']
from .oct_resnet import OctResNet, OctResNetV1c  # noqa: F401,E402
__all__ = [*globals().get('__all__', []), 'OctResNet', 'OctResNetV1c']
