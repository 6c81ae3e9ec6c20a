# Evaluate DeepMind's released NFNet-F4 weights (F4_haiku.npz, converted) on ImageNet
# val, test-only: ./f0_imagenet.py (DeepMind's forward and eval preprocessing) with F4's
# arch and a 512 px centre crop after a bicubic resize of the whole image to 544 x 544.
# timm's conversion of the same weights reports 85.84 top-1 at 512 px.
#
#   python tools/test.py configs/nfnet/dm_weights/f4_imagenet.py f4_converted.pth
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
import copy  # noqa: E402

model = dict(backbone=dict(arch='F4'), head=dict(dropout_rate=0.5))  # dropout: train only

# The base pipeline holds F0's size (mmengine does not re-evaluate it): restate the sizes.
test_size = 512
test_pipeline = copy.deepcopy(_base_.test_pipeline)
test_pipeline[1].crop_size = test_size  # NFNetEvalResizeCrop
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
