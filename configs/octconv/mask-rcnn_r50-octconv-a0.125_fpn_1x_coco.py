# Mask R-CNN Oct-R50-FPN 1x, COCO: mmdet's R50 recipe with every bottleneck conv an OctaveConv,
# alpha = 0.125 in stages 1-3 and 0 in stage 4 (the paper's Oct-ResNet). Same parameter names and
# shapes as ResNet-50, so torchvision://resnet50 (the base's init_cfg) loads with no missing keys.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='OctResNet', alpha=0.125))
