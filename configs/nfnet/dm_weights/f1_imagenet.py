# Evaluate DeepMind's released NFNet-F1 weights (F1_haiku.npz) on ImageNet
# val, test-only: ./f0_imagenet.py (DeepMind's forward and eval preprocessing) with F1's
# arch and its test size from the variant table (a centre crop after a resize of the whole image
# to test + 32 square).
# timm's conversion of the same weights reports 84.7 top-1 at 320 px.
#
#   python tools/test.py configs/nfnet/dm_weights/f1_imagenet.py
# loads F1_haiku.npz through `load_from` below (downloaded once, converted in memory and
# cached: docs/converters.md); a converted file works too:
#   python tools/test.py configs/nfnet/dm_weights/f1_imagenet.py f1_converted.pth
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

from nfnets_mm.datasets.sized_pipeline import sized_pipeline  # noqa: E402
from nfnets_mm.variants import get_variant  # noqa: E402

# DeepMind's released weights (nfnets_mm/variants.py: get_variant('F1').dm_weights_url).
load_from = 'dm-nfnets://F1'

# F1's row of the variant table (nfnets_mm/variants.py); dropout acts in training only.
model = dict(backbone=dict(arch='F1'), head=dict(dropout_rate=get_variant('F1').dropout))
# The base's pipeline re-sized, step by step type (mmengine does not re-evaluate base
# variables).
test_dataloader = dict(dataset=dict(pipeline=sized_pipeline(_base_.test_pipeline, 'F1')))
