# WTConv (2 Haar levels) in the Bottleneck 3x3 slot of stages c3-c5, through mmdet's dcn slot.
_base_ = ['./_base_/demo_det.py']
model = dict(backbone=dict(dcn=dict(type='WTConv', wt_levels=2),
                           stage_with_dcn=(False, True, True, True)))
