# Oct-ResNet (alpha 0.5 in stages 1-3) as the thin demo R50 of the demo FCOS on the generated data.
_base_ = ['./_base_/demo_det.py']
model = dict(backbone=dict(type='OctResNet', alpha=0.5))
