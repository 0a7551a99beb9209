# Mask R-CNN 1x on COCO with WTConvNeXt-T. mmdet ships no 1x ConvNeXt recipe; this is the 3x recipe
# (AdamW lr 1e-4 wd 0.05, layer-wise decay 0.95 over 6 layers, drop path 0.4, AMP) on mmdet's standard
# 1x schedule and pipeline: single scale 1333x800 with flip, 12 epochs, steps 8/11, 500-iter warmup
# (as the Swin/ConvNeXt 1x tables); 8 GPUs x 2 images.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)

# ImageNet-1k WTConvNeXt-T (official, timm naming; https://github.com/BGU-CS-VIL/WTConv -> model weights), converted with
#   python tools/convert_wtconvnext.py WTConvNeXt_tiny_5_300e_ema.pth \
#       checkpoints/wtconvnext-tiny_in1k_convzoo.pth --arch tiny
wtconvnext_tiny_in1k = 'checkpoints/wtconvnext-tiny_in1k_convzoo.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='WTConvNeXt',
        arch='tiny',
        wt_levels=(5, 4, 3, 2),
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=wtconvnext_tiny_in1k, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg={'decay_rate': 0.95, 'decay_type': 'layer_wise', 'num_layers': 6},
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
