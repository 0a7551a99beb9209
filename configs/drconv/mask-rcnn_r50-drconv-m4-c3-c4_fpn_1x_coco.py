# Mask R-CNN R50-FPN 1x, COCO, with DRConv (paper generator, m=4 regions) in the Bottleneck 3x3
# slot of stages c3-c4 (mmdet's dcn slot; 4 + 6 blocks). Default placement: the largest set of
# stages within +30% backbone parameters (+5.15 M, +21.9% over R50's 23.51 M; see docs/drconv.md).
# The ImageNet R50 checkpoint loads everything except the replaced 3x3 weights (DRConv has no
# static kernel): those DRConv layers start from DRConv.init_weights().
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(dcn=dict(type='DRConv', num_regions=4, generator='full'),
                           stage_with_dcn=(False, True, True, False)))
