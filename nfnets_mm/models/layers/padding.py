"""Padding helpers shared by the NF layers.

Two padding conventions are supported everywhere a spatial layer is built:

* ``'symmetric'`` (default): PyTorch's static ``padding = dilation * (kernel - 1) // 2``
  on both sides.
* ``'same'``: TensorFlow / Haiku ``"SAME"`` padding.  The total padding along a
  dimension of size ``n`` is ``max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)``, and
  the odd pixel, if any, goes to the bottom/right.  For stride 1 this equals the
  symmetric padding; for stride 2 on even inputs it pads only bottom/right, which is
  what DeepMind's released weights were trained with.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

PADDING_MODES = ('symmetric', 'same')


def check_padding_mode(padding: str) -> str:
    """Validate a padding mode name and return it."""
    if padding not in PADDING_MODES:
        raise ValueError(f'Unknown padding mode {padding!r}; valid choices are '
                         f'{", ".join(repr(p) for p in PADDING_MODES)}.')
    return padding


def symmetric_padding(kernel_size: int, dilation: int = 1) -> int:
    """Static padding that keeps the size for stride 1 (odd kernels)."""
    return dilation * (kernel_size - 1) // 2


def same_padding_amount(size: int, kernel_size: int, stride: int,
                        dilation: int = 1) -> Tuple[int, int]:
    """(before, after) padding of TF "SAME" for one spatial dimension.

    TF pads ``(ceil(size / stride) - 1) * stride + effective_kernel - size`` in total,
    which equals ``effective_kernel - (stride if size % stride == 0 else size % stride)``.
    The second form is written here: under ``torch.compile`` with dynamic shapes the
    padding then depends on ``size % stride`` alone, and Dynamo's symbolic reasoning about
    it stays cheap (the nested ceil / max form made a recompile for a second image size
    take 31 s instead of 5 s for F0 on a CPU).
    """
    effective = (kernel_size - 1) * dilation + 1
    remainder = size % stride
    total = max(effective - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def needs_dynamic_same_padding(kernel_size: int, stride: int, dilation: int = 1) -> bool:
    """Whether "SAME" padding depends on the input size (else it is static)."""
    return stride > 1 and (kernel_size - 1) * dilation + 1 > 1


def pad_same(x: torch.Tensor, kernel_size: Tuple[int, int], stride: Tuple[int, int],
             dilation: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Pad an ``(N, C, H, W)`` tensor the way TF "SAME" does for this layer."""
    top, bottom = same_padding_amount(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    left, right = same_padding_amount(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x
