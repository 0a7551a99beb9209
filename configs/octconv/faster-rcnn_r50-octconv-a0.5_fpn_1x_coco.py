# Faster R-CNN Oct-R50-FPN 1x, COCO, alpha 0.5 in stages 1-3 (stage 4 plain), mmdet's recipe.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='OctResNet', alpha=0.5))
