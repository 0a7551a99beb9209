# Mask R-CNN 1x on COCO with WTConvNeXt-T. mmdet ships no 1x ConvNeXt recipe; this is the 3x recipe
# (AdamW lr 1e-4 wd 0.05, layer-wise decay 0.95 over 6 layers, drop path 0.4, AMP) on mmdet's standard
# 1x schedule and pipeline: single scale 1333x800 with flip, 12 epochs, steps 8/11, 500-iter warmup
# (as the Swin/ConvNeXt 1x tables); 8 GPUs x 2 images.
_base_ = ['./mask-rcnn_convnext-t_fpn_amp-1x_coco.py']

# ImageNet-1k WTConvNeXt-T (official, timm naming; https://github.com/BGU-CS-VIL/WTConv -> model weights), converted with
#   python tools/convert_wtconvnext.py WTConvNeXt_tiny_5_300e_ema.pth \
#       checkpoints/wtconvnext-tiny_in1k_convzoo.pth --arch tiny
wtconvnext_tiny_in1k = 'checkpoints/wtconvnext-tiny_in1k_convzoo.pth'

model = dict(backbone=dict(conv_type='wtconv', wt_levels=(5, 4, 3, 2),
                           init_cfg=dict(checkpoint=wtconvnext_tiny_in1k)))
