# Baseline for the demo layer configs: the thin ResNetV1c-50 UperNet with plain 3x3 convs.
_base_ = ['./_base_/demo_seg.py']
