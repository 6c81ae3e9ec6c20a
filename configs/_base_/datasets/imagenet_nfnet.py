# ImageNet data for the NFNet recipe, with NFNet-F0's sizes (train 192 px, test 256 px,
# RandAugment magnitude 5); the F1..F7 configs override the three numbers.
#
# Total batch 4096 = train_dataloader.batch_size x number of GPUs: 512 here, i.e. 8 GPUs
# (8 x 512). If 512 images do not fit in one GPU's memory, keep 4096 with more GPUs
# (16 x 256, 32 x 128) or set a smaller batch_size and pass --auto-scale-lr to
# tools/train.py, which rescales the lr from base_batch_size=4096.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
train_size, test_size, ra_magnitude = 192, 256, 5

# BGR mean, rounded: the fill colour of RandAugment's geometric ops.
bgr_pad = [104, 116, 124]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=train_size, crop_ratio_range=(0.08, 1.0),
         aspect_ratio_range=(3. / 4., 4. / 3.), backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # RandAugment with 4 layers, fixed magnitude (std 0) out of 10, as DeepMind's recipe.
    # DeepMind uses the TF (EfficientNet) op list; MMPretrain's 'timm_increasing' is the
    # closest preset: same geometric / colour ops with every magnitude increasing the
    # distortion, but no Cutout op and 'increasing' Posterize/Solarize levels.
    dict(type='RandAugment', policies='timm_increasing', num_policies=4, total_level=10,
         magnitude_level=ra_magnitude, magnitude_std=0.,
         hparams=dict(pad_val=bgr_pad, interpolation='bicubic')),
    dict(type='PackInputs'),
]

# DeepMind's eval: resize (short side) to test + 32, centre-crop test x test.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=test_size + 32, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=test_size),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=512,
    num_workers=8,
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    dataset=dict(type=dataset_type, data_root=data_root, split='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
