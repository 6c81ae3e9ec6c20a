# Mask R-CNN + FPN with an NFNet-F1 backbone on COCO (NFNet paper Sec. 6.3, Table 5:
# F1 48.1 box AP / 41.7 mask AP with 22,500 steps at batch 256 and Ghiasi et al.'s
# large-scale-jitter setting): ./mask-rcnn_nfnet-f0_fpn_1x_coco.py (mmdet's 1x schedule,
# AGC, DeepMind's forward) with F1 and DeepMind's F1 weights (checkpoints/f1_converted.pth;
# for weights trained with configs/nfnet/f1_imagenet.py see the F0 config).
#
#   bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_1x_coco.py 8
_base_ = ['./mask-rcnn_nfnet-f0_fpn_1x_coco.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/f1_converted.pth'
model = dict(backbone=dict(arch='F1', init_cfg=dict(checkpoint=pretrained)))
