# Oct-ResNetV1c (alpha 0.5 in stages 1-3) as the thin demo R50 of UperNet on the generated data.
_base_ = ['./_base_/demo_seg.py']
model = dict(backbone=dict(type='OctResNetV1c', alpha=0.5))
