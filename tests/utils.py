"""Shared test helpers."""
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    """A TCP port nobody listens on now (for torchrun: CI runs side by side must not collide)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


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


def train_demo_briefly(config, work_dir, epochs=2):
    """Train a demo detection config through tools/train.py for ``epochs`` one-iteration epochs
    (8 images, seeded, one thread); return the state dicts of the epoch checkpoints, in order."""
    import torch
    run_tool('train.py', config, '--work-dir', work_dir, '--cfg-options',
             'train_dataloader.dataset.indices=8', 'train_dataloader.num_workers=0',
             'train_dataloader.persistent_workers=False', f'train_cfg.max_epochs={epochs}',
             'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
             f'default_hooks.checkpoint.max_keep_ckpts={epochs}',
             'default_hooks.logger.interval=1', 'randomness.seed=0', env={'OMP_NUM_THREADS': '1'})
    return [torch.load(os.path.join(work_dir, f'epoch_{e}.pth'), map_location='cpu',
                       weights_only=True)['state_dict'] for e in range(1, epochs + 1)]


def conv_macs(n, cin, cout, k, h_out, w_out, groups=1):
    """Multiply-adds of a conv: one ``k*k*cin/groups`` dot product per output element."""
    return n * cout * h_out * w_out * (cin // groups) * k * k


def haar_wtconv_macs(n, c, h, w, k, levels, stride=1):
    """Multiply-adds of a depthwise Haar (db1) WTConv on ``(n, c, h, w)``, written out from its
    parts: the base ``k x k`` depthwise conv at the output pixels (``ceil(h / stride)`` by
    ``ceil(w / stride)``); per level, on the size padded to even, the Haar transform (4 per
    pixel), the ``k x k`` depthwise conv on the 4C sub-bands of a quarter of the pixels and the
    inverse transform (4 per pixel); at stride 2 the outermost inverse only for the kept pixels,
    a quarter of it."""
    ho, wo = -(-h // stride), -(-w // stride)
    macs = n * c * ho * wo * k * k
    for level in range(levels):
        ph, pw = h + h % 2, w + w % 2
        inverse = n * c * ph * pw * 4
        if stride == 2 and level == 0:
            inverse //= 4
        macs += n * c * ph * pw * 4 + n * 4 * c * (ph // 2) * (pw // 2) * k * k + inverse
        h, w = ph // 2, pw // 2
    return macs
