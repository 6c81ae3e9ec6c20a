# Mask R-CNN + FPN, NFNet-F1 backbone, the NFNet paper's COCO setting (Sec. 6.3): 22,500
# iterations at batch 256 (64 GPUs x 4), large-scale jitter at 1024 px, fp16 AMP, AGC.
# Paper Table 5: 48.1 box AP / 41.7 mask AP. Settings and their sources:
# ../_base_/detection/mask-rcnn_nfnet_fpn_lsj-22.5k_coco.py.
#
#   GPUS=64 bash tools/slurm_train.sh PARTITION nfnet-f1-coco \
#       configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_64xb4-amp-lsj-22.5k_coco.py WORK_DIR
#   bash tools/dist_train.sh \
#       configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_64xb4-amp-lsj-22.5k_coco.py 8 --auto-scale-lr
# The second runs batch 32 with lr x 32 / 256 for the same 22,500 iterations (8x fewer
# images than the paper); the paper's numbers need batch 256.
#
# The backbone starts from DeepMind's released F1 ImageNet weights (dm-nfnets://F1).
_base_ = '../_base_/detection/mask-rcnn_nfnet_fpn_lsj-22.5k_coco.py'
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
from nfnets_mm.variants import get_variant  # noqa: E402

variant = 'F1'
model = dict(
    backbone=dict(arch=variant, init_cfg=dict(checkpoint=f'dm-nfnets://{variant}')),
    neck=dict(in_channels=list(get_variant(variant).widths)))  # = backbone.out_channels
