# Baseline for the Faster R-CNN OctaveConv config: mmdet's own R50-FPN 1x, unchanged.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
