# Baseline for the DRConv Mask R-CNN configs: mmdet's own R50-FPN 1x, unchanged.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
