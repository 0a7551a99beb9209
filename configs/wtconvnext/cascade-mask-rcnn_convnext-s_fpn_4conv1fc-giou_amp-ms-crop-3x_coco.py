# Cascade Mask R-CNN 3x on COCO with ConvNeXt (baseline)-S: the ConvNeXt recipe of mmdet
# (4conv1fc SyncBN heads, GIoU, multi-scale 480-800 + crop aug, AMP, AdamW lr 2e-4 wd 0.05, layer-wise
# decay 0.7 over 12 layers, drop path 0.6, 36 epochs with steps 27/33, 1000-iter warmup;
# 8 GPUs x 2 images) with only the backbone swapped for convzoo_mm's WTConvNeXt class.
_base_ = ['mmdet::convnext/cascade-mask-rcnn_convnext-s-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)

# ImageNet-1k ConvNeXt-S: the mmpretrain checkpoint that mmdet's/mmseg's own ConvNeXt
# configs load (our baseline has the same parameter names, no conversion needed). A timm or
# facebookresearch checkpoint works too after
#   python tools/convert_wtconvnext.py convnext_small_1k_224.pth \
#       checkpoints/convnext-small_in1k_convzoo.pth --arch small
convnext_small_in1k = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-small_3rdparty_32xb128-noema_in1k_20220301-303e75e3.pth'  # noqa: E501

model = dict(
    backbone=dict(
        _delete_=True,
        type='WTConvNeXt',
        arch='small',
        conv_type='plain',  # ConvNeXt baseline: 7x7 depthwise conv
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.6,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=convnext_small_in1k, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
