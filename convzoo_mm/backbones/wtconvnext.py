"""WTConvNeXt (Finder et al., ECCV 2024) and the plain ConvNeXt v1 baseline for
MMDetection/MMSegmentation.

One class, :class:`WTConvNeXt`, builds both:

* ``conv_type='wtconv'`` (default): ConvNeXt v1 whose 7x7 depthwise conv is replaced by a
  depthwise :class:`~convzoo_mm.layers.wtconv.WTConv` with ``kernel_size=5`` and
  ``wt_levels=(5, 4, 3, 2)`` per stage, as in the published WTConvNeXt;
* ``conv_type='plain'``: the ConvNeXt v1 baseline (7x7 depthwise conv), so the baseline configs
  need no extra package (no mmpretrain).

Parameters are named as in mmpretrain's ``ConvNeXt`` (``downsample_layers.{i}.{0,1}``,
``stages.{i}.{j}.{depthwise_conv, norm, pointwise_conv1, pointwise_conv2, gamma}``, ``norm{i}``
per output), so

* mmpretrain ImageNet ConvNeXt checkpoints (the ones mmdet's and mmseg's own ConvNeXt configs
  load with ``prefix='backbone.'``) load into the baseline; only the output norms ``norm0-2``
  are missing (new, as with mmpretrain's class);
* mmdet's / mmseg's ``LearningRateDecayOptimizerConstructor`` (which accept a backbone whose
  class name contains ``ConvNeXt`` and parse ``downsample_layers.{i}`` / ``stages.{i}.{j}``)
  give the recipes' layer-wise and stage-wise learning-rate decay;
* the official WTConvNeXt ImageNet checkpoints (timm naming) convert with :func:`convert_state_dict`
  (CLI: ``tools/convert_wtconvnext.py``).
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from ..layers.checks import check_choice, check_float, check_input, check_int, known_options
from ..ops import tracing
from ..registry import register
from .base import FreezableBackbone

__all__ = ['WTConvNeXt', 'convert_state_dict', 'check_converted', 'load_source_checkpoint',
           'trainable_param_count', 'ARCH_SETTINGS']

# depths / channels of ConvNeXt v1 (Liu et al. 2022); WTConvNeXt uses the same macro design.
ARCH_SETTINGS = {
    'tiny': dict(depths=(3, 3, 9, 3), channels=(96, 192, 384, 768)),
    'small': dict(depths=(3, 3, 27, 3), channels=(96, 192, 384, 768)),
    'base': dict(depths=(3, 3, 27, 3), channels=(128, 256, 512, 1024)),
    'large': dict(depths=(3, 3, 27, 3), channels=(192, 384, 768, 1536)),
}
DEFAULT_WT_LEVELS = (5, 4, 3, 2)
CONV_TYPES = ('wtconv', 'plain')


# ---------------------------------------------------------------------------------------------
# small pure functions
# ---------------------------------------------------------------------------------------------
def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of the residual branch with probability ``p`` and
    rescale the kept ones by ``1 / (1 - p)``; identity at eval time or for ``p == 0``."""
    if p == 0. or not training:
        return x
    keep = 1. - p
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def drop_path_rates(depths: Sequence[int], drop_path_rate: float) -> List[float]:
    """Linearly increasing stochastic-depth rates over all blocks (0 for the first block,
    ``drop_path_rate`` for the last), as in ConvNeXt / timm / mmpretrain."""
    return [float(r) for r in torch.linspace(0, drop_path_rate, int(sum(depths)))]


