# Demo-size WTConvNeXt (depths 1-1-2-1, widths 64/128/256/512, WTConv k=5 with 3/2/2/1 wavelet
# levels) in the demo FCOS detector, trained from scratch on the generated shapes data with the
# ConvNeXt recipe's layer-wise learning-rate decay (mmdet LearningRateDecayOptimizerConstructor).
# The ConvNeXt baseline of the same size: --cfg-options model.backbone.conv_type=plain
_base_ = ['./_base_/demo_det.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='WTConvNeXt',
        arch=dict(depths=(1, 1, 2, 1), channels=(64, 128, 256, 512), wt_levels=(3, 2, 2, 1)),
        conv_type='wtconv',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        layer_scale_init_value=1e-6))

optim_wrapper = dict(
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6))
