# Baseline for the demo layer configs: the thin ResNet-50 FCOS with plain 3x3 convs.
_base_ = ['./_base_/demo_det.py']
