"""Run the training/testing scripts that ship inside the mmdet / mmseg wheels.

Our ``tools/train.py`` and ``tools/test.py`` are thin dispatchers: they read the config's
``default_scope`` (``mmdet`` or ``mmseg``) and execute that package's own ``tools/{train,test}.py``
(found under ``<site-packages>/<pkg>/.mim/tools``) with the same command line, so a run through
our tools *is* a run through the standard mm tools.
"""
import importlib.util
import os
import runpy
import sys
from typing import List, Optional

SCOPE_TO_PACKAGE = {'mmdet': 'mmdet', 'mmseg': 'mmseg'}


def config_scope(config: str) -> str:
    """Return the ``default_scope`` of a config file (``mmdet`` or ``mmseg``)."""
    from mmengine.config import Config
    if not os.path.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    scope = Config.fromfile(config).get('default_scope')
    if scope not in SCOPE_TO_PACKAGE:
        raise ValueError(f'{config}: default_scope must be one of {sorted(SCOPE_TO_PACKAGE)} '
                         f'to pick mmdet or mmseg tools, got {scope!r}')
    return scope


def mm_tool_path(scope: str, tool: str) -> str:
    """Path of ``tools/<tool>.py`` shipped in the wheel of the package for ``scope``."""
    package = SCOPE_TO_PACKAGE[scope]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f'{package} is not installed; run `bash tools/setup_env.sh`')
    path = os.path.join(os.path.dirname(spec.origin), '.mim', 'tools', f'{tool}.py')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{package} ships no {tool}.py at {path}')
    return path


def run_mm_tool(tool: str, argv: List[str], scope: Optional[str] = None) -> None:
    """Execute mmdet/mmseg ``tools/<tool>.py`` in this process with ``argv`` (config first)."""
    if not argv or argv[0] in ('-h', '--help'):
        scope = scope or 'mmdet'
    else:
        scope = scope or config_scope(argv[0])
    path = mm_tool_path(scope, tool)
    old_argv = sys.argv
    sys.argv = [path] + list(argv)
    try:
        runpy.run_path(path, run_name='__main__')
    finally:
        sys.argv = old_argv
