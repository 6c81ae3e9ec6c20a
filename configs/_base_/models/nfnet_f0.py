# NFNet-F0 image classifier, as trained in the NFNet paper (Brock et al. 2021, Sec. 5-6.1).
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
_base_ = []  # before the import: MMEngine then reads a plain config, not a lazy-import one
from nfnets_mm.variants import get_variant  # noqa: E402

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='NFNet',
        arch='F0',
        # Released ImageNet recipe: stochastic depth 0.25 * i / N on block i of N.
        drop_path_rate=get_variant('F0').drop_path_rate,
        # Layout of weights and activations. 'channels_last' (NHWC) is the native layout
        # of tensor-core convolutions and usually trains faster under AMP; it stays off by
        # default until a GPU run of `bash tools/analysis/gpu_benchmarks.sh` measures it
        # against 'contiguous' for this recipe (docs/benchmarks.md, issue 10 targets).
        memory_format='contiguous'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='NFNetClsHead',
        num_classes=1000,
        in_channels=3072,  # final 1x1 conv: 2 x 1536
        dropout_rate=get_variant('F0').dropout,
        # mode='original' is standard label smoothing, (1 - 0.1) * onehot + 0.1 / K,
        # as in DeepMind's recipe; 'classy_vision' would use 0.1 / 1.1 instead.
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5),
    ),
    data_preprocessor=dict(
        num_classes=1000,
        # ImageNet RGB mean / std (pixel scale 0-255); images are loaded BGR.
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True,
    ),
    # No batch augments: DeepMind mixes in the data loader, per example, on raw images and
    # before RandAugment (NFNetMixDataset in the dataset config); the data preprocessor
    # only normalizes. MMPretrain's batch-level path (one ratio per half-batch, mixing the
    # normalized, already RandAugment-ed tensors) is one switch away, see docs/training.md
    # "Mixing":
    #   model = dict(train_cfg=dict(augments=dict(
    #       type='NFHalfMixupHalfCutMix', mixup_alpha=0.2, cutmix_alpha=1.0)))
    #   train_dataloader = dict(dataset=dict(mix=False))
)
