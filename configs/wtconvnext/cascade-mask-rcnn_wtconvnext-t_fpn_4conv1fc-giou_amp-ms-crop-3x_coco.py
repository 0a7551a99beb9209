# Cascade Mask R-CNN 3x on COCO with WTConvNeXt-T: the ConvNeXt recipe of mmdet
# (4conv1fc SyncBN heads, GIoU, multi-scale 480-800 + crop aug, AMP, AdamW lr 2e-4 wd 0.05, layer-wise
# decay 0.7 over 6 layers, drop path 0.4, 36 epochs with steps 27/33, 1000-iter warmup;
# 8 GPUs x 2 images) with only the backbone swapped for convzoo_mm's WTConvNeXt class.
_base_ = ['./cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py']

# ImageNet-1k WTConvNeXt-T (official, timm naming; https://github.com/BGU-CS-VIL/WTConv -> model weights), converted with
#   python tools/convert_wtconvnext.py WTConvNeXt_tiny_5_300e_ema.pth \
#       checkpoints/wtconvnext-tiny_in1k_convzoo.pth --arch tiny
wtconvnext_tiny_in1k = 'checkpoints/wtconvnext-tiny_in1k_convzoo.pth'

model = dict(backbone=dict(conv_type='wtconv', wt_levels=(5, 4, 3, 2),
                           init_cfg=dict(checkpoint=wtconvnext_tiny_in1k)))
