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
CONFIG_EXTENSIONS = ('.py', '.json', '.yaml', '.yml')


def check_config_path(path) -> str:
    """``path`` as a str if it is an existing config file (.py, .json, .yaml, .yml), else
    FileNotFoundError / ValueError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    if not path.endswith(CONFIG_EXTENSIONS):
        raise ValueError(f'{path} is not a config file: expected a name ending in '
                         f'{", ".join(CONFIG_EXTENSIONS)}')
    return path


def config_scope(config) -> str:
    """The ``default_scope`` (``mmdet`` or ``mmseg``) of a config: a file path or a loaded
    mmengine ``Config``."""
    if isinstance(config, (str, os.PathLike)):
        from mmengine.config import Config
        config = Config.fromfile(check_config_path(config))
    scope = config.get('default_scope')
    if scope not in SCOPE_TO_PACKAGE:
        raise ValueError(f'{config.filename}: default_scope must be one of '
                         f'{sorted(SCOPE_TO_PACKAGE)} (an mmdet detector or an mmseg '
                         f'segmentor), got {scope!r}')
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


def find_config(argv: List[str]) -> str:
    """The CONFIG among a tool's arguments: the first one that ends like a config file (.py,
    .json, .yaml, .yml) and is neither an option nor one of the ``k=v`` values after
    ``--cfg-options`` (which take every argument up to the next option, as in argparse;
    ``--cfg-options=k=v`` takes just its own). mm's
    tools parse with argparse, so options may come before it (``--work-dir DIR CONFIG``)."""
    in_cfg_options = False
    for arg in argv:
        if arg.startswith('-'):
            in_cfg_options = arg in ('--cfg-options', '--options')  # not '--cfg-options=k=v'
        elif not in_cfg_options and arg.endswith(CONFIG_EXTENSIONS):
            return arg
    raise ValueError(f'no CONFIG among the arguments {argv}: expected a config file ending in '
                     f'{", ".join(CONFIG_EXTENSIONS)}')


def tool_scope(argv: List[str], prog: str) -> str:
    """For our tools' ``__main__``: :func:`config_scope` of the CONFIG in ``argv``, or exit with
    argparse's ``prog: error: ...`` (status 2) when there is none, it is missing or its scope
    is not mmdet/mmseg."""
    try:
        return config_scope(find_config(argv))
    except (FileNotFoundError, ValueError) as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        raise SystemExit(2)


def exit_on_usage(doc: str, argv: List[str], positionals: int) -> None:
    """For our tools' ``__main__``: ``-h``/``--help`` first prints ``doc`` and exits 0; fewer
    than ``positionals`` arguments is a usage error, ``doc`` on stderr and exit 2, as argparse
    does; otherwise nothing (a later ``--help`` reaches the mm tool)."""
    asked = len(argv) > 1 and argv[1] in ('-h', '--help')
    if asked or len(argv) < positionals + 1:
        print(doc, file=sys.stdout if asked else sys.stderr)
        raise SystemExit(0 if asked else 2)


def run_mm_tool(tool: str, argv: List[str], scope: Optional[str] = None) -> None:
    """Execute mmdet/mmseg ``tools/<tool>.py`` in this process with ``argv`` (the arguments as
    the mm tool takes them; the config's ``default_scope`` picks mmdet or mmseg)."""
    if not argv or argv[0] in ('-h', '--help'):
        scope = scope or 'mmdet'
    else:
        scope = scope or config_scope(find_config(argv))
    path = mm_tool_path(scope, tool)
    old_argv = sys.argv
    sys.argv = [path] + list(argv)
    try:
        runpy.run_path(path, run_name='__main__')
    finally:
        sys.argv = old_argv
