# Mask R-CNN + FPN with an NFNet-F1 backbone on MMDetection's 1x schedule:
# ./mask-rcnn_nfnet-f0_fpn_1x_coco.py with F1 and DeepMind's released F1 weights. The paper's
# setting (Table 5: F1 48.1 box AP / 41.7 mask AP) is
# ./mask-rcnn_nfnet-f1_fpn_64xb4-amp-lsj-22.5k_coco.py.
#
#   bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_1x_coco.py 8
_base_ = ['./mask-rcnn_nfnet-f0_fpn_1x_coco.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.variants import get_variant  # noqa: E402

variant = 'F1'
model = dict(
    backbone=dict(arch=variant, init_cfg=dict(checkpoint=f'dm-nfnets://{variant}')),
    neck=dict(in_channels=list(get_variant(variant).widths)))  # = backbone.out_channels
