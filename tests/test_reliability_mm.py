"""Reliability of training through the real mm tools (``tools/train.py``, ``tools/dist_train.sh``)
for the demo configs of each layer (WTConv, OctaveConv, DRConv; WTConvNeXt too):

1. data-parallel training is the same computation as one process with the whole batch,
2. bfloat16 mixed precision (mmengine ``AmpOptimWrapper``) trains and stays close to fp32,
3. ``--resume`` continues exactly where an uninterrupted run would be.

Each run uses a tiny config generated in ``tmp_path`` that inherits the demo config and only
shortens it (a few iterations, a few images, one loader process) or removes what would make the
compared runs differ for reasons that are not under test (named where it is done). One case of
each property is in the default suite; the other configs are ``slow``.
"""
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.utils import ROOT, free_port, run_tool

ENV = {'OMP_NUM_THREADS': '1'}
SEG = {
    'wtconv': 'configs/demo/upernet_r50-thin-wtconv-c3-c5_1xb8-300i_demo-128x128.py',
    'octconv': 'configs/demo/upernet_r50-thin-octconv-a0.5_1xb8-300i_demo-128x128.py',
    'drconv': 'configs/demo/upernet_r50-thin-drconv-m4-c3-c4_1xb8-300i_demo-128x128.py',
    'wtconvnext': 'configs/demo/upernet_wtconvnext-demo_1xb8-300i_demo-128x128.py',
}
DET = {
    'wtconv': 'configs/demo/fcos_r50-thin-wtconv-c3-c5_fpn_1xb8-12e_demo.py',
    'octconv': 'configs/demo/fcos_r50-thin-octconv-a0.5_fpn_1xb8-12e_demo.py',
    'drconv': 'configs/demo/fcos_r50-thin-drconv-m4-c3-c4_fpn_1xb8-12e_demo.py',
    'wtconvnext': 'configs/demo/fcos_wtconvnext-demo_fpn_1xb8-12e_demo.py',
}
ALL = {**{f'seg-{k}': v for k, v in SEG.items()}, **{f'det-{k}': v for k, v in DET.items()}}
BN_TYPES = ('BN', 'BN2d', 'SyncBN')


def slow_except(first, cases):
    """The configs ``cases`` ({id: config}) as parameters, all but ``first`` marked slow (one
    case of each property runs in the default suite)."""
    return [pytest.param(v, id=k, marks=() if k == first else pytest.mark.slow)
            for k, v in cases.items()]


# --------------------------------------------------------------------------------------------
# helpers: generated configs, runs, their records
# --------------------------------------------------------------------------------------------
def load_config(rel):
    from mmengine.config import Config
    return Config.fromfile(os.path.join(ROOT, rel))