def block_param_count(channels: int, conv_type: str, kernel_size: int, wt_levels: int,
                      mlp_ratio: int = 4) -> int:
    """Trainable parameters of one block.

    depthwise conv: plain ``k*k*C + C``; WTConv ``(k*k + 1 + 1)*C`` (base conv + bias + base scale)
    plus ``(4*k*k + 4)*C`` per wavelet level (4C-channel depthwise conv + its scale);
    LayerNorm ``2C``; MLP ``C*rC + rC + rC*C + C``; layer scale ``C``.
    """
    c, k = channels, kernel_size
    if conv_type == 'plain':
        dw = k * k * c + c
    else:
        dw = (k * k + 2) * c + wt_levels * (4 * k * k + 4) * c
    hidden = mlp_ratio * c
    return dw + 2 * c + (c * hidden + hidden) + (hidden * c + c) + c


def trainable_param_count(depths: Sequence[int], channels: Sequence[int], conv_type: str = 'wtconv',
                          kernel_size: Optional[int] = None,
                          wt_levels: Sequence[int] = DEFAULT_WT_LEVELS, in_channels: int = 3,
                          stem_patch_size: int = 4) -> int:
    """Closed-form trainable parameters of ``downsample_layers`` + ``stages`` (no output norms):
    stem conv ``3*C0*p*p + C0`` + LN ``2*C0``; downsample i>0: LN ``2*C(i-1)`` + 2x2 conv
    ``4*C(i-1)*Ci + Ci``; plus the blocks (:func:`block_param_count`)."""
    k = kernel_size or (5 if conv_type == 'wtconv' else 7)
    total = in_channels * channels[0] * stem_patch_size**2 + channels[0] + 2 * channels[0]
    for i, (d, c) in enumerate(zip(depths, channels)):
        if i > 0:
            total += 2 * channels[i - 1] + 4 * channels[i - 1] * c + c
        total += d * block_param_count(c, conv_type, k, wt_levels[i])
    return total


# ---------------------------------------------------------------------------------------------
# checkpoint conversion (timm / facebookresearch / mmpretrain naming -> ours)
# ---------------------------------------------------------------------------------------------
_TIMM_BLOCK = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.(.+)$')
_TIMM_DOWN = re.compile(r'^stages\.(\d+)\.downsample\.([01])\.(weight|bias)$')
_TIMM_STEM = re.compile(r'^stem\.([01])\.(weight|bias)$')
_FB_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.(.+)$')
_FB_DOWN = re.compile(r'^downsample_layers\.(\d+)\.([01])\.(weight|bias)$')
_WT_PARAM = re.compile(r'^(base_conv\.(weight|bias)|base_scale\.weight|'
                       r'wavelet_convs\.\d+\.weight|wavelet_scale\.\d+\.weight)$')
_WT_FROZEN = re.compile(r'^(wt_filter|iwt_filter)$')
_NORM_PARAM = re.compile(r'^norm\.(weight|bias)$')


def detect_format(keys: Sequence[str]) -> str:
    """``'timm'`` (``stem.*``, ``stages.{i}.blocks.{j}.*``: timm ConvNeXt and the official
    WTConvNeXt), ``'fb'`` (facebookresearch ConvNeXt: ``downsample_layers``, ``dwconv``,
    ``pwconv1``) or ``'mmpretrain'`` (``backbone.downsample_layers...``)."""
    keys = list(keys)
    if any(k.startswith('backbone.') for k in keys):
        return 'mmpretrain'
    if any(k.startswith('stem.') for k in keys) or any(_TIMM_BLOCK.match(k) for k in keys):
        return 'timm'
    if any(k.startswith('downsample_layers.') for k in keys):
        return 'fb'
    raise ValueError('checkpoint format not recognised: expected timm keys (stem.*, '
                     'stages.{i}.blocks.{j}.*), facebookresearch ConvNeXt keys '
                     '(downsample_layers.*, stages.{i}.{j}.dwconv.*) or mmpretrain keys '
                     f'(backbone.*); first keys: {keys[:5]}')


