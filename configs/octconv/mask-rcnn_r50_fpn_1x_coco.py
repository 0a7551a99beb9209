# Baseline for configs/octconv: mmdet's own Mask R-CNN R50-FPN 1x, unchanged.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
