# ImageNet data for the NFNet recipe with DeepMind's data protocol (nfnets/dataset.py,
# experiment_nfnets.py) and NFNet-F0's numbers from the variant table
# (nfnets_mm/variants.py); the F1..F7 configs re-size the two pipelines with theirs.
#
# Total batch 4096 = train_dataloader.batch_size x number of GPUs: 512 here, i.e. 8 GPUs
# (8 x 512). If 512 images do not fit in one GPU's memory, keep 4096 with more GPUs
# (16 x 256, 32 x 128) or set a smaller batch_size and pass --auto-scale-lr to
# tools/train.py, which rescales the lr from base_batch_size=4096.
#
# docs/training.md, "DeepMind protocol vs this recipe", lists every item and its switch to
# MMPretrain's stock behaviour.
# (The empty _base_ comes before the import so that MMEngine reads this file as a plain
# config, not a lazy-import one; the function is dropped from the config, only numbers stay.)
_base_ = []
from nfnets_mm.variants import get_variant  # noqa: E402

dataset_type = 'ImageNet'
data_root = 'data/imagenet'
train_size, test_size, ra_magnitude, ra_num_layers = (
    getattr(get_variant('F0'), key)
    for key in ('train_size', 'test_size', 'ra_magnitude', 'ra_num_layers'))

# Before the mix, in the wrapped dataset: load, crop, flip (DeepMind's
# augment_before_mix=False).
train_raw_pipeline = [
    dict(type='LoadImageFromFile'),
    # TF's sample_distorted_bounding_box (area 0.08-1, aspect 3/4-4/3, min covered 0.1,
    # 10 attempts; centre-crop fallback S / (S + 32)), then TF's bicubic resize without
    # antialiasing (float32, not clamped). Switches: sampler='inception' (MMPretrain's
    # RandomResizedCrop sampler), backend='pillow' (MMPretrain's antialiased resize).
    dict(type='NFNetRandomResizedCrop', scale=train_size, sampler='deepmind', backend='tf'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
]
# After the mix, on the mixed image (NFNetMixDataset's own pipeline).
train_mix_pipeline = [
    # DeepMind's RandAugment: ra_num_layers ops of 16, level ra_magnitude of 10, grey
    # fill, 100 px translations, TF's op arithmetic.  Switches: contrast_reference='mean'
    # (the image's mean grey, as MMPretrain's Contrast), interpolation='bicubic' (Rotate /
    # Shear / Translate resampled as MMPretrain's, not nearest).
    dict(type='NFNetRandAugment', magnitude=ra_magnitude, image_size=train_size,
         num_layers=ra_num_layers, contrast_reference='size', interpolation='nearest'),
    dict(type='PackInputs'),
]

# DeepMind's eval (eval_preproc='resize_crop_32'): the whole image is resized to
# (test + 32) x (test + 32) WITHOUT keeping its aspect ratio (TF bicubic, no antialiasing),
# then the centre test x test is cut out.  Switches: mode='short_side' (MMPretrain's
# ResizeEdge of the short side + CenterCrop), backend='pillow' (Pillow's bicubic).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NFNetEvalResizeCrop', crop_size=test_size, pad=32, mode='deepmind',
         backend='tf'),
    dict(type='PackInputs'),
]

# MixUp (alpha 0.2) / CutMix (alpha 1) in the loader workers, per example with an
# independent partner, on the raw crops and BEFORE RandAugment, half the batch each, as
# DeepMind's recipe (docs/training.md, "Mixing"); the model's data preprocessor only
# normalizes.  MMPretrain's stock batch-level path instead: dataset.mix=False plus
# model.train_cfg.augments=dict(type='NFHalfMixupHalfCutMix', mixup_alpha=0.2,
# cutmix_alpha=1.0) (mixes normalized tensors after RandAugment, one ratio per half-batch).
train_dataloader = dict(
    batch_size=512,
    num_workers=8,
    persistent_workers=True,  # the partner draws carry on across epochs
    dataset=dict(
        type='NFNetMixDataset', mixup_alpha=0.2, cutmix_alpha=1.0,
        dataset=dict(type=dataset_type, data_root=data_root, split='train',
                     pipeline=train_raw_pipeline),
        pipeline=train_mix_pipeline),
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
