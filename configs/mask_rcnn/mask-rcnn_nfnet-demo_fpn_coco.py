# Demo: Mask R-CNN + FPN with a toy NFNet backbone on the synthetic COCO-format demo set
# (data/demo/coco: 128x128 images of circles, squares and triangles), small enough to
# train on a CPU in minutes.  The backbone is the classification demo's NFNet
# (configs/nfnet/nfnet_demo.py, same arch) and starts from its checkpoint: the paper's
# transfer recipe (ImageNet classifier -> detector) in miniature.
#
#   bash tools/run_demo.sh          # classifier, then this detector from its checkpoint
#
# or by hand, with a trained demo classifier CKPT:
#
#   .venv/bin/python tools/data/make_demo_data.py      # writes data/demo (once)
#   .venv/bin/python tools/train.py configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py \
#       --cfg-options model.backbone.init_cfg.type=Pretrained \
#       model.backbone.init_cfg.prefix=backbone. model.backbone.init_cfg.checkpoint=CKPT
#   .venv/bin/python tools/test.py configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py \
#       work_dirs/mask-rcnn_nfnet-demo_fpn_coco/epoch_4.pth --show-dir shown
#
# Without the three options the backbone starts from scratch and learns far less in the
# same time (README, "Demo").
# Same structure as mask-rcnn_nfnet-f0_fpn_1x_coco.py (NFNet stages at strides 4-32 into
# FPN, AGC on all but the output layers) with narrow widths.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.engine.optim_wrappers import detector_output_layers  # noqa: E402

classes = ('circle', 'square', 'triangle')
# The classification demo's backbone (configs/nfnet/nfnet_demo.py); the classifier's
# final conv is not used: FPN takes the four stage outputs.
demo_arch = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 256), group_width=16,
                 stem_channels=(8, 16, 16, 32))
model = dict(
    backbone=dict(
        _delete_=True,
        type='NFNet',
        arch=demo_arch,
        out_indices=(0, 1, 2, 3),
        with_final_conv=False,
        drop_path_rate=0.,
        # as the classifier (docs/training.md, "SkipInit x AGC"); no init_cfg here, so
        # that the command line can add the Pretrained one (see above)
        skipinit_value=1.),
    neck=dict(in_channels=list(demo_arch['widths']), out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64,
                       num_classes=len(classes))),
    # 1-4 objects in a 128 px image: fewer proposals and sampled RoIs than COCO's
    # 1000 / 512 (about twice as fast per step, and a larger share of positive RoIs)
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)),
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
    batch_size=2,  # twice the updates of batch 4 in the same CPU time
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
    # MMDetection's lr for batch 16, here at batch 2: AGC (lambda 0.04, as the classifier
    # demo at a small batch) keeps it stable
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(
        type='agc', clipping=0.04, eps=1e-3,
        exclude=detector_output_layers('MaskRCNN')),  # RPN / R-CNN / mask output layers
)
max_epochs = 4  # 384 steps of batch 2
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=1),
    # backbone.out_channels vs neck.in_channels, checked when the runner starts
    neck_wiring=dict(type='NFNeckWiringCheckHook'))
# RNGStateHook: RNG states in every checkpoint, restored on resume (docs/training.md).
custom_hooks = [dict(type='NFPlotCurveHook'), dict(type='NFRNGStateHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
