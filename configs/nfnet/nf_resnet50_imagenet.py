# NF-ResNet-50 (pre-activation bottleneck ResNet-50 without normalization: Scaled WS,
# gamma-ReLU, alpha 0.2, SkipInit) on ImageNet with the NFNet recipe of the F-configs:
# batch 4096, SGD-Nesterov lr 1.6, 360 epochs (5 warmup + cosine), wd 2e-5, AGC 0.01,
# EMA 0.99999, label smoothing 0.1, half MixUp / half CutMix, AMP.
# Sizes are not NFNet-table numbers: train / test 224 px (256 x 256 resize + crop) with
# RandAugment magnitude 10 (what the recipe uses at 224 px, cf. F1), dropout 0.25 and
# drop path 0.1 (NFResNet's default).
#
#   bash tools/dist_train.sh configs/nfnet/nf_resnet50_imagenet.py 8    # 8 x 512 = 4096
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='NFResNet', depth=50, drop_path_rate=0.1),
    head=dict(in_channels=2048, dropout_rate=0.25),
)

train_size, test_size, ra_magnitude = 224, 224, 10
# F0's pipelines (the dataset base, DeepMind's protocol) with this variant's numbers, step by
# step type (mmengine does not re-evaluate base variables).
_resized = dict(
    NFNetRandomResizedCrop=dict(scale=train_size),
    NFNetRandAugment=dict(magnitude=ra_magnitude, image_size=train_size),
    NFNetEvalResizeCrop=dict(crop_size=test_size))
train_raw_pipeline = [
    dict(step, **_resized.get(step.type, {})) for step in _base_.train_raw_pipeline]
train_mix_pipeline = [
    dict(step, **_resized.get(step.type, {})) for step in _base_.train_mix_pipeline]
test_pipeline = [dict(step, **_resized.get(step.type, {})) for step in _base_.test_pipeline]
train_dataloader = dict(  # NFNetMixDataset: raw pipeline inside, RandAugment after the mix
    dataset=dict(dataset=dict(pipeline=train_raw_pipeline), pipeline=train_mix_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
del _resized
