"""Oct-ResNet (Chen et al., ICCV 2019): ResNet with every bottleneck conv an OctaveConv.

Layout and parameter names are those of mmdet's ``ResNet`` (``conv1``/``bn1`` stem, or the deep
``stem.*`` of mmseg's ``ResNetV1c``; ``layer{i}.{j}.conv{1,2,3}``, ``bn{1,2,3}``,
``downsample.{0,1}``) with **the same parameter shapes**: each OctaveConv keeps the plain conv's
weight and each norm keeps the plain width, applied to the high and the low branch with its
channel slices (see ``convzoo_mm.layers.octconv.octave_norm``). So ``torchvision://resnet50`` and
``open-mmlab://resnet50_v1c`` checkpoints load with no missing or unexpected backbone keys, and an
Oct-ResNet checkpoint is a plain ResNet checkpoint. With ``alpha=0`` the network is exactly
mmdet's ``ResNet`` (mmseg's ``ResNetV1c`` with ``deep_stem=True``).

Features stay split ``(high, low)`` inside the stages; stage ``i`` uses ``alpha[i]`` (default
``(a, a, a, 0)`` as in the paper: the first bottleneck of stage 1 takes the plain stem output
with ``alpha_in = 0``, the first one of stage 4 merges back with ``alpha_out = 0``). Each output
handed to the neck is one tensor with the usual ``256 * 2**i`` channels (for ``base_channels=64``)
at strides 4/8/16/32: the low branch is upsampled (nearest, cropped) and concatenated after the
high one.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, Sequential

from ..layers.checks import check_choice, check_float, check_int, known_options
from ..layers.octconv import OctaveConv, check_split, octave_apply, octave_merge, octave_norm
from ..registry import register
from .base import FreezableBackbone

__all__ = ['OctResNet', 'OctResNetV1c', 'OctBottleneck']


def _build_norm(norm_cfg: dict, channels: int, postfix: Union[int, str] = ''):
    from mmcv.cnn import build_norm_layer
    return build_norm_layer(norm_cfg, channels, postfix=postfix)


class _OctDownsample(Sequential):
    """Shortcut projection ``[OctaveConv 1x1, norm]`` (names ``downsample.0``, ``downsample.1``)."""

    def forward(self, x):
        return octave_norm(self[1], self[0](x))


class OctBottleneck(BaseModule):
    """mmdet ``Bottleneck`` with OctaveConv 1x1-3x3-1x1 convs (split mode, per-branch norms).

    Args:
        inplanes (int): input channels (both branches).
        planes (int): middle channels; output ``planes * 4``.
        stride (int): 1 or 2 (in conv2 for style 'pytorch', conv1 for 'caffe').
        dilation (int): dilation of conv2.
        downsample (nn.Module | None): shortcut projection.
        style (str): 'pytorch' or 'caffe'.
        with_cp (bool): gradient checkpointing.
        norm_cfg (dict): norm of every conv.
        alpha_in (float): low fraction of the input (0 for a plain input tensor).
        alpha (float): low fraction of the middle and output features (0 for plain output).
        init_cfg (dict | list[dict] | None): mmengine initialisation config.

    Input/output: a tensor (alpha 0) or a tuple ``(high (N, C_h, H, W), low (N, C_l,
    ceil(H/2), ceil(W/2)))``.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None, style: str = 'pytorch',
                 with_cp: bool = False, norm_cfg: dict = dict(type='BN', requires_grad=True),
                 alpha_in: float = 0.0, alpha: float = 0.0, init_cfg=None):
        super().__init__(init_cfg)
        check_choice('style', style, ['pytorch', 'caffe'])
        self.inplanes, self.planes = inplanes, planes
        self.stride, self.dilation, self.style, self.with_cp = stride, dilation, style, with_cp
        s1, s2 = (1, stride) if style == 'pytorch' else (stride, 1)
        self.conv1_stride, self.conv2_stride = s1, s2
        self.norm1_name, norm1 = _build_norm(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = _build_norm(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = _build_norm(norm_cfg, planes * self.expansion, postfix=3)
        self.conv1 = OctaveConv(inplanes, planes, 1, stride=s1, bias=False, alpha_in=alpha_in,
                                alpha_out=alpha, split=True)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = OctaveConv(planes, planes, 3, stride=s2, padding=dilation, dilation=dilation,
                                bias=False, alpha_in=alpha, alpha_out=alpha, split=True)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = OctaveConv(planes, planes * self.expansion, 1, bias=False, alpha_in=alpha,
                                alpha_out=alpha, split=True)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self):
        return getattr(self, self.norm1_name)

    @property
    def norm2(self):
        return getattr(self, self.norm2_name)

    @property
    def norm3(self):
        return getattr(self, self.norm3_name)

    def _inner(self, x):
        out = octave_apply(self.relu, octave_norm(self.norm1, self.conv1(x)))
        out = octave_apply(self.relu, octave_norm(self.norm2, self.conv2(out)))
        out = octave_norm(self.norm3, self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        # in place, as mmdet's Bottleneck: the norm's backward does not need its output
        if isinstance(out, torch.Tensor):
            return out.add_(identity)
        return out[0].add_(identity[0]), out[1].add_(identity[1])

    def forward(self, x):
        if self.with_cp and self.training and any(
                t.requires_grad for t in ((x,) if isinstance(x, torch.Tensor) else x)):
            if isinstance(x, torch.Tensor):
                out = cp.checkpoint(self._inner, x, use_reentrant=False)
            else:
                out = cp.checkpoint(lambda h, l: self._inner((h, l)), x[0], x[1],
                                    use_reentrant=False)
        else:
            out = self._inner(x)
        return octave_apply(self.relu, out)


def _stage_alphas(alpha, num_stages: int) -> Tuple[float, ...]:
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        a = check_float('alpha', alpha, 0.0, 1.0)
        return tuple([a] * (num_stages - 1) + [0.0])
    if not isinstance(alpha, (tuple, list)) or len(alpha) != num_stages:
        raise ValueError(f'alpha must be a number in [0, 1) or a sequence of num_stages='
                         f'{num_stages} numbers (one per stage), got {alpha!r}')
    return tuple(check_float(f'alpha[{i}]', a, 0.0, 1.0) for i, a in enumerate(alpha))


@register
class OctResNet(FreezableBackbone):
    """Oct-ResNet backbone with mmdet ``ResNet``'s parameter names and most of its arguments
    (those below; not ``dcn``/``stage_with_dcn``, ``plugins``, ``avg_down`` or ``conv_cfg``:
    the 3x3 slot holds the OctaveConv, and a wrong option name fails at build, naming the
    valid ones).

    Args:
        depth (int): 50, 101 or 152.
        alpha (float | Sequence[float]): low-frequency fraction; a number ``a`` means
            ``(a, ..., a, 0)`` (last stage plain, as in the paper), or one value per stage.
            Default: 0.5.
        in_channels (int): image channels. Default: 3.
        stem_channels (int | None): stem width (default ``base_channels``).
        base_channels (int): width of the first stage's middle convs. Default: 64.
        num_stages (int): 1-4. Default: 4.
        strides (Sequence[int]): stride of the first block of each stage (1 or 2).
        dilations (Sequence[int]): dilation of each stage's 3x3 convs.
        contract_dilation (bool): first block of a dilated stage uses ``dilation // 2``
            (mmseg's option). Default: False.
        out_indices (Sequence[int]): stages whose (merged) output is returned.
        style (str): 'pytorch' (stride in the 3x3) or 'caffe' (stride in the first 1x1).
        deep_stem (bool): three 3x3 convs instead of the 7x7 (V1c). Default: False.
        frozen_stages (int): stages (and stem for >= 0) with frozen parameters; -1 none.
        norm_cfg (dict): norm config (one norm of the plain width per conv, applied per branch).
        norm_eval (bool): keep norm layers in eval mode while training. Default: True.
        with_cp (bool): gradient checkpointing in the bottlenecks. Default: False.
        zero_init_residual (bool): zero the last norm's weight of every block at random init.
        pretrained (str | None): checkpoint (mmseg passes ``model.pretrained`` here); same as
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg (dict | list | None): mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint='torchvision://resnet50')``.

    Input: (N, in_channels, H, W). Output: tuple of (N, 256 * 2**i * base_channels / 64,
    ceil-divided H / 2**(i+2) ...) tensors for ``i`` in ``out_indices`` (sizes as mmdet's ResNet).
    """
    arch_settings = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

    @known_options
    def __init__(self, depth: int = 50, alpha: Union[float, Sequence[float]] = 0.5,
                 in_channels: int = 3, stem_channels: Optional[int] = None,
                 base_channels: int = 64, num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2), dilations: Sequence[int] = (1, 1, 1, 1),
                 contract_dilation: bool = False, out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch', deep_stem: bool = False, frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN', requires_grad=True), norm_eval: bool = True,
                 with_cp: bool = False, zero_init_residual: bool = True,
                 pretrained: Optional[str] = None, init_cfg=None):
        if pretrained is not None:  # mmseg's EncoderDecoder hands `model.pretrained` down here
            if init_cfg is not None:
                raise ValueError('give the checkpoint either as pretrained or in init_cfg, '
                                 f'not both (pretrained={pretrained!r}, init_cfg={init_cfg!r})')
            if not isinstance(pretrained, str):
                raise ValueError(f'pretrained must be a checkpoint path/URL string, '
                                 f'got {pretrained!r}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg)
        check_choice('depth', depth, sorted(self.arch_settings))
        num_stages = check_int('num_stages', num_stages, 1, 4)
        base_channels = check_int('base_channels', base_channels)
        stem_channels = base_channels if stem_channels is None else check_int(
            'stem_channels', stem_channels)
        check_choice('style', style, ['pytorch', 'caffe'])
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(f'strides={tuple(strides)} and dilations={tuple(dilations)} need '
                             f'num_stages={num_stages} entries each')
        for i, s in enumerate(strides):
            check_choice(f'strides[{i}]', s, [1, 2])
        for i, d in enumerate(dilations):
            check_int(f'dilations[{i}]', d)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of range(num_stages='
                             f'{num_stages}), got {tuple(out_indices)}')
        check_int('frozen_stages', frozen_stages, -1, num_stages)
        self.alphas = _stage_alphas(alpha, num_stages)
        for i, a in enumerate(self.alphas):  # every conv of stage i splits planes and 4*planes
            name = 'alpha' if isinstance(alpha, (int, float)) else f'alpha[{i}]'
            planes = base_channels * 2**i
            for channels in (planes, planes * OctBottleneck.expansion):
                check_split(name, a, channels, f' (stage {i + 1} of base_channels='
                                               f'{base_channels})')
        self.depth, self.num_stages = depth, num_stages
        self.out_indices = tuple(out_indices)
        self.style, self.deep_stem = style, deep_stem
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self.norm_cfg, self.with_cp = norm_cfg, with_cp
        self.zero_init_residual = zero_init_residual
        self.stem_channels, self.base_channels = stem_channels, base_channels

        self._make_stem(in_channels, stem_channels)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_layers = []
        inplanes, alpha_in = stem_channels, 0.0
        for i, num_blocks in enumerate(self.arch_settings[depth][:num_stages]):
            planes = base_channels * 2**i
            layer = self._make_layer(inplanes, planes, num_blocks, strides[i], dilations[i],
                                     contract_dilation, alpha_in, self.alphas[i])
            name = f'layer{i + 1}'
            self.add_module(name, layer)
            self.res_layers.append(name)
            inplanes, alpha_in = planes * OctBottleneck.expansion, self.alphas[i]
        self.feat_dim = inplanes
        self._freeze_stages()

    def _make_stem(self, in_channels: int, stem_channels: int) -> None:
        if self.deep_stem:
            half = stem_channels // 2
            layers = []
            for cin, cout, stride in ((in_channels, half, 2), (half, half, 1),
                                      (half, stem_channels, 1)):
                layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                           _build_norm(self.norm_cfg, cout)[1], nn.ReLU(inplace=True)]
            self.stem = nn.Sequential(*layers)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False)
            self.norm1_name, norm1 = _build_norm(self.norm_cfg, stem_channels, postfix=1)
            self.add_module(self.norm1_name, norm1)
            self.relu = nn.ReLU(inplace=True)

    def _make_layer(self, inplanes, planes, num_blocks, stride, dilation, contract_dilation,
                    alpha_in, alpha) -> Sequential:
        out = planes * OctBottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = _OctDownsample(
                OctaveConv(inplanes, out, 1, stride=stride, bias=False, alpha_in=alpha_in,
                           alpha_out=alpha, split=True),
                _build_norm(self.norm_cfg, out)[1])
        first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
        blocks = []
        for j in range(num_blocks):
            blocks.append(OctBottleneck(
                inplanes if j == 0 else out, planes, stride if j == 0 else 1,
                first_dilation if j == 0 else dilation, downsample if j == 0 else None,
                self.style, self.with_cp, self.norm_cfg, alpha_in if j == 0 else alpha, alpha))
        return Sequential(*blocks)  # mmengine's: init_weights reaches the blocks

    @property
    def norm1(self):
        return getattr(self, self.norm1_name)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            stem = [self.stem] if self.deep_stem else [self.conv1, self.norm1]
            for m in stem:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            m = getattr(self, f'layer{i}')
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def init_weights(self) -> None:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs)
        if self.init_cfg is None:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        super().init_weights()
        if self.zero_init_residual and not pretrained:
            for m in self.modules():
                if isinstance(m, OctBottleneck) and m.norm3.weight is not None:
                    nn.init.zeros_(m.norm3.weight)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(octave_merge(x))
        return tuple(outs)



@register
class OctResNetV1c(OctResNet):
    """Oct-ResNet with the deep stem (mmseg ``ResNetV1c`` layout: ``stem.{0,1,3,4,6,7}``)."""

    def __init__(self, **kwargs):
        super().__init__(deep_stem=True, **kwargs)
