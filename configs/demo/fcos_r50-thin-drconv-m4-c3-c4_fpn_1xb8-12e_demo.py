# DRConv (paper generator, m=4) in the Bottleneck 3x3 slot of stages c3-c4 of the thin demo
# R50, through mmdet's dcn slot (the default placement of configs/drconv).
_base_ = ['./_base_/demo_det.py']
model = dict(backbone=dict(dcn=dict(type='DRConv', num_regions=4),
                           stage_with_dcn=(False, True, True, False)))
