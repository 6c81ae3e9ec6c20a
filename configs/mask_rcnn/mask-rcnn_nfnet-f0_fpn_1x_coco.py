# Mask R-CNN + FPN with an NFNet-F0 backbone on MMDetection's standard 1x schedule (12
# epochs, batch 16 = 8 GPUs x 2, 1333 x 800, fp32), comparable with mmdet's ResNet-50
# baselines. It is not the paper's schedule: the NFNet paper's setting (Sec. 6.3, Table 5:
# F0 46.7 box AP / 40.9 mask AP) is ./mask-rcnn_nfnet-f0_fpn_64xb4-amp-lsj-22.5k_coco.py.
#
#   bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_1x_coco.py 8
#
# Model (NFNet-F0 into FPN, DeepMind's forward, pretrained from DeepMind's released weights
# 'dm-nfnets://F0'): ../_base_/models/mask-rcnn_nfnet_fpn.py. For weights trained with
# configs/nfnet/f0_imagenet.py set model.backbone.padding='symmetric', act_cfg=dict(type='GELU')
# and point init_cfg.checkpoint at them.
# Data: data/coco/{annotations,train2017,val2017} (mmdet's standard layout).
_base_ = [
    '../_base_/models/mask-rcnn_nfnet_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.variants import get_variant  # noqa: E402

variant = 'F0'
model = dict(
    backbone=dict(arch=variant, init_cfg=dict(checkpoint=f'dm-nfnets://{variant}')),
    neck=dict(in_channels=list(get_variant(variant).widths)))  # = backbone.out_channels

# AGC (lambda 0.01) on the whole detector except its output layers (agc_exclude, from the
# model base). No weight decay on gains / biases / skip gains. The paper tunes lambda = 0.01
# for batch 4096 and notes that smaller batches tolerate larger lambdas; at this config's
# batch of 16, watch train/agc_clip_fraction in the log and raise clipping (e.g. 0.02-0.04)
# if it stays high.
optim_wrapper = dict(
    _delete_=True,
    type='AGCOptimWrapper',
    constructor='AGCOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(type='agc', clipping=0.01, eps=1e-3, exclude=_base_.agc_exclude))

# COCO box + mask AP on val2017 (CocoMetric, as the base).
val_evaluator = dict(type='CocoMetric', metric=['bbox', 'segm'])
test_evaluator = val_evaluator
# backbone.out_channels vs neck.in_channels, checked before anything runs.
default_hooks = dict(neck_wiring=dict(type='NFNeckWiringCheckHook'))
# RNGStateHook: RNG states in every checkpoint, restored on resume (docs/training.md).
custom_hooks = [dict(type='NFPlotCurveHook'), dict(type='NFRNGStateHook')]
