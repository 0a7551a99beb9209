"""Where convzoo_mm registers its modules.

Everything goes into mmengine's **root** ``MODELS`` registry: mmdet's and mmseg's ``MODELS`` are
children of it and look names up in the parent, so ``type='WTConv'`` resolves in runs whose default
scope is ``mmdet`` or ``mmseg`` alike (a sibling scope would not be searched).
"""
from mmengine.registry import MODELS

__all__ = ['MODELS', 'register']


def register(cls):
    """Class decorator: register ``cls`` in the root ``MODELS`` under its class name.

    Re-registering the *same* class (e.g. the module executed twice through a different import
    path) is a no-op; a different class already holding the name is an error, as in mmengine.
    """
    existing = MODELS.module_dict.get(cls.__name__)
    if existing is not None and (existing.__module__, existing.__qualname__) == (
            cls.__module__, cls.__qualname__):
        MODELS.register_module(name=cls.__name__, module=cls, force=True)
        return cls
    return MODELS.register_module(module=cls)
