"""Shared test helpers."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(script, *args, timeout=900, env=None):
    """Run ``tools/<script>`` with this interpreter from the repository root; return the
    CompletedProcess, raising with the tail of the output if it failed."""
    cmd = [sys.executable, os.path.join(ROOT, 'tools', script), *map(str, args)]
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc
