# NFNet-F0 on ImageNet with the paper's recipe (Brock et al. 2021, Sec. 6.1, Table 3 / App. A)
# and DeepMind's data protocol (docs/training.md, "DeepMind protocol vs this recipe"): F0's
# row of the variant table (depths, train / test size, dropout, RandAugment level, drop
# path), half MixUp / half CutMix, label smoothing 0.1, SGD-Nesterov lr 1.6 @ batch 4096,
# 360 epochs (5 warmup + cosine), wd 2e-5, AGC 0.01 (not on head.fc.weight), EMA 0.99999,
# AMP.
#
#   bash tools/dist_train.sh configs/nfnet/f0_imagenet.py 8     # 8 GPUs x 512 = 4096
# If 512 images per GPU do not fit, keep 4096 with more GPUs / nodes, or lower
# train_dataloader.batch_size and add --auto-scale-lr (lr scales linearly from 4096).
_base_ = [
    '../_base_/models/nfnet_f0.py',
    '../_base_/datasets/imagenet_nfnet.py',
    '../_base_/schedules/nfnet_imagenet_bs4096.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.variants import get_variant  # noqa: E402

# F0's row of the variant table (nfnets_mm/variants.py).  Its sizes and RandAugment level
# are the dataset base's (_base_/datasets/imagenet_nfnet.py, from the same row); the other
# variants re-size its pipelines.
model = dict(
    backbone=dict(arch='F0', drop_path_rate=get_variant('F0').drop_path_rate),
    head=dict(in_channels=3072, dropout_rate=get_variant('F0').dropout),
)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3, save_best='auto'),
)
