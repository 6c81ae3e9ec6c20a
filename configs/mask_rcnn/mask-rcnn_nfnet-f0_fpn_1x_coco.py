# Mask R-CNN + FPN with an NFNet-F0 backbone on COCO (NFNet paper Sec. 6.3, Table 5:
# F0 46.7 box AP / 40.9 mask AP with 22,500 steps at batch 256 and Ghiasi et al.'s
# large-scale-jitter setting). This config keeps MMDetection's standard 1x schedule
# (12 epochs, batch 16 = 8 GPUs x 2, 1333x800) so it compares with mmdet's ResNet-50
# baselines; it is not the paper's schedule.
#
#   bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_1x_coco.py 8
#
# The backbone starts from ImageNet weights: by default DeepMind's F0 converted to this
# project's names (e.g. by the converter into checkpoints/f0_converted.pth), hence
# padding='same' and tanh-GELU, DeepMind's forward. For weights trained with
# configs/nfnet/f0_imagenet.py drop those two keys and point `checkpoint` at them.
# Data: data/coco/{annotations,train2017,val2017} (mmdet's standard layout).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/f0_converted.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='NFNet',
        arch='F0',
        out_indices=(0, 1, 2, 3),  # strides 4, 8, 16, 32
        with_final_conv=False,  # the 1x1 -> 3072 conv only serves the classifier
        drop_path_rate=0.1,
        padding='same',
        act_cfg=dict(type='GELU', approximate='tanh'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[256, 512, 1536, 1536]),
)

# AGC (lambda 0.01) on the whole detector except its output layers, the detection
# analogue of leaving the classifier unclipped: RPN objectness / box deltas, R-CNN class
# scores / box deltas and the mask logits. No weight decay on gains / biases / skip gains.
# The paper tunes lambda = 0.01 for batch 4096 and notes that smaller batches tolerate
# larger lambdas; at this config's batch of 16, watch agc_clip_fraction in the log and raise
# clipping (e.g. 0.02-0.04, as the CPU demo does at batch 32) if it stays high.
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

# COCO box + mask AP on val2017 (CocoMetric, as the base).
val_evaluator = dict(type='CocoMetric', metric=['bbox', 'segm'])
test_evaluator = val_evaluator
# RNGStateHook: RNG states in every checkpoint, restored on resume (docs/training.md).
custom_hooks = [dict(type='NFPlotCurveHook'), dict(type='NFRNGStateHook')]