def write_config(path, base_rel, **overrides):
    """A config file inheriting ``base_rel`` with ``overrides`` merged in (mmengine rules:
    dicts merge key by key, other values replace)."""
    lines = [f'_base_ = [{os.path.join(ROOT, base_rel)!r}]']
    lines += [f'{key} = {value!r}' for key, value in overrides.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def model_overrides(node, gn_groups=None):
    """Overrides of a model config (only the changed keys; mmengine merges them in): dropout and
    stochastic depth off (they draw from the process's torch RNG); with ``gn_groups``, also
    BatchNorm -> GroupNorm, so that each sample's output does not depend on the rest of its
    batch."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            if gn_groups and value.get('type') in BN_TYPES:
                out[key] = dict(type='GN', num_groups=gn_groups,
                                requires_grad=value.get('requires_grad', True))
            else:
                sub = model_overrides(value, gn_groups)
                if sub:
                    out[key] = sub
        elif key in ('dropout_ratio', 'drop_path_rate') and value:
            out[key] = 0.0
    return out


def no_flip(pipeline):
    return [dict(t) for t in pipeline if t['type'] != 'RandomFlip']


def dist_train(config, nproc, work_dir, *args):
    """``tools/dist_train.sh CONFIG NPROC`` (torchrun, gloo on CPU)."""
    env = dict(os.environ, CONVZOO_PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), config,
                           str(nproc), '--work-dir', work_dir, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def rank_records(work_dir, rank=0):
    """Per-iteration outputs of one rank written by ``LossRecorderHook``: {iter: {key: value}}."""
    with open(os.path.join(work_dir, f'losses_rank{rank}.jsonl')) as f:
        return {r['iter']: r for r in map(json.loads, filter(str.strip, f))}


def scalars(work_dir):
    """Training records of ``<work_dir>/<timestamp>/vis_data/scalars.json`` (all runs in the
    work dir, oldest first): {iter: record}, a later run's record replacing an earlier one."""
    out = {}
    for path in sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for rec in map(json.loads, filter(str.strip, f)):
                if 'loss' in rec:
                    out[rec['iter']] = rec
    return out


def state_dict(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())


def loss_keys(record):
    return sorted(k for k in record if 'loss' in k)


def is_det(rel):
    return os.path.basename(rel).startswith('fcos')


def as_dict(rel):
    return load_config(rel).to_dict()


def short_config(path, rel, length, images=2, batch=2, checkpoint=None, loader=None,
                 **overrides):
    """The demo config ``rel`` as it is (model, loader, augmentation, optimizer, schedule) but
    short: ``length`` iterations (seg) or epochs (det; one iteration each when
    ``images == batch``) on the first ``images`` training images, no validation, logging every
    iteration, every rank's losses recorded; ``loader`` is merged into ``train_dataloader``."""
    loop = dict(max_epochs=length) if is_det(rel) else dict(max_iters=length)
    return write_config(
        path, rel,
        train_dataloader=dict(batch_size=batch, dataset=dict(indices=images), **(loader or {})),
        train_cfg=dict(val_begin=10**6, **loop),
        default_hooks=dict(logger=dict(interval=1),
                           **({'checkpoint': checkpoint} if checkpoint else {})),
        custom_hooks=[dict(type='LossRecorderHook'), dict(type='RandomStateHook')],
        **overrides)


# --------------------------------------------------------------------------------------------
# 1. two processes x batch 1 == one process x batch 2
# --------------------------------------------------------------------------------------------
def equality_case(rel):
    """(iterations, [(iteration, checkpoint file)]) of an equality run: 4 images, 2 per step;
    seg: 3 iterations, a checkpoint after each; det: 2 epochs of 2 iterations."""
    if is_det(rel):
        return 4, [(2, 'epoch_1.pth'), (4, 'epoch_2.pth')]
    return 3, [(it, f'iter_{it}.pth') for it in (1, 2, 3)]


def equality_config(path, rel, batch):
    """The demo config ``rel`` without batch coupling or randomness (GroupNorm for BatchNorm, no
    dropout / drop path, no flip), the first 4 training images in file order, plain SGD with a
    constant learning rate and no gradient clipping, checkpoints as in ``equality_case`` and
    every rank's losses recorded."""
    cfg = as_dict(rel)
    iters, ckpts = equality_case(rel)
    loop = dict(max_epochs=len(ckpts)) if is_det(rel) else dict(max_iters=iters)
    return write_config(
        path, rel,
        model=model_overrides(cfg['model'], gn_groups=4),
        train_dataloader=dict(
            batch_size=batch, num_workers=0, persistent_workers=False,
            sampler=dict(shuffle=False),
            dataset=dict(indices=4,
                         pipeline=no_flip(cfg['train_dataloader']['dataset']['pipeline']))),
        optim_wrapper=dict(clip_grad=None, optimizer=dict(
            _delete_=True, type='SGD', lr=0.02, momentum=0.0, weight_decay=0.0)),
        param_scheduler=[],
        train_cfg=dict(val_begin=10**6, **loop),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=1, max_keep_ckpts=len(ckpts))),
        log_processor=dict(window_size=1),          # log each iteration's value, not a mean
        custom_hooks=[dict(type='LossRecorderHook')],
        randomness=dict(seed=0))


