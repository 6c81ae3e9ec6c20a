"""Plain conv + normalization, for the batch-normalized counterparts of NF models."""
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from nfnets_mm.registry import MODELS
from .padding import (check_padding_mode, needs_dynamic_same_padding, pad_same,
                      symmetric_padding)


@MODELS.register_module(name='NFConvNorm')
class ConvNorm(nn.Module):
    """``norm(conv(x))`` with the same padding conventions as :class:`ScaledStdConv2d`.

    Registered as ``type='NFConvNorm'`` (NF-prefixed so that it cannot collide with another
    package's name in MMEngine's root registry; see :mod:`nfnets_mm.registry`).

    Used where a backbone is built with ``norm_cfg`` (e.g. ``dict(type='BN')``) to get
    the normalized counterpart of an NF architecture (paper Table 7).

    Shapes:
        - input: :math:`(N, C_{in}, H, W)`; output: :math:`(N, C_{out}, H', W')`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, groups: int = 1, padding: str = 'symmetric',
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        check_padding_mode(padding)
        self.dynamic_same = padding == 'same' and needs_dynamic_same_padding(kernel_size, stride)
        pad = 0 if self.dynamic_same else symmetric_padding(kernel_size)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad,
                              groups=groups, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode='fan_out', nonlinearity='relu')
        self.norm_name, self.norm = build_norm_layer(norm_cfg, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            x = pad_same(x, self.conv.kernel_size, self.conv.stride)
        return self.norm(self.conv(x))
