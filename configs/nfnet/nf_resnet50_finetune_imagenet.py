# NF-ResNet-50: fine-tuning on ImageNet after pre-training (NFNet paper Sec. 6.2, Table 4):
# ./f0_finetune_imagenet.py (all layers, batch 2048, lr 0.1 cosine, 15,000 iterations,
# 224 px) with an NF-ResNet-50 backbone.
# Other resolutions: nf_resnet50_finetune-{320,384}px_imagenet.py.
#
#   bash tools/dist_train.sh configs/nfnet/nf_resnet50_finetune_imagenet.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=path/to/pretrained.pth
_base_ = ['./f0_finetune_imagenet.py']
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/nf-resnet50_pretrained.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='NFResNet', depth=50, drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=2048, dropout_rate=0.25),
)