@pytest.mark.parametrize('rel', slow_except('seg-wtconv', ALL))
def test_two_processes_batch_1_equal_one_process_batch_2(demo_data, tmp_path, rel):
    """``tools/dist_train.sh CFG 2`` at batch 1 per process == ``tools/train.py CFG`` at batch 2:
    the same losses at every iteration and the same weights after the SGD steps (within 1e-5).

    Why this must hold: with GroupNorm instead of BatchNorm, no dropout / drop path and no
    random flip (the test config), each image's forward depends only on that image and the
    weights, and all images are 128x128 (no batch-dependent padding). Then:

    * seg (UperNet): the loss (decode + auxiliary cross-entropy) is averaged over all B*H*W
      pixels of the batch (mmseg ``avg_non_ignore=False``: ignored pixels count in the
      denominator), so the batch loss is the mean of the per-image losses;
    * det (FCOS): the sums over points are divided by normalisers that mmdet's ``FCOSHead``
      averages over the ranks (``reduce_mean`` of the positive count and of the centerness-target
      sum), i.e. each rank divides its own sum by half the global count, so the mean of the two
      ranks' losses is (sum over both images) / (global count): the one-process batch-2 loss.
      This holds while the clamps ``max(count, 1)`` / ``max(., 1e-6)`` are inactive: every demo
      image has objects, hence positives.

    DDP averages the ranks' gradients, i.e. takes the gradient of the mean of the ranks' losses:
    that of the one-process batch loss. Same initial weights (seed 0; DDP broadcasts rank 0's),
    same optimizer, and the same images per step (sampler shuffle=False: rank r takes images r,
    r+2, ...; one process takes 0,1 then 2,3) give the same trajectory up to float summation
    order. (SGD, not the demo's AdamW with clipping: Adam's first steps are ~lr*sign(g) and
    hide a wrong gradient scale; the demo's warm-up lr would make every step tiny.)

    What is compared: mmengine 0.10.7 logs (text log, ``vis_data/scalars.json``) rank 0's *own*
    loss, not reduced over ranks (``BaseModel.parse_losses`` / ``RuntimeInfoHook`` keep local
    values, the visualizer writes on rank 0 only), so every rank records its losses with
    ``LossRecorderHook`` and the mean of the two ranks is compared with the one-process loss.
    """
    iters, ckpts = equality_case(rel)
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    run_tool('train.py', equality_config(tmp_path / 'one.py', rel, 2), '--work-dir', one,
             env=ENV)
    dist_train(equality_config(tmp_path / 'two.py', rel, 1), 2, two)

    single, rank0, rank1 = rank_records(one), rank_records(two, 0), rank_records(two, 1)
    assert sorted(single) == sorted(rank0) == sorted(rank1) == list(range(1, iters + 1))
    keys = loss_keys(single[1])
    assert 'loss' in keys and len(keys) >= 3            # the total and its terms
    for it in single:
        for key in keys:
            mean = (rank0[it][key] + rank1[it][key]) / 2
            assert abs(single[it][key] - mean) <= 1e-5, (it, key, single[it][key], mean)
    # the ranks saw different images: rank 0 alone is not the global batch's loss
    assert max(abs(rank0[it]['loss'] - rank1[it]['loss']) for it in single) > 1e-3
    # what mmengine logged in the 2-process run is rank 0's own loss
    logged = scalars(two)
    assert all(logged[it]['loss'] == pytest.approx(rank0[it]['loss'], abs=1e-6) for it in rank0)

    for it, name in ckpts:
        a, b = state_dict(os.path.join(one, name)), state_dict(os.path.join(two, name))
        assert max_abs_diff(a, b) <= 1e-5, f'weights after iteration {it} differ'
    # the steps are large compared with the tolerance (the comparison can see a wrong gradient)
    assert max_abs_diff(state_dict(os.path.join(one, ckpts[0][1])), a) > 1e-3


# --------------------------------------------------------------------------------------------
# 2. bfloat16 mixed precision
# --------------------------------------------------------------------------------------------
AMP_FLAG = ['--amp']      # the mm tools' switch: AmpOptimWrapper, on CPU bfloat16
AMP_OPTIONS = ['--cfg-options', 'optim_wrapper.type=AmpOptimWrapper',
               'optim_wrapper.dtype=bfloat16']


