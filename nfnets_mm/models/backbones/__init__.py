from .nf_blocks import NFNetBlock, NFResNetBottleneck
from .nf_resnet import NFResNet
from .nfnet import NFNet

__all__ = ['NFNet', 'NFResNet', 'NFNetBlock', 'NFResNetBottleneck']
