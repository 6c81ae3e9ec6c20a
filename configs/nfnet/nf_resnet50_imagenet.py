# NF-ResNet-50 (pre-activation bottleneck ResNet-50 without normalization: Scaled WS,
# gamma-ReLU, alpha 0.2, SkipInit) on ImageNet with the NFNet recipe of the F-configs:
# batch 4096, SGD-Nesterov lr 1.6, 360 epochs (5 warmup + cosine), wd 2e-5, AGC 0.01,
# EMA 0.99999, label smoothing 0.1, half MixUp / half CutMix, AMP.
# Sizes are not NFNet-table numbers: train / test 224 px (resize 256 + centre crop) with
# RandAugment magnitude 10 (what the recipe uses at 224 px, cf. F1), dropout 0.25 and
# drop path 0.1 (NFResNet's default).
#
#   bash tools/dist_train.sh configs/nfnet/nf_resnet50_imagenet.py 8    # 8 x 512 = 4096
_base_ = [
    '../_base_/models/nfnet_f0.py',
    '../_base_/datasets/imagenet_nfnet.py',
    '../_base_/schedules/nfnet_imagenet_bs4096.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='NFResNet', depth=50, drop_path_rate=0.1),
    head=dict(in_channels=2048, dropout_rate=0.25),
)

train_size, test_size, ra_magnitude = 224, 224, 10
bgr_pad = [104, 116, 124]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=train_size, crop_ratio_range=(0.08, 1.0),
         aspect_ratio_range=(3. / 4., 4. / 3.), backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=4, total_level=10,
         magnitude_level=ra_magnitude, magnitude_std=0.,
         hparams=dict(pad_val=bgr_pad, interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=test_size + 32, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=test_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=512, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3, save_best='auto'),
)