@pytest.mark.parametrize('rel', slow_except('seg-wtconv', ALL))
def test_bf16_amp_trains_close_to_fp32(demo_data, tmp_path, rel):
    """mmengine's ``AmpOptimWrapper`` in bfloat16 on CPU (made buildable there by
    ``convzoo_mm.compat``) trains the demo config: finite losses, fp32 master weights, and the
    first iteration's loss (same weights, same images) within 2e-2 (relative) of the fp32 run's
    but not equal to it (autocast really ran). ``--amp`` for the default case, the explicit
    ``optim_wrapper`` options for the others."""
    cfg = short_config(tmp_path / 'cfg.py', rel, 2, randomness=dict(seed=0),
                       checkpoint=dict(interval=2))
    amp, fp32 = str(tmp_path / 'amp'), str(tmp_path / 'fp32')
    run_tool('train.py', cfg, '--work-dir', amp,
             *(AMP_FLAG if rel == SEG['wtconv'] else AMP_OPTIONS), env=ENV)
    run_tool('train.py', cfg, '--work-dir', fp32, env=ENV)
    low, ref = rank_records(amp), rank_records(fp32)
    assert sorted(low) == sorted(ref) == [1, 2]
    for rec in low.values():
        assert all(math.isfinite(rec[k]) for k in loss_keys(rec)), rec
    for key in loss_keys(ref[1]):
        assert abs(low[1][key] - ref[1][key]) <= 2e-2 * abs(ref[1][key]), (key, low[1], ref[1])
    assert low[1]['loss'] != ref[1]['loss']
    ckpt = torch.load(os.path.join(amp, 'epoch_2.pth' if is_det(rel) else 'iter_2.pth'),
                      map_location='cpu', weights_only=True)
    assert 'loss_scaler' in ckpt['optimizer']                   # it was the AmpOptimWrapper
    params = [v for v in ckpt['state_dict'].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in params)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='float16 AMP needs a GPU')
def test_fp16_amp_on_gpu_trains_close_to_fp32(demo_data, tmp_path):
    """With a GPU (never in CI): ``AmpOptimWrapper`` in float16 with its dynamic loss scaler
    trains the WTConv seg demo config: finite losses within 2e-2 of the fp32 run's first one."""
    rel = SEG['wtconv']
    cfg = short_config(tmp_path / 'cfg.py', rel, 2, randomness=dict(seed=0),
                       checkpoint=dict(interval=2))
    amp, fp32 = str(tmp_path / 'amp'), str(tmp_path / 'fp32')
    run_tool('train.py', cfg, '--work-dir', amp, '--cfg-options',
             'optim_wrapper.type=AmpOptimWrapper', 'optim_wrapper.dtype=float16',
             'optim_wrapper.loss_scale=dynamic', env=ENV)
    run_tool('train.py', cfg, '--work-dir', fp32, env=ENV)
    low, ref = rank_records(amp), rank_records(fp32)
    assert all(math.isfinite(rec[k]) for rec in low.values() for k in loss_keys(rec))
    assert abs(low[1]['loss'] - ref[1]['loss']) <= 2e-2 * abs(ref[1]['loss'])


def test_amp_optim_wrapper_on_cpu():
    """The CPU shim of ``AmpOptimWrapper`` (``convzoo_mm.compat``): bfloat16 autocast in
    ``optim_context``, plain fp32 steps, a loadable state dict; float16 is refused (CPU autocast
    in mmengine is bfloat16 only)."""
    import convzoo_mm  # noqa: F401
    from mmengine.optim import build_optim_wrapper
    if torch.cuda.is_available():
        pytest.skip('the shim only acts without an accelerator')
    model = torch.nn.Linear(4, 3)
    cfg = dict(type='AmpOptimWrapper', dtype='bfloat16', optimizer=dict(type='SGD', lr=0.1))
    wrapper = build_optim_wrapper(model, cfg)
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().square().mean())
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)
    state = wrapper.state_dict()
    assert 'loss_scaler' in state
    build_optim_wrapper(model, cfg).load_state_dict(state)
    with pytest.raises(ValueError, match='bfloat16'):
        build_optim_wrapper(model, dict(cfg, dtype='float16'))


def demo_layer(name):
    """The layers as the demo configs use them (mm conv slot, 32 -> 32 channels)."""
    from mmcv.cnn import build_conv_layer
    from convzoo_mm import OctaveConv
    if name == 'OctaveConv':
        return OctaveConv(32, 32, 3, alpha_in=0.5, alpha_out=0.5)
    cfg = dict(type='WTConv', wt_levels=2) if name == 'WTConv' else dict(type='DRConv',
                                                                        num_regions=4)
    return build_conv_layer(cfg, 32, 32, 3, padding=1, bias=False)


