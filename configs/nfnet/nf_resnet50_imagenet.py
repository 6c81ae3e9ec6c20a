# NF-ResNet-50 (pre-activation bottleneck ResNet-50 without normalization: Scaled WS,
# gamma-ReLU, alpha 0.2, SkipInit) on ImageNet with the NFNet recipe of the F-configs:
# batch 4096, SGD-Nesterov lr 1.6, 360 epochs (5 warmup + cosine), wd 2e-5, AGC 0.01,
# EMA 0.99999, label smoothing 0.1, half MixUp / half CutMix, AMP.
# Sizes are not NFNet-table numbers: train / test 224 px (256 x 256 resize + crop) with
# RandAugment magnitude 10 (what the recipe uses at 224 px, cf. F1), dropout 0.25 and
# drop path 0.1 (NFResNet's default). The data protocol is the NFNet one (DeepMind's NFNet
# experiment); DeepMind's NF-ResNet experiment (nfnets/experiment.py) instead trains without
# RandAugment / MixUp / CutMix and evaluates with a centre crop resized to the test size.
#
#   bash tools/dist_train.sh configs/nfnet/nf_resnet50_imagenet.py 8    # 8 x 512 = 4096
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='NFResNet', depth=50, drop_path_rate=0.1),
    head=dict(in_channels=2048, dropout_rate=0.25),
)

from nfnets_mm.datasets.sized_pipeline import sized_pipeline  # noqa: E402

# F0's pipelines (the dataset base: DeepMind's protocol) re-sized step by step type to
# NF-ResNet-50's sizes (mmengine does not re-evaluate base variables).
_sizes = dict(train_size=224, test_size=224, ra_magnitude=10)
train_dataloader = dict(dataset=dict(  # NFNetMixDataset: crop before the mix, RandAugment after
    dataset=dict(pipeline=sized_pipeline(_base_.train_raw_pipeline, **_sizes)),
    pipeline=sized_pipeline(_base_.train_mix_pipeline, **_sizes)))
val_dataloader = test_dataloader = dict(
    dataset=dict(pipeline=sized_pipeline(_base_.test_pipeline, **_sizes)))
del _sizes
