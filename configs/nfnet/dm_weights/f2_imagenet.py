# Evaluate DeepMind's released NFNet-F2 weights (F2_haiku.npz) on ImageNet
# val, test-only: ./f0_imagenet.py (DeepMind's forward and eval preprocessing) with F2's
# arch and its test size from the variant table (a centre crop after a resize of the whole image
# to test + 32 square).
# timm's conversion of the same weights reports 85.18 top-1 at 352 px.
#
#   python tools/test.py configs/nfnet/dm_weights/f2_imagenet.py
# loads F2_haiku.npz through `load_from` below (downloaded once, converted in memory and
# cached: docs/converters.md); a converted file works too:
#   python tools/test.py configs/nfnet/dm_weights/f2_imagenet.py f2_converted.pth
_base_ = ['./f0_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

from nfnets_mm.datasets.sized_pipeline import sized_pipeline  # noqa: E402
from nfnets_mm.variants import get_variant  # noqa: E402

# DeepMind's released weights (nfnets_mm/variants.py: get_variant('F2').dm_weights_url).
load_from = 'dm-nfnets://F2'

# F2's row of the variant table (nfnets_mm/variants.py); dropout acts in training only.
model = dict(backbone=dict(arch='F2'), head=dict(dropout_rate=get_variant('F2').dropout))
# The base's pipeline re-sized, step by step type (mmengine does not re-evaluate base
# variables).
test_dataloader = dict(dataset=dict(pipeline=sized_pipeline(_base_.test_pipeline, 'F2')))