@pytest.mark.parametrize('name', ['WTConv', 'OctaveConv', 'DRConv'])
def test_layer_autocast_bf16_close_to_fp32(name):
    """Each layer under ``torch.autocast('cpu', dtype=torch.bfloat16)``: bf16 output within 2e-2
    of the fp32 output's scale (max |y|), and a backward pass that leaves finite fp32 parameter
    gradients (within 2e-2 of fp32's, relative L2). DRConv's hard region assignment (argmax of
    the guide) may flip where two guide logits tie within bf16 rounding; those pixels (a few %)
    legitimately take another region's filter, so its output is compared where both runs pick
    the same region, and its gradients (which sum over the flipped pixels too) only for
    finiteness and dtype."""
    torch.manual_seed(0)
    layer = demo_layer(name)
    x = torch.randn(2, 32, 32, 32)
    weight = torch.linspace(-1, 1, 2 * 32 * 32 * 32).view(2, 32, 32, 32)

    def run(autocast):
        layer.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y = layer(x)
            region = layer.guide(x).argmax(1) if name == 'DRConv' else None
        (y.float() * weight).sum().backward()
        return y, region, {n: p.grad.clone() for n, p in layer.named_parameters()}

    ref, ref_region, ref_grads = run(False)
    low, low_region, low_grads = run(True)
    assert low.dtype == torch.bfloat16 and ref.dtype == torch.float32
    keep = torch.ones_like(ref, dtype=torch.bool)
    if name == 'DRConv':
        same = ref_region == low_region
        assert same.float().mean() > 0.9
        keep = same[:, None].expand_as(ref)
    err = (low.float() - ref).abs()[keep].max()
    assert err <= 2e-2 * ref.abs().max(), (err, ref.abs().max())
    for n, g in low_grads.items():
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), n
        if name != 'DRConv':
            assert (g - ref_grads[n]).norm() <= 2e-2 * ref_grads[n].norm(), n


# --------------------------------------------------------------------------------------------
# 3. deterministic resume
# --------------------------------------------------------------------------------------------
def test_random_state_hook_round_trip_weights_only(tmp_path):
    """The RNG state goes through a weights-only checkpoint and brings back the same draws of
    torch, numpy and random; a fine-tuning load (``load_from``, not a resume) leaves it alone."""
    import random
    import types

    import numpy as np

    from convzoo_mm.hooks import RandomStateHook

    def draws():
        return torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random()

    hook, ckpt = RandomStateHook(), {}
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    draws()
    hook.before_save_checkpoint(None, ckpt)
    expected = draws()
    torch.save(ckpt, tmp_path / 'c.pth')
    loaded = torch.load(tmp_path / 'c.pth', weights_only=True)
    draws()
    hook.after_load_checkpoint(types.SimpleNamespace(_resume=False), loaded)
    assert draws() != expected
    hook.after_load_checkpoint(types.SimpleNamespace(_resume=True), loaded)
    assert draws() == expected


def test_random_state_hook_cuda_and_ranks(monkeypatch):
    """The CUDA part is the current device's generator (each rank's own GPU), restored into the
    current device, so a resume on fewer GPUs works; older checkpoints' per-device lists give
    device 0's. Several ranks restore rank 0's state, except with diff_rank_seed=True, where
    the ranks' streams differ: then mmengine's per-rank re-seeding stays (torch's generator
    stands in for all four here). CUDA is simulated (CI has no GPU)."""
    import types

    import convzoo_mm.hooks as hooks

    calls = []
    with monkeypatch.context() as m:
        for name, fn in dict(is_available=lambda: True, is_initialized=lambda: True,
                             get_rng_state=lambda: torch.tensor([7], dtype=torch.uint8),
                             set_rng_state=lambda t: calls.append(('set', t.tolist())),
                             get_rng_state_all=lambda: calls.append('get_all'),
                             set_rng_state_all=lambda ts: calls.append('set_all')).items():
            m.setattr(torch.cuda, name, fn)
        state = hooks.get_random_state()
        assert state['cuda'].tolist() == [7]
        hooks.set_random_state(state)
        old = dict(state, cuda=[torch.tensor([3], dtype=torch.uint8),
                                torch.tensor([4], dtype=torch.uint8)])
        hooks.set_random_state(old)
    assert calls == [('set', [7]), ('set', [3])]

    hook, ckpt = hooks.RandomStateHook(), {}
    torch.manual_seed(1)
    hook.before_save_checkpoint(None, ckpt)
    expected = torch.rand(3).tolist()
    monkeypatch.setattr(hooks, 'get_world_size', lambda: 2)
    for diff, restored in ((False, True), (True, False)):
        torch.manual_seed(5)
        runner = types.SimpleNamespace(_resume=True, _randomness_cfg=dict(seed=0,
                                                                           diff_rank_seed=diff))
        hook.after_load_checkpoint(runner, ckpt)
        assert (torch.rand(3).tolist() == expected) == restored, diff


