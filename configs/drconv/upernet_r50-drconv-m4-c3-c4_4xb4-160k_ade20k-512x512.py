# UperNet ResNetV1c-50, ADE20K 512x512 160k, with DRConv (paper generator, m=4) in the
# Bottleneck 3x3 slot of stages c3-c4 (mmseg ResNet's dcn slot, same placement as the COCO
# default: +21.9% backbone parameters; see docs/drconv.md).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(dcn=dict(type='DRConv', num_regions=4, generator='full'),
                           stage_with_dcn=(False, True, True, False)))
