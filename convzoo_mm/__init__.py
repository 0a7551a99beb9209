"""convzoo_mm: WTConv, OctaveConv and DRConv for MMDetection 3.x and MMSegmentation 1.x.

``import convzoo_mm`` (or ``custom_imports = dict(imports=['convzoo_mm'])`` in a config) registers
the layers and backbones in mmengine's root ``MODELS`` registry.
"""
from . import compat  # noqa: F401  (torch>=2.6 checkpoint loading for mmengine)
from . import backbones, hooks, layers  # noqa: F401
from .backbones import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403

__version__ = '0.1.0'