def resume_case(tmp_path, rel, n=4, stop=2):
    loader = dict(persistent_workers=False) if is_det(rel) else {}
    cfg = short_config(tmp_path / 'cfg.py', rel, n, randomness=dict(seed=0, deterministic=True),
                       checkpoint=dict(interval=stop, max_keep_ckpts=3), loader=loader)
    limit = f'train_cfg.max_epochs={stop}' if is_det(rel) else f'train_cfg.max_iters={stop}'
    ckpt = 'epoch_{}.pth' if is_det(rel) else 'iter_{}.pth'
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    run_tool('train.py', cfg, '--work-dir', whole, env=ENV)
    run_tool('train.py', cfg, '--work-dir', parts, '--cfg-options', limit, env=ENV)
    assert os.path.isfile(os.path.join(parts, ckpt.format(stop)))
    assert not os.path.exists(os.path.join(parts, ckpt.format(n)))
    proc = run_tool('train.py', cfg, '--work-dir', parts, '--resume', env=ENV)
    assert f'iter: {stop}' in proc.stdout + proc.stderr          # "resumed epoch: .., iter: 2"
    return whole, parts, ckpt.format(n)


@pytest.mark.parametrize('rel', slow_except('seg-wtconv', ALL))   # seg: with dropout
def test_resume_equals_uninterrupted(demo_data, tmp_path, rel):
    """Train 4 iterations at once, or 2, stop, then ``tools/train.py --resume`` to 4 (seed 0,
    ``deterministic=True``, the demo's optimizer, schedule, BatchNorm, loader process and random
    flip, dropout and drop path): iterations 3-4 log the same losses in ``vis_data/scalars.json``
    (the logged value is the mean over the logger window, so the message-hub history restored
    from the checkpoint counts too), every iteration's unrounded loss is equal, and the final
    weights (BN statistics included) are bit-identical.

    The model's random draws (UperNet's decode/auxiliary dropout, WTConvNeXt's drop path) resume
    exactly because the demo configs' ``RandomStateHook`` checkpoints the RNG state (mmengine
    0.10.7 does not: without the hook the resumed process restarts its RNG from the seed and the
    runs differ from iteration 3 on). Removed from the demo config:

    * det (epoch loop) only: ``persistent_workers`` (off here). A persistent loader worker's RNG
      (random flip) runs on across epochs, but the resumed run starts a fresh worker seeded as at
      epoch 1 (mmengine's ``worker_init_fn`` seed does not depend on the epoch). The seg
      iteration loop needs no change: on resume it re-draws the skipped batches
      ("Advance dataloader"), which brings the worker's RNG to the same state.
    """
    n, stop = 4, 2
    whole, parts, last = resume_case(tmp_path, rel, n, stop)
    a, b = scalars(whole), scalars(parts)
    assert sorted(a) == sorted(b) == list(range(1, n + 1))
    for it in range(stop + 1, n + 1):
        for key in loss_keys(a[it]):
            assert a[it][key] == b[it][key], (it, key, a[it][key], b[it][key])
    ra, rb = rank_records(whole), rank_records(parts)
    assert [ra[it] for it in range(1, n + 1)] == [rb[it] for it in range(1, n + 1)]
    sa, sb = state_dict(os.path.join(whole, last)), state_dict(os.path.join(parts, last))
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'
