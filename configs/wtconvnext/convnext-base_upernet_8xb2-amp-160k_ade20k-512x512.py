# UperNet 160k on ADE20K 512x512 with ConvNeXt (baseline)-B: mmseg's ConvNeXt recipe (AMP, AdamW
# lr 1e-4 wd 0.05, stage-wise decay 0.9 over 12 layers, drop path 0.4, 1500-iter warmup then poly to 160k,
# slide test crop 512 stride 341; 8 GPUs x 2 images) with the backbone swapped.
_base_ = ['mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)

# ImageNet-1k ConvNeXt-B: the mmpretrain checkpoint that mmdet's/mmseg's own ConvNeXt
# configs load (our baseline has the same parameter names, no conversion needed). A timm or
# facebookresearch checkpoint works too after
#   python tools/convert_wtconvnext.py convnext_base_1k_224.pth \
#       checkpoints/convnext-base_in1k_convzoo.pth --arch base
convnext_base_in1k = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-base_3rdparty_32xb128-noema_in1k_20220301-2a0ee547.pth'  # noqa: E501

model = dict(
    backbone=dict(
        _delete_=True,
        type='WTConvNeXt',
        arch='base',
        conv_type='plain',  # ConvNeXt baseline: 7x7 depthwise conv
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=convnext_base_in1k, prefix='backbone.')),
)
