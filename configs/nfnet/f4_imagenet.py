# NFNet-F4 on ImageNet with the paper's recipe (Brock et al. 2021, Sec. 6.1, Table 3 / App. A):
# depths (5, 10, 30, 15), train 384 px, test 512 px (resize 544 + centre crop), dropout 0.5,
# RandAugment 4 layers x magnitude 15, half MixUp / half CutMix, label smoothing 0.1,
# drop path 0.25, SGD-Nesterov lr 1.6 @ batch 4096, 360 epochs (5 warmup + cosine),
# wd 2e-5, AGC 0.01 (not on head.fc.weight), EMA 0.99999, AMP.
#
#   bash tools/dist_train.sh configs/nfnet/f4_imagenet.py 8     # 8 GPUs x 512 = 4096
# If 512 images per GPU do not fit, keep 4096 with more GPUs / nodes, or lower
# train_dataloader.batch_size and add --auto-scale-lr (lr scales linearly from 4096).
_base_ = [
    '../_base_/models/nfnet_f0.py',
    '../_base_/datasets/imagenet_nfnet.py',
    '../_base_/schedules/nfnet_imagenet_bs4096.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='F4', drop_path_rate=0.25),
    head=dict(in_channels=3072, dropout_rate=0.5),
)

train_size, test_size, ra_magnitude = 384, 512, 15
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
