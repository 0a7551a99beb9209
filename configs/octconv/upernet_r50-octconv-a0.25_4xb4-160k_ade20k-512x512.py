# UperNet Oct-R50 (V1c deep stem), ADE20K 512x512 160k: mmseg's R50 recipe with every bottleneck
# conv an OctaveConv, alpha = 0.25 in stages 1-3 and 0 in stage 4. Parameter names/shapes are
# those of ResNetV1c-50, so open-mmlab://resnet50_v1c (the base's model.pretrained) loads fully.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='OctResNetV1c', alpha=0.25))
