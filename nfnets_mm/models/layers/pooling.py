"""Max pooling with TF/Haiku "SAME" padding."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .padding import same_padding_amount


class MaxPool2dSame(nn.Module):
    """``MaxPool2d`` whose padding is TF "SAME", padded with ``-inf`` (never picked).

    Shapes:
        - input: :math:`(N, C, H, W)`; output: :math:`(N, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding_amount(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding_amount(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float('-inf'))
        return F.max_pool2d(x, self.kernel_size, self.stride)
