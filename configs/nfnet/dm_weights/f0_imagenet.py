# Evaluate DeepMind's released NFNet-F0 weights (F0_haiku.npz to this
# project's state-dict names) on ImageNet val, test-only.
# The model reproduces DeepMind's forward: TF/Haiku "SAME" padding, tanh-approximated
# GELU, Scaled WS with max(var * fan_in, 1e-4) (the NFNet defaults ws_eps=1e-4,
# ws_eps_mode='max'), final conv to 3072 + 1000-way linear.
# Eval preprocessing as DeepMind's (eval_preproc='resize_crop_32'): the whole image resized
# to 288 x 288 (256 + 32) without keeping its aspect ratio, then the centre 256 x 256.
# The resize is DeepMind's TF bicubic without antialiasing (backend='tf'; float32, not
# clamped).  Switches to MMPretrain's stock eval: mode='short_side' (short side to 288,
# aspect kept, centre crop) and backend='pillow' (Pillow's antialiased bicubic):
#   --cfg-options test_dataloader.dataset.pipeline.1.mode=short_side \
#                 test_dataloader.dataset.pipeline.1.backend=pillow
# ImageNet RGB mean / std normalisation.
# timm's conversion of the same weights reports 83.47 top-1 at 256 px.
#
#   python tools/test.py configs/nfnet/dm_weights/f0_imagenet.py
# loads F0_haiku.npz through `load_from` below (downloaded once, converted in memory and
# cached: docs/converters.md); a converted file works too:
#   python tools/test.py configs/nfnet/dm_weights/f0_imagenet.py f0_converted.pth
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

# DeepMind's released weights (nfnets_mm/variants.py: get_variant('F0').dm_weights_url).
load_from = 'dm-nfnets://F0'
from nfnets_mm.variants import get_variant  # noqa: E402

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='NFNet',
        arch='F0',
        padding='same',
        act_cfg=dict(type='GELU', approximate='tanh'),
        ws_eps=1e-4,
        ws_eps_mode='max'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='NFNetClsHead',
        num_classes=1000,
        in_channels=3072,
        dropout_rate=get_variant('F0').dropout,  # inactive at test time
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    data_preprocessor=dict(
        num_classes=1000,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
)

test_size = get_variant('F0').test_size
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NFNetEvalResizeCrop', crop_size=test_size, pad=32, mode='deepmind',
         backend='tf'),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = dict(type='Accuracy', topk=(1, 5))
test_cfg = dict()
