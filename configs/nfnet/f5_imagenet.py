# NFNet-F5 on ImageNet: the recipe of ./f0_imagenet.py (paper Sec. 6.1, Table 3 / App. A) with
# F5's row of the variant table, nfnets_mm/variants.py (depths, train / test size, dropout,
# RandAugment level, drop path).
#
#   bash tools/dist_train.sh configs/nfnet/f5_imagenet.py 8     # 8 GPUs x 512 = 4096
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.variants import get_variant  # noqa: E402

# F5's row of the variant table (nfnets_mm/variants.py).
train_size, test_size, ra_magnitude, ra_num_layers, dropout, drop_path_rate = (
    getattr(get_variant('F5'), key) for key in (
        'train_size', 'test_size', 'ra_magnitude', 'ra_num_layers', 'dropout', 'drop_path_rate'))
model = dict(backbone=dict(arch='F5', drop_path_rate=drop_path_rate),
             head=dict(dropout_rate=dropout))

# F0's pipelines (the dataset base, DeepMind's protocol) with this variant's numbers, step by
# step type (mmengine does not re-evaluate base variables).
_resized = dict(
    NFNetRandomResizedCrop=dict(scale=train_size),
    NFNetRandAugment=dict(magnitude=ra_magnitude, image_size=train_size,
                          num_layers=ra_num_layers),
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
