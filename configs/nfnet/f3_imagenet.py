# NFNet-F3 on ImageNet: the recipe of ./f0_imagenet.py (paper Sec. 6.1, Table 3 / App. A) with
# F3's row of the variant table, nfnets_mm/variants.py (depths, train / test size, dropout,
# RandAugment level, drop path).
#
#   bash tools/dist_train.sh configs/nfnet/f3_imagenet.py 8     # 8 GPUs x 512 = 4096
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.datasets.sized_pipeline import sized_pipeline  # noqa: E402
from nfnets_mm.variants import get_variant  # noqa: E402

variant = 'F3'  # its row of the variant table (nfnets_mm/variants.py) gives every number
model = dict(backbone=dict(arch=variant, drop_path_rate=get_variant(variant).drop_path_rate),
             head=dict(dropout_rate=get_variant(variant).dropout))
# F0's pipelines (the dataset base: DeepMind's protocol) re-sized step by step type
# (mmengine does not re-evaluate base variables). NFNetMixDataset: the crop runs before the
# mix, RandAugment after it.
train_dataloader = dict(dataset=dict(
    dataset=dict(pipeline=sized_pipeline(_base_.train_raw_pipeline, variant)),
    pipeline=sized_pipeline(_base_.train_mix_pipeline, variant)))
val_dataloader = test_dataloader = dict(
    dataset=dict(pipeline=sized_pipeline(_base_.test_pipeline, variant)))
