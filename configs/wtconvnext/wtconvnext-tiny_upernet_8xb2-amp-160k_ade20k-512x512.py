# UperNet 160k on ADE20K 512x512 with WTConvNeXt-T: mmseg's ConvNeXt recipe (AMP, AdamW
# lr 1e-4 wd 0.05, stage-wise decay 0.9 over 6 layers, drop path 0.4, 1500-iter warmup then poly to 160k,
# slide test crop 512 stride 341; 8 GPUs x 2 images) with the backbone swapped.
_base_ = ['./convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py']

# ImageNet-1k WTConvNeXt-T (official, timm naming; https://github.com/BGU-CS-VIL/WTConv -> model weights), converted with
#   python tools/convert_wtconvnext.py WTConvNeXt_tiny_5_300e_ema.pth \
#       checkpoints/wtconvnext-tiny_in1k_convzoo.pth --arch tiny
wtconvnext_tiny_in1k = 'checkpoints/wtconvnext-tiny_in1k_convzoo.pth'

model = dict(backbone=dict(conv_type='wtconv', wt_levels=(5, 4, 3, 2),
                           init_cfg=dict(checkpoint=wtconvnext_tiny_in1k)))