def _map_block_rest(rest: str, fmt: str) -> Optional[Tuple[str, bool]]:
    """Map the part of a block key after ``stages.{i}.{j}.``: returns (our name, is_frozen_filter)
    or None if unknown."""
    if rest == 'gamma' or _NORM_PARAM.match(rest):
        return rest, False
    if fmt == 'timm':
        m = re.match(r'^mlp\.fc([12])\.(weight|bias)$', rest)
        if m:
            return f'pointwise_conv{m.group(1)}.{m.group(2)}', False
        dw_prefix = 'conv_dw.'
    elif fmt == 'fb':
        m = re.match(r'^pwconv([12])\.(weight|bias)$', rest)
        if m:
            return f'pointwise_conv{m.group(1)}.{m.group(2)}', False
        dw_prefix = 'dwconv.'
    else:  # mmpretrain / ours
        m = re.match(r'^pointwise_conv([12])\.(weight|bias)$', rest)
        if m:
            return rest, False
        dw_prefix = 'depthwise_conv.'
    if rest.startswith(dw_prefix):
        sub = rest[len(dw_prefix):]
        if sub in ('weight', 'bias') or _WT_PARAM.match(sub):
            return 'depthwise_conv.' + sub, False
        if _WT_FROZEN.match(sub):
            return 'depthwise_conv.' + sub, True
    return None


def _head_norm(key: str, keep: bool) -> Tuple[str, bool]:
    """The final ImageNet norm's parameter ``key``: ``(new key, dropped as head)``, kept as
    ``norm3.*`` (mmpretrain's convention) or dropped with the head."""
    return ('norm3.' + key.split('.')[-1], False) if keep else (key, True)


