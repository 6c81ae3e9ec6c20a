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

# DeepMind's RandAugment: 4 layers, each picks one of the ops below uniformly and always
# applies it (prob 1: the TF code draws a probability per op but discards it for image
# ops), at a fixed level m (std 0) on a scale whose max level is 10.  Rotate, Shear x/y,
# Translate x/y and Cutout fill with grey (128, 128, 128) (DeepMind's replace_value
# [128] * 3), and the four geometric ops resample with nearest neighbour (the default of
# the tensorflow_addons rotate / translate / transform DeepMind calls).  pad_val is a
# 3-tuple in the hparams below because an int is not expanded by every op: mmcv's imrotate
# hands it to cv2.warpAffine as the scalar (128, 0, 0), which fills navy blue (imshear,
# imtranslate and cutout expand an int, but take the tuple as well).  MMPretrain maps m
# linearly onto magnitude_range as m / 10, extrapolating past 10 the way DeepMind's code
# does (F3+ use 15).  Unlike timm's "increasing" variants, DeepMind's Posterize keeps
# int(m / 10 * 4) bits and Solarize's threshold is m / 10 * 256 (both get milder with m),
# and the colour ops use factor 0.1 + 1.8 * m / 10 with no random sign: magnitude
# -0.9 .. 0.9 around MMPretrain's factor 1 + magnitude.  Translate moves up to
# m / 10 * 100 px, i.e. a fraction 100 / train_size of the crop (the F1+ configs restate
# it), Cutout a square of side 2 x int(m / 10 * 40).
_colour = dict(magnitude_range=(-0.9, 0.9), random_negative_prob=0.)
randaugment_policies = [
    dict(type='AutoContrast'),
    dict(type='Equalize'),
    dict(type='Invert'),
    dict(type='Rotate', magnitude_range=(0, 30)),
    dict(type='Posterize', magnitude_range=(0, 4)),
    dict(type='Solarize', magnitude_range=(0, 256)),
    dict(type='SolarizeAdd', magnitude_range=(0, 110)),
    dict(type='ColorTransform', **_colour),
    dict(type='Contrast', **_colour),
    dict(type='Brightness', **_colour),
    dict(type='Sharpness', **_colour),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='horizontal'),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='vertical'),
    dict(type='Translate', magnitude_range=(0, 100 / train_size), direction='horizontal'),
    dict(type='Translate', magnitude_range=(0, 100 / train_size), direction='vertical'),
    dict(type='Cutout', magnitude_range=(0, 80)),
]
randaugment_policies = [dict(policy, prob=1.) for policy in randaugment_policies]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=train_size, crop_ratio_range=(0.08, 1.0),
         aspect_ratio_range=(3. / 4., 4. / 3.), backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # RandAugment, 4 layers, fixed magnitude (std 0) on DeepMind's scale (max level 10).
    # hparams reach every op that takes the argument: pad_val Rotate, Shear, Translate and
    # Cutout; interpolation Rotate, Shear and Translate.
    dict(type='RandAugment', policies=randaugment_policies, num_policies=4, total_level=10,
         magnitude_level=ra_magnitude, magnitude_std=0.,
         hparams=dict(pad_val=(128, 128, 128), interpolation='nearest')),
    dict(type='PackInputs'),
]

# DeepMind's eval (eval_preproc='resize_crop_32'): the whole image is resized to
# (test + 32) x (test + 32) WITHOUT keeping its aspect ratio, then the centre test x test is
# cut out.  mode='short_side' switches to MMPretrain's stock eval instead (ResizeEdge of the
# short side to test + 32, keeping the aspect ratio, + CenterCrop).  The f*_imagenet.py and
# nf_resnet50_imagenet.py configs copy this pipeline, so the switch set here reaches them
# all (the fine-tune and dm_weights configs have theirs in nfnet/f0_finetune_imagenet.py and
# nfnet/dm_weights/f0_imagenet.py); per run:
#   --cfg-options val_dataloader.dataset.pipeline.1.mode=short_side
#                 test_dataloader.dataset.pipeline.1.mode=short_side
# The resize is Pillow bicubic (antialiased), not yet DeepMind's TF bicubic without
# antialiasing.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NFNetEvalResizeCrop', crop_size=test_size, pad=32, mode='deepmind',
         backend='pillow', interpolation='bicubic'),
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
