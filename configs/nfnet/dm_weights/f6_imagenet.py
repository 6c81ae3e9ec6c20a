# Evaluate DeepMind's released NFNet-F6 weights (F6_haiku.npz, converted to this
# project's state-dict names) on ImageNet val, test-only.
# The model reproduces DeepMind's forward: TF/Haiku "SAME" padding, tanh-approximated
# GELU, Scaled WS with max(var * fan_in, 1e-4) (the NFNet defaults ws_eps=1e-4,
# ws_eps_mode='max'), final conv to 3072 + 1000-way linear.
# Eval preprocessing as DeepMind's: 576 px centre crop after a bicubic resize of the short
# side to 608 (576 + 32). (DeepMind crops a 576/608 centre square first and resizes
# it to 576; the two agree up to resampling.) ImageNet RGB mean / std normalisation.
# timm's conversion of the same weights reports 86.36 top-1 at 576 px.
#
#   python tools/test.py configs/nfnet/dm_weights/f6_imagenet.py f6_converted.pth
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='NFNet',
        arch='F6',
        padding='same',
        act_cfg=dict(type='GELU', approximate='tanh'),
        ws_eps=1e-4,
        ws_eps_mode='max'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='NFNetClsHead',
        num_classes=1000,
        in_channels=3072,
        dropout_rate=0.5,  # inactive at test time
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    data_preprocessor=dict(
        num_classes=1000,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
)

test_size = 576
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=test_size + 32, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=test_size),
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
