# NFNet-F2 on ImageNet: the recipe of ./f0_imagenet.py (paper Sec. 6.1, Table 3 / App. A) with
# F2's depths (3, 6, 18, 9), train 256 px, test 352 px (384 x 384 resize + crop), dropout 0.4,
# RandAugment magnitude 10.
#
#   bash tools/dist_train.sh configs/nfnet/f2_imagenet.py 8     # 8 GPUs x 512 = 4096
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
import copy  # noqa: E402

model = dict(backbone=dict(arch='F2'), head=dict(dropout_rate=0.4))

train_size, test_size, ra_magnitude = 256, 352, 10
# F0's pipelines, re-sized (mmengine does not re-evaluate base variables).
train_pipeline = copy.deepcopy(_base_.train_pipeline)
train_pipeline[1].scale = train_size  # RandomResizedCrop
train_pipeline[3].magnitude_level = ra_magnitude  # RandAugment
train_pipeline[3].policies = [  # RandAugment's Translate: up to 100 px at this size
    dict(p, magnitude_range=(0, 100 / train_size)) if p.type == 'Translate' else p
    for p in train_pipeline[3].policies]
test_pipeline = copy.deepcopy(_base_.test_pipeline)
test_pipeline[1].crop_size = test_size  # NFNetEvalResizeCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
