# Mask R-CNN 3x on COCO with WTConvNeXt-T: mmdet's ConvNeXt-T Mask R-CNN recipe (multi-scale
# 480-800 + crop aug, AMP, AdamW lr 1e-4 wd 0.05, layer-wise decay 0.95 over 6 layers, drop path 0.4,
# 36 epochs with steps 27/33, 1000-iter warmup; 8 GPUs x 2 images) with the backbone swapped.
_base_ = ['./mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py']

# ImageNet-1k WTConvNeXt-T (official, timm naming; https://github.com/BGU-CS-VIL/WTConv -> model weights), converted with
#   python tools/convert_wtconvnext.py WTConvNeXt_tiny_5_300e_ema.pth \
#       checkpoints/wtconvnext-tiny_in1k_convzoo.pth --arch tiny
wtconvnext_tiny_in1k = 'checkpoints/wtconvnext-tiny_in1k_convzoo.pth'

model = dict(backbone=dict(conv_type='wtconv', wt_levels=(5, 4, 3, 2),
                           init_cfg=dict(checkpoint=wtconvnext_tiny_in1k)))
