# NFNet-F0: fine-tuning on ImageNet after pre-training (NFNet paper Sec. 6.2, Table 4):
# all layers, batch 2048, lr 0.1 cosine, 15,000 iterations, at 224 px.
# Other resolutions: f0_finetune-320px_imagenet.py, f0_finetune-384px_imagenet.py.
#
# The backbone starts from DeepMind's released F0 ImageNet weights ('dm-nfnets://F0':
# downloaded once, converted in memory, cached; docs/converters.md), hence DeepMind's
# numerics (TF "SAME" padding, tanh GELU); its 'backbone.*' weights are loaded, the
# classifier is new (1000 ImageNet classes).
#   bash tools/dist_train.sh configs/nfnet/f0_finetune_imagenet.py 8
# From your own pre-trained ImageClassifier checkpoint (e.g. one written by tools/train.py
# with configs/nfnet/f0_imagenet.py, whose padding / GELU are the model defaults):
#   bash tools/dist_train.sh configs/nfnet/f0_finetune_imagenet.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=path/to/pretrained.pth \
#       model.backbone.padding=symmetric model.backbone.act_cfg.approximate=none
# (or load the whole model with `model.backbone.init_cfg=None load_from=path/to/ckpt.pth`:
# MMEngine then skips and reports the head weights whose shapes differ; init_cfg must be
# cleared, since the runner initialises the model before it applies load_from).
_base_ = [
    '../_base_/models/nfnet_f0.py',
    '../_base_/datasets/imagenet_nfnet.py',
    '../_base_/schedules/nfnet_finetune_bs2048_15k.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.variants import get_variant  # noqa: E402

pretrained = 'dm-nfnets://F0'
model = dict(
    backbone=dict(
        type='NFNet', arch='F0', drop_path_rate=get_variant('F0').drop_path_rate,
        padding='same', act_cfg=dict(type='GELU', approximate='tanh'),  # DeepMind's forward
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=3072, dropout_rate=get_variant('F0').dropout),
    # Fine-tuning uses no MixUp / CutMix (the paper describes none for it).
    train_cfg=None,
)

# Fine-tune and evaluate at 224 px with DeepMind's crop, resize and eval (no RandAugment):
# TF's distorted-bounding-box crop + TF bicubic resize; eval 256 x 256 squash-resize + centre
# crop.  Switches to MMPretrain's stock steps as in _base_/datasets/imagenet_nfnet.py:
# sampler='inception', backend='pillow', mode='short_side'.
finetune_size = 224
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NFNetRandomResizedCrop', scale=finetune_size, sampler='deepmind', backend='tf'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NFNetEvalResizeCrop', crop_size=finetune_size, pad=32, mode='deepmind',
         backend='tf'),
    dict(type='PackInputs'),
]
# No mixing: the recipe's NFNetMixDataset wrapper is replaced by the plain dataset.
train_dataloader = dict(
    batch_size=256,
    dataset=dict(_delete_=True, type=_base_.dataset_type, data_root=_base_.data_root,
                 split='train', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=3,
                    save_best='auto'),
)
log_processor = dict(by_epoch=False)
