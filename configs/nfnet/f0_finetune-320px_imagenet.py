# NFNet-F0: fine-tuning on ImageNet (NFNet paper Sec. 6.2, Table 4) at 320 px:
# ./f0_finetune_imagenet.py (224 px; how to point it at the pre-trained weights) re-sized.
#
#   bash tools/dist_train.sh configs/nfnet/f0_finetune-320px_imagenet.py 8   # DeepMind's F0
# From your own pre-training run (this project's defaults: symmetric padding, exact GELU):
#   bash tools/dist_train.sh configs/nfnet/f0_finetune-320px_imagenet.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=path/to/pretrained.pth \
#       model.backbone.padding=symmetric model.backbone.act_cfg.approximate=none
_base_ = ['./f0_finetune_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.datasets.sized_pipeline import sized_pipeline  # noqa: E402

# Fine-tune and evaluate at 320 px (eval: 352 x 352 resize + crop, as the recipe's eval):
# the base's 224 px pipelines, re-sized step by step type (mmengine does not
# re-evaluate base variables).
finetune_size = 320
train_dataloader = dict(dataset=dict(pipeline=sized_pipeline(
    _base_.train_pipeline, train_size=finetune_size)))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=sized_pipeline(
    _base_.test_pipeline, test_size=finetune_size)))
