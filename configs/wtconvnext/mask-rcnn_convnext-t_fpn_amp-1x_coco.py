# Mask R-CNN 1x on COCO with ConvNeXt (baseline)-T. mmdet ships no 1x ConvNeXt recipe; this is the 3x recipe
# (AdamW lr 1e-4 wd 0.05, layer-wise decay 0.95 over 6 layers, drop path 0.4, AMP) on mmdet's standard
# 1x schedule and pipeline: single scale 1333x800 with flip, 12 epochs, steps 8/11, 500-iter warmup
# (as the Swin/ConvNeXt 1x tables); 8 GPUs x 2 images.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)

# ImageNet-1k ConvNeXt-T: the mmpretrain checkpoint that mmdet's/mmseg's own ConvNeXt
# configs load (our baseline has the same parameter names, no conversion needed). A timm or
# facebookresearch checkpoint works too after
#   python tools/convert_wtconvnext.py convnext_tiny_1k_224.pth \
#       checkpoints/convnext-tiny_in1k_convzoo.pth --arch tiny
convnext_tiny_in1k = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth'  # noqa: E501

model = dict(
    backbone=dict(
        _delete_=True,
        type='WTConvNeXt',
        arch='tiny',
        conv_type='plain',  # ConvNeXt baseline: 7x7 depthwise conv
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=convnext_tiny_in1k, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg={'decay_rate': 0.95, 'decay_type': 'layer_wise', 'num_layers': 6},
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
