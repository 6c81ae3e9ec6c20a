# The NFNet swap for a stock MMDetection config whose model has backbone=dict(type='ResNet', ...)
# and an FPN neck: paste these lines below its `_base_ = ...` line (README.md, "Detection:
# swap NFNet into any MMDetection config", shows them; tests/test_detection_swap.py applies
# them verbatim to mmdet's Mask R-CNN and RetinaNet configs). Not a config on its own, hence
# kept out of configs/: it reads the stock config's _base_.optim_wrapper and model.type.
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.engine.optim_wrappers.agc_constructor import detector_output_layers  # noqa
from nfnets_mm.variants import get_variant  # noqa: E402

nfnet_variant = 'F0'  # 'F0' ... 'F6' have DeepMind's ImageNet weights
model = dict(
    backbone=dict(
        _delete_=True,  # drop ResNet's depth, norm_cfg, norm_eval, style ...
        type='NFNet',
        arch=nfnet_variant,
        out_indices=(0, 1, 2, 3),  # strides 4, 8, 16, 32, like ResNet's
        with_final_conv=False,  # the classifier-only 1x1 conv
        padding='same',  # DeepMind's forward, for DeepMind's weights
        act_cfg=dict(type='GELU', approximate='tanh'),
        init_cfg=dict(type='Pretrained', checkpoint=f'dm-nfnets://{nfnet_variant}',
                      prefix='backbone.')),
    # FPN in_channels = the backbone's out_channels (its stage widths)
    neck=dict(in_channels=list(get_variant(nfnet_variant).widths)))
# AGC on every layer but the detector's output layers (MaskRCNN, FasterRCNN, RetinaNet are
# known; for others write the fnmatch patterns of their output layers' weights). Keeps the
# config's optimizer, lr and paramwise_cfg; replaces its clip_grad. With an AmpOptimWrapper
# config use type='AmpAGCOptimWrapper', dtype='float16' (mmcv's RoIAlign has no bf16 kernel).
optim_wrapper = dict(
    _delete_=True,
    type='AGCOptimWrapper',
    constructor='AGCOptimWrapperConstructor',
    optimizer=_base_.optim_wrapper.optimizer,
    paramwise_cfg=_base_.optim_wrapper.get('paramwise_cfg'),
    clip_grad=dict(type='agc', clipping=0.01, eps=1e-3,
                   exclude=detector_output_layers(_base_.model.type)))
# backbone.out_channels vs neck.in_channels, checked when the runner starts
default_hooks = dict(neck_wiring=dict(type='NFNeckWiringCheckHook'))
