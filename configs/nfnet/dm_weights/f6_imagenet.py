# Evaluate DeepMind's released NFNet-F6 weights (F6_haiku.npz, converted) on ImageNet
# val, test-only: ./f0_imagenet.py (DeepMind's forward and eval preprocessing) with F6's
# arch and a 576 px centre crop after a bicubic resize of the whole image to 608 x 608.
# timm's conversion of the same weights reports 86.36 top-1 at 576 px.
#
#   python tools/test.py configs/nfnet/dm_weights/f6_imagenet.py f6_converted.pth
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
import copy  # noqa: E402

model = dict(backbone=dict(arch='F6'), head=dict(dropout_rate=0.5))  # dropout: train only

# The base pipeline holds F0's size (mmengine does not re-evaluate it): restate the sizes.
test_size = 576
test_pipeline = copy.deepcopy(_base_.test_pipeline)
test_pipeline[1].crop_size = test_size  # NFNetEvalResizeCrop
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