def convert_state_dict(state_dict: Dict[str, torch.Tensor], fmt: Optional[str] = None,
                       keep_head_norm: bool = True, prefix: str = 'backbone.'
                       ) -> Tuple['OrderedDict[str, torch.Tensor]', Dict[str, List[str]]]:
    """Rename an ImageNet ConvNeXt / WTConvNeXt state dict to :class:`WTConvNeXt` names.

    Every source key is either mapped or listed as dropped; an unknown key raises ``ValueError``.

    Mapping (``fmt='timm'``: official WTConvNeXt and timm ConvNeXt checkpoints):

    ============================================  ============================================
    source                                        ours (after ``prefix``)
    ============================================  ============================================
    ``stem.{0,1}.*``                              ``downsample_layers.0.{0,1}.*``
    ``stages.{i}.downsample.{0,1}.*``             ``downsample_layers.{i}.{0,1}.*``
    ``stages.{i}.blocks.{j}.gamma`` / ``norm.*``  ``stages.{i}.{j}.gamma`` / ``norm.*``
    ``stages.{i}.blocks.{j}.conv_dw.<p>``         ``stages.{i}.{j}.depthwise_conv.<p>``
    ``stages.{i}.blocks.{j}.mlp.fc{1,2}.*``       ``stages.{i}.{j}.pointwise_conv{1,2}.*``
    ``head.norm.*``                               ``norm3.*`` (mmpretrain's convention for the
                                                  final ImageNet norm; dropped if
                                                  ``keep_head_norm=False``)
    ``head.fc.*``                                 dropped (classifier)
    ``...conv_dw.wt_filter`` / ``iwt_filter``     dropped (frozen Haar filters, rebuilt by
                                                  WTConv)
    ============================================  ============================================

    ``fmt='fb'`` (facebookresearch ConvNeXt): ``downsample_layers`` kept, ``dwconv`` /
    ``pwconv{1,2}`` renamed, final ``norm.*`` -> ``norm3.*``, ``head.*`` dropped.
    ``fmt='mmpretrain'``: backbone keys kept (validated), ``head.*`` and ``data_preprocessor.*``
    dropped.

    Args:
        state_dict (dict[str, Tensor]): source weights (``'state_dict'``/``'model'`` wrappers and a
            ``module.`` prefix are removed by :func:`load_source_checkpoint`, not here).
        fmt (str, optional): ``'timm'``, ``'fb'`` or ``'mmpretrain'``; detected when None.
        keep_head_norm (bool): map the final ImageNet norm to ``norm3`` (True, the mmpretrain /
            mmdet / mmseg ConvNeXt convention) or drop it (the official WTConv mmseg script).
        prefix (str): prepended to every output key (``'backbone.'`` for ``init_cfg`` with
            ``prefix='backbone.'``).

    Returns:
        tuple: ``(new_state_dict, report)`` with ``report = {'mapped': [src keys],
        'dropped_head': [...], 'dropped_frozen': [...]}``.
    """
    fmt = fmt or detect_format(state_dict.keys())
    check_choice('fmt', fmt, ('timm', 'fb', 'mmpretrain'))
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    report: Dict[str, List[str]] = {'mapped': [], 'dropped_head': [], 'dropped_frozen': []}
    unknown = []
    for key, value in state_dict.items():
        new = None
        frozen = False
        head = False
        if fmt == 'timm':
            m_stem, m_down = _TIMM_STEM.match(key), _TIMM_DOWN.match(key)
            m_blk = _TIMM_BLOCK.match(key)
            if m_stem:
                new = f'downsample_layers.0.{m_stem.group(1)}.{m_stem.group(2)}'
            elif m_down:
                new = f'downsample_layers.{m_down.group(1)}.{m_down.group(2)}.{m_down.group(3)}'
            elif m_blk:
                r = _map_block_rest(m_blk.group(3), fmt)
                if r is not None:
                    new = f'stages.{m_blk.group(1)}.{m_blk.group(2)}.{r[0]}'
                    frozen = r[1]
            elif re.match(r'^head\.norm\.(weight|bias)$', key):
                new, head = _head_norm(key, keep_head_norm)
            elif re.match(r'^head\.fc\.(weight|bias)$', key):
                new, head = key, True
        elif fmt == 'fb':
            m_down, m_blk = _FB_DOWN.match(key), _FB_BLOCK.match(key)
            if m_down:
                new = key
            elif m_blk:
                r = _map_block_rest(m_blk.group(3), fmt)
                if r is not None:
                    new = f'stages.{m_blk.group(1)}.{m_blk.group(2)}.{r[0]}'
                    frozen = r[1]
            elif _NORM_PARAM.match(key):
                new, head = _head_norm(key, keep_head_norm)
            elif re.match(r'^head\.(weight|bias)$', key):
                new, head = key, True
        else:  # mmpretrain
            if key.startswith('backbone.'):
                rest = key[len('backbone.'):]
                m_blk = _FB_BLOCK.match(rest)
                if _FB_DOWN.match(rest) or re.match(r'^norm\d\.(weight|bias)$', rest):
                    new = rest
                elif m_blk:
                    r = _map_block_rest(m_blk.group(3), fmt)
                    if r is not None:
                        new = f'stages.{m_blk.group(1)}.{m_blk.group(2)}.{r[0]}'
                        frozen = r[1]
            elif key.startswith('head.') or key.startswith('data_preprocessor.'):
                new, head = key, True
        if new is None:
            unknown.append(key)
        elif head:
            report['dropped_head'].append(key)
        elif frozen:
            report['dropped_frozen'].append(key)
        else:
            out[prefix + new] = value
            report['mapped'].append(key)
    if unknown:
        raise ValueError(f'{len(unknown)} source keys of a {fmt!r} checkpoint are not known to the '
                         f'converter (neither mapped nor a head/frozen-filter key): {unknown[:10]}')
    return out, report


def check_converted(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                    prefix: str = 'backbone.') -> List[str]:
    """Load a converted state dict into ``model`` (a :class:`WTConvNeXt`) and raise ``ValueError``
    on unexpected keys, shape mismatches or missing keys other than the output norms
    ``norm{i}`` that ImageNet checkpoints do not have. Returns the missing output-norm keys."""
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if len(sd) != len(state_dict):
        raise ValueError(f'every converted key must start with {prefix!r}')
    own = model.state_dict()
    bad_shape = [f'{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}' for k, v in sd.items()
                 if k in own and v.shape != own[k].shape]
    unexpected = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    allowed = [k for k in missing if re.match(r'^norm[0-3]\.(weight|bias)$', k)]
    missing = [k for k in missing if k not in allowed]
    if bad_shape or unexpected or missing:
        raise ValueError(f'converted checkpoint does not fit the model: shape mismatches '
                         f'{bad_shape[:5]}, unexpected {unexpected[:5]}, missing {missing[:5]}')
    model.load_state_dict(sd, strict=False)
    return allowed


