# Mask R-CNN R50-FPN 1x, COCO, with DRConv (paper generator, m=4) in the Bottleneck 3x3 slot of
# stage c5 only (3 blocks, 512 channels): +8.73 M backbone parameters (+37.1% over R50), above
# the +30% of the default placement because the paper's generator grows as m^2*C^2.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(dcn=dict(type='DRConv', num_regions=4, generator='full'),
                           stage_with_dcn=(False, False, False, True)))
