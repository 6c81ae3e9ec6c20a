# Mask R-CNN + FPN with an NFNet backbone in the NFNet paper's COCO setting (Sec. 6.3,
# Table 5): "training settings similar to Ghiasi et al. (2020), training for 22500 steps
# using batch size 256". Shared by
# configs/mask_rcnn/mask-rcnn_nfnet-f{0,1}_fpn_64xb4-amp-lsj-22.5k_coco.py.
#
# From the NFNet paper: Mask R-CNN + FPN, 22,500 iterations, batch 256.
# From Ghiasi et al. 2020 (Simple Copy-Paste, its training details; the NFNet paper points
# there and is silent otherwise): large-scale jitter (resize 0.1-2.0 of 1024 px, crop / pad
# to 1024 x 1024, horizontal flip), SGD momentum 0.9, lr 0.32 at batch 256, weight decay
# 4e-5, linear warmup over the first 1000 steps from lr 0.0032, lr x 0.1 at 90%, 95% and
# 97.5% of the steps, 1024 px evaluation. Copy-Paste itself is not used (it is Ghiasi et
# al.'s contribution, not part of the baseline setting the NFNet paper cites).
# MMDetection's own LSJ base (common/lsj-100e_coco-instance.py) provides the pipeline; it
# is run by iterations here (InfiniteSampler), 22,500 x 256 = 5.76M images, ~49 COCO epochs.
#
# Our choices where both papers are silent:
# - AGC (lambda 0.01, eps 1e-3, DeepMind's ImageNet values) on everything but the output
#   layers; the paper notes smaller batches tolerate larger lambda: if the logged
#   train/agc_clip_fraction stays high at batch 256, raise clipping (0.02-0.04).
# - No weight decay on gains, skip gains and biases (DeepMind's NFNet rule, applied by
#   AGCOptimWrapperConstructor).
# - fp16 autocast with dynamic loss scaling (loss_scale='auto'), as MMDetection's own AMP
#   configs. Not bf16 (DeepMind's TPU precision, dtype='auto' elsewhere in this package):
#   mmcv 2.1's RoIAlign has no bf16 kernel (CPU and CUDA dispatch float / double / half only),
#   and mmdet casts the RoIs to the feature dtype, where bf16's 8-bit mantissa would round box
#   coordinates near 1024 px to steps of 4-8 px. tests/test_detection_configs.py fails once
#   mmcv's RoIAlign accepts bf16, as a reminder to switch.
# - 64 GPUs x 4 images: NFNets have no normalization layers, so how the batch is split over
#   GPUs does not change what is computed (no BN statistics): 128 x 2 or 256 x 1 train the
#   same way; with fewer
#   GPUs keep batch 256 by raising the per-GPU batch or pass --auto-scale-lr (linear rule,
#   base batch 256).
_base_ = ['../models/mask-rcnn_nfnet_fpn.py', 'mmdet::common/lsj-100e_coco-instance.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

image_size = (1024, 1024)
gpus, per_gpu_batch = 64, 4  # batch 256
max_iters = 22500

model = dict(data_preprocessor=dict(
    batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]))

data_root = 'data/coco/'
train_dataloader = dict(
    batch_size=per_gpu_batch,
    num_workers=4,
    sampler=dict(type='InfiniteSampler'),
    # the mmdet base repeats the dataset (epoch-based); iterations need no RepeatDataset
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=_base_.train_pipeline))
# Ghiasi et al. evaluate at the training resolution: longer side 1024 (mmdet's LSJ
# configs keep their 1333 x 800 test scale).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=4500)

lr = 0.32
optim_wrapper = dict(
    _delete_=True,
    type='AmpAGCOptimWrapper',
    dtype='float16',
    loss_scale='auto',  # dynamic for fp16
    constructor='AGCOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=4e-5),
    clip_grad=dict(type='agc', clipping=0.01, eps=1e-3, exclude=_base_.agc_exclude))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.0032 / lr, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, gamma=0.1,
         milestones=[int(max_iters * f) for f in (0.9, 0.95, 0.975)]),
]
auto_scale_lr = dict(enable=False, base_batch_size=gpus * per_gpu_batch)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4500, max_keep_ckpts=2),
    # backbone.out_channels vs neck.in_channels, checked before anything runs
    neck_wiring=dict(type='NFNeckWiringCheckHook'))
log_processor = dict(by_epoch=False)
# RNGStateHook: RNG states in every checkpoint, restored on resume (docs/training.md).
custom_hooks = [dict(type='NFPlotCurveHook'), dict(type='NFRNGStateHook')]
