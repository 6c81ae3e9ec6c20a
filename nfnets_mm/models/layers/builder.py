"""Build the conv / activation pair of an NF model or of its normalized counterpart."""
from typing import Optional

import torch.nn as nn

from .conv_norm import ConvNorm
from .gamma_act import GammaAct
from .ws_conv import ScaledStdConv2d


def build_nf_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  groups: int = 1, padding: str = 'symmetric', ws_eps: float = 1e-4,
                  ws_eps_mode: str = 'max', norm_cfg: Optional[dict] = None,
                  input_scale: float = 1.0) -> nn.Module:
    """A :class:`ScaledStdConv2d` when ``norm_cfg`` is None, else :class:`ConvNorm`.

    ``input_scale`` (a folded activation gamma / block ``1 / beta``) is only meaningful for
    the normalizer-free conv: the normalized counterpart has neither.
    """
    if norm_cfg is None:
        return ScaledStdConv2d(in_channels, out_channels, kernel_size, stride=stride,
                               groups=groups, padding=padding, eps=ws_eps, eps_mode=ws_eps_mode,
                               input_scale=input_scale)
    if input_scale != 1.0:
        raise ValueError(f'input_scale={input_scale!r} needs a ScaledStdConv2d; a conv with '
                         f'norm_cfg={norm_cfg!r} (ConvNorm) takes none.')
    return ConvNorm(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                    padding=padding, norm_cfg=norm_cfg)


def build_nf_act(act_cfg: dict, norm_cfg: Optional[dict] = None,
                 fold_gamma: bool = False) -> nn.Module:
    """Gamma-scaled activation for NF models; the plain one (gamma 1) with a norm.

    ``fold_gamma=True`` leaves the gamma to the consumer (see :class:`GammaAct`); it has no
    effect with a norm (gamma 1).
    """
    if norm_cfg is not None:
        return GammaAct(act_cfg, gamma=1.0)
    return GammaAct(act_cfg, fold_gamma=fold_gamma)
