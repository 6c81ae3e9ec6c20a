"""Build the conv / activation pair of an NF model or of its normalized counterpart."""
from typing import Optional

import torch.nn as nn

from .conv_norm import ConvNorm
from .gamma_act import GammaAct
from .ws_conv import ScaledStdConv2d


def build_nf_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  groups: int = 1, padding: str = 'symmetric', ws_eps: float = 1e-4,
                  ws_eps_mode: str = 'max', norm_cfg: Optional[dict] = None) -> nn.Module:
    """A :class:`ScaledStdConv2d` when ``norm_cfg`` is None, else :class:`ConvNorm`."""
    if norm_cfg is None:
        return ScaledStdConv2d(in_channels, out_channels, kernel_size, stride=stride,
                               groups=groups, padding=padding, eps=ws_eps, eps_mode=ws_eps_mode)
    return ConvNorm(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                    padding=padding, norm_cfg=norm_cfg)


def build_nf_act(act_cfg: dict, norm_cfg: Optional[dict] = None) -> nn.Module:
    """Gamma-scaled activation for NF models; the plain one (gamma 1) with a norm."""
    return GammaAct(act_cfg, gamma=None if norm_cfg is None else 1.0)