def load_source_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Load an ImageNet checkpoint with ``weights_only=True``; unwrap ``state_dict``/``model``/
    ``state_dict_ema`` (in that order of preference: the plain weights first) and a ``module.``
    prefix."""
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: expected a dict checkpoint, got {type(ckpt).__name__}')
    for wrapper in ('state_dict', 'model', 'state_dict_ema'):
        if wrapper in ckpt and isinstance(ckpt[wrapper], dict):
            ckpt = ckpt[wrapper]
            break
    if ckpt and all(k.startswith('module.') for k in ckpt):
        ckpt = {k[len('module.'):]: v for k, v in ckpt.items()}
    bad = [k for k, v in ckpt.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: non-tensor entries in the state dict: {bad[:5]}')
    return ckpt


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor (parameters ``weight``, ``bias``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt v1 block: depthwise conv -> LayerNorm -> Linear(C, 4C) -> GELU -> Linear(4C, C)
    -> layer scale ``gamma`` -> stochastic depth -> + input.

    Args:
        channels (int): C.
        conv_type (str): ``'wtconv'`` (depthwise WTConv) or ``'plain'`` (depthwise ``nn.Conv2d``).
        kernel_size (int): depthwise kernel size (5 for WTConv, 7 for the baseline).
        wt_levels (int): wavelet levels of the WTConv (ignored for ``'plain'``).
        wt_type (str): wavelet of the WTConv.
        drop_path_rate (float): stochastic depth probability of this block.
        layer_scale_init_value (float): initial ``gamma``; ``<= 0`` disables the layer scale.
        eps (float): LayerNorm epsilon.
        mlp_ratio (int): hidden width of the MLP as a multiple of C.
        with_cp (bool): recompute the block in backward (activation checkpointing).

    Shapes: input and output (N, C, H, W).
    """

    def __init__(self, channels: int, conv_type: str = 'wtconv', kernel_size: int = 5,
                 wt_levels: int = 1, wt_type: str = 'db1', drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6, eps: float = 1e-6, mlp_ratio: int = 4,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate
        if conv_type == 'wtconv':
            from ..layers.wtconv import WTConv  # the lead's layer; imported when first needed
            self.depthwise_conv = WTConv(channels, channels, kernel_size=kernel_size, stride=1,
                                         groups=channels, bias=True, wt_levels=wt_levels,
                                         wt_type=wt_type)
        else:
            self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size,
                                            padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=eps)
        self.pointwise_conv1 = nn.Linear(channels, mlp_ratio * channels)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(mlp_ratio * channels, channels)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((channels, ), float(layer_scale_init_value)))
        else:
            self.gamma = None

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        x = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        x = x.permute(0, 3, 1, 2)
        return shortcut + drop_path(x, self.drop_path_rate, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


@register
class WTConvNeXt(FreezableBackbone):
    """WTConvNeXt backbone (and the ConvNeXt v1 baseline with ``conv_type='plain'``).

    `Wavelet Convolutions for Large Receptive Fields <https://arxiv.org/abs/2407.05848>`_
    (ECCV 2024) on `A ConvNet for the 2020s <https://arxiv.org/abs/2201.03545>`_. Parameter
    names follow mmpretrain's ``ConvNeXt`` (see the module docstring).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'large'`` or a dict with
            ``depths`` and ``channels`` (4 entries each) and optionally ``wt_levels``.
        in_channels (int): input image channels. Default 3.
        conv_type (str): ``'wtconv'`` (WTConvNeXt) or ``'plain'`` (ConvNeXt baseline).
        kernel_size (int, optional): depthwise kernel size; default 5 for ``'wtconv'``, 7 for
            ``'plain'``.
        wt_levels (Sequence[int], optional): wavelet levels per stage. Default: an ``arch``
            dict's ``wt_levels``, else ``(5, 4, 3, 2)``; giving both with different values is
            an error (one of them would be ignored).
        wt_type (str): wavelet (pywavelets name). Default ``'db1'``.
        stem_patch_size (int): stride and size of the patchify stem conv. Default 4.
        drop_path_rate (float): stochastic depth rate of the last block (linear from 0). Default 0.
        layer_scale_init_value (float): initial layer scale (>= 0); 0 disables it. Default 1e-6.
        norm_eps (float): LayerNorm epsilon. Default 1e-6.
        out_indices (Sequence[int] | int): stages whose (normalised) outputs are returned; each gets
            a LayerNorm ``norm{i}``. Negative indices count from the end. Default ``(0, 1, 2, 3)``.
        frozen_stages (int): freeze ``downsample_layers[i]`` and ``stages[i]`` for
            ``i < frozen_stages`` (``requires_grad=False``, kept in eval mode). Default 0.
        norm_eval (bool): keep BatchNorm-type layers (running statistics) in eval mode while
            training. ConvNeXt uses only LayerNorm, which has no running statistics, so with the
            default layers this changes nothing; it is accepted for mm-config compatibility.
        gap_before_final_norm (bool): global-average-pool before the output norms (classification
            use, outputs (N, C)); dense prediction uses False. Default False.
        with_cp (bool): activation checkpointing per block. Default False.
        init_cfg (dict | list[dict], optional): mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

    Shapes:
        input (N, in_channels, H, W); output: tuple with, per ``i`` in ``out_indices``, a tensor
        (N, channels[i], floor(H / 4 / 2**i), ...) (the stem and the downsamples are strided
        convs without padding, as in ConvNeXt: exactly H / (4 * 2**i) for multiples of 32; H
        and W must be at least 8 * stem_patch_size, 32 by default; a ValueError says so).
    """
    arch_settings = ARCH_SETTINGS

    @known_options
    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 conv_type: str = 'wtconv',
                 kernel_size: Optional[int] = None,
                 wt_levels: Optional[Sequence[int]] = None,
                 wt_type: str = 'db1',
                 stem_patch_size: int = 4,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 norm_eps: float = 1e-6,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = 0,
                 norm_eval: bool = False,
                 gap_before_final_norm: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            check_choice('arch', arch, list(self.arch_settings))
            arch = dict(self.arch_settings[arch])
        elif isinstance(arch, dict):
            missing = {'depths', 'channels'} - set(arch)
            extra = set(arch) - {'depths', 'channels', 'wt_levels'}
            if missing or extra:
                raise ValueError(f'arch dict must have keys depths, channels (and optionally '
                                 f'wt_levels), got {sorted(arch)}')
        else:
            raise ValueError(f'arch must be one of {list(self.arch_settings)} or a dict, '
                             f'got {arch!r}')
        depths, channels = list(arch['depths']), list(arch['channels'])
        if 'wt_levels' in arch and wt_levels is not None and \
                list(arch['wt_levels']) != list(wt_levels):
            raise ValueError(f"wt_levels={tuple(wt_levels)} conflicts with arch['wt_levels']="
                             f"{tuple(arch['wt_levels'])}: give the levels in one place (the "
                             f"arch dict's would win)")
        wt_levels = list(arch.get('wt_levels', DEFAULT_WT_LEVELS if wt_levels is None
                                  else wt_levels))
        for name, seq in (('arch depths', depths), ('arch channels', channels),
                          ('wt_levels', wt_levels)):
            if len(seq) != 4:
                raise ValueError(f'{name} must have 4 entries (one per stage), got {seq}')
        for i in range(4):
            check_int(f'arch depths[{i}]', depths[i], 1)
            check_int(f'arch channels[{i}]', channels[i], 1)
            check_int(f'wt_levels[{i}]', wt_levels[i], 0)
        self.conv_type = check_choice('conv_type', conv_type, CONV_TYPES)
        if kernel_size is None:
            kernel_size = 5 if conv_type == 'wtconv' else 7
        check_int('kernel_size', kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd (same padding), got {kernel_size}')
        check_int('in_channels', in_channels, 1)
        check_int('stem_patch_size', stem_patch_size, 1)
        check_float('drop_path_rate', drop_path_rate, 0., 1.)
        check_float('layer_scale_init_value', layer_scale_init_value, 0., float('inf'))
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        out_indices = [check_int('out_indices entry', i, -4, 3) % 4 for i in out_indices]
        if len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices must not repeat a stage, got {out_indices}')
        self.depths, self.channels, self.wt_levels = depths, channels, wt_levels
        self.kernel_size, self.wt_type = kernel_size, wt_type
        self.in_channels, self.stem_patch_size = in_channels, stem_patch_size
        self.out_indices = sorted(out_indices)
        self.frozen_stages = check_int('frozen_stages', frozen_stages, 0, 4)
        self.norm_eval = bool(norm_eval)
        self.gap_before_final_norm = bool(gap_before_final_norm)
        self.num_stages = 4

        dpr = drop_path_rates(depths, drop_path_rate)
        self.downsample_layers = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_channels, channels[0], stem_patch_size, stride=stem_patch_size),
            LayerNorm2d(channels[0], eps=norm_eps)))
        block_idx = 0
        for i in range(4):
            if i > 0:
                self.downsample_layers.append(nn.Sequential(
                    LayerNorm2d(channels[i - 1], eps=norm_eps),
                    nn.Conv2d(channels[i - 1], channels[i], 2, stride=2)))
            self.stages.append(nn.Sequential(*[
                ConvNeXtBlock(channels[i], conv_type=conv_type, kernel_size=kernel_size,
                              wt_levels=wt_levels[i], wt_type=wt_type,
                              drop_path_rate=dpr[block_idx + j],
                              layer_scale_init_value=layer_scale_init_value, eps=norm_eps,
                              with_cp=with_cp) for j in range(depths[i])
            ]))
            block_idx += depths[i]
            if i in self.out_indices:
                self.add_module(f'norm{i}', LayerNorm2d(channels[i], eps=norm_eps))
        self._freeze_stages()

    # -- init ---------------------------------------------------------------------------------
    def _default_init(self) -> None:
        """ConvNeXt / timm initialisation: every ``nn.Conv2d`` and ``nn.Linear`` (including the
        convs inside WTConv) truncated-normal std 0.02 with zero bias, LayerNorms 1/0; WTConv's own
        ``init_weights`` runs first for its scales (1.0 base, 0.1 wavelet)."""
        for m in self.modules():
            if m is not self and hasattr(m, 'init_weights') and callable(m.init_weights):
                m.init_weights()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Default ConvNeXt init, then mmengine's ``init_cfg`` (``Pretrained`` loads last)."""
        if not getattr(self, '_is_init', False):
            self._default_init()
        super().init_weights()

    # -- train / freeze -----------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for p in module.parameters():
                    p.requires_grad = False


    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_input(x, self.in_channels, 'WTConvNeXt')
        least = 8 * self.stem_patch_size  # the stem, then three 2x2 stride-2 downsamples
        if not tracing() and min(x.shape[-2:]) < least:
            raise ValueError(f'WTConvNeXt: input size {tuple(x.shape[-2:])} is too small: H and '
                             f'W must be at least 8 * stem_patch_size = {least}')
        outs = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean((-2, -1), keepdim=True)).flatten(1))
                else:
                    outs.append(norm(x))
        return tuple(outs)
