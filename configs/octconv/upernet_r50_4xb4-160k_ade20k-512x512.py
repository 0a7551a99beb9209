# Baseline for the UperNet OctaveConv configs: mmseg's own UperNet R50 (V1c) 160k, unchanged.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['convzoo_mm'], allow_failed_imports=False)
