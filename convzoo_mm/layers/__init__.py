"""Convolution layers, one file each, registered in mmengine's root MODELS registry."""
from .wtconv import WTConv  # noqa: E402

__all__ = ['WTConv']
from .octconv import OctaveConv, OctaveConvModule  # noqa: F401,E402
__all__ = [*globals().get('__all__', []), 'OctaveConv', 'OctaveConvModule']
from .drconv import DRConv  # noqa: F401,E402
__all__ = [*globals().get('__all__', []), 'DRConv']
