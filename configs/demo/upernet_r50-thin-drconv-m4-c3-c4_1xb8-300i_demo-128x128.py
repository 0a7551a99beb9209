# DRConv (paper generator, m=4) in the Bottleneck 3x3 slot of stages c3-c4 of the thin demo
# ResNetV1c-50 UperNet, through mmseg's dcn slot (the placement of the DRConv det demo config).
_base_ = ['./_base_/demo_seg.py']
model = dict(backbone=dict(dcn=dict(type='DRConv', num_regions=4),
                           stage_with_dcn=(False, True, True, False)))
