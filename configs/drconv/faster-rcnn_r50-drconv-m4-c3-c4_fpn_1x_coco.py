# Faster R-CNN R50-FPN 1x, COCO, with DRConv (paper generator, m=4) in the Bottleneck 3x3 slot
# of stages c3-c4 (the default placement, +21.9% backbone parameters; see docs/drconv.md).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(dcn=dict(type='DRConv', num_regions=4, generator='full'),
                           stage_with_dcn=(False, True, True, False)))
