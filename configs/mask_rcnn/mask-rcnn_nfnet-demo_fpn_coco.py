# Demo: Mask R-CNN + FPN with a toy NFNet backbone on the synthetic COCO-format demo set
# (data/demo/coco: 48 train / 16 val 128x128 images; circle, square, triangle), small
# enough to train on a CPU.
#
#   .venv/bin/python tools/data/make_demo_data.py      # writes data/demo (once)
#   .venv/bin/python tools/train.py configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py
#
# Same structure as mask-rcnn_nfnet-f0_fpn_1x_coco.py (NFNet stages at strides 4-32 into
# FPN, AGC on all but the output layers) with narrow widths and no pre-training.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

classes = ('circle', 'square', 'triangle')
model = dict(
    backbone=dict(
        _delete_=True,
        type='NFNet',
        arch=dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
                  stem_channels=(8, 8, 16, 16)),
        out_indices=(0, 1, 2, 3),
        with_final_conv=False,
        drop_path_rate=0.),
    neck=dict(in_channels=[32, 64, 128, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64,
                       num_classes=len(classes))),
)

data_root = 'data/demo/coco/'
metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    _delete_=True,
    type='AGCOptimWrapper',
    constructor='AGCOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(
        type='agc', clipping=0.01, eps=1e-3,
        exclude=['*rpn_cls.weight', '*rpn_reg.weight', '*fc_cls.weight', '*fc_reg.weight',
                 '*conv_logits.weight']),
)
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, end=max_epochs),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=4, max_keep_ckpts=1))
# RNGStateHook: RNG states in every checkpoint, restored on resume (docs/training.md).
custom_hooks = [dict(type='NFPlotCurveHook'), dict(type='NFRNGStateHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
