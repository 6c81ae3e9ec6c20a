"""Per-sample stochastic depth with DeepMind's semantics."""
from typing import Optional

import torch
import torch.nn as nn

from nfnets_mm.registry import MODELS


@MODELS.register_module(name='NFStochasticDepth')
class StochasticDepth(nn.Module):
    """Drop a residual branch per sample during training.

    Registered as ``type='NFStochasticDepth'`` (NF-prefixed so that it cannot collide with another
    package's name in MMEngine's root registry; see :mod:`nfnets_mm.registry`).

    DeepMind's NFNets drop the branch of each sample with probability ``drop_rate``
    and do **not** rescale the kept samples (``scale_by_keep=False``, default).
    ``scale_by_keep=True`` divides kept samples by ``1 - drop_rate`` (timm's
    ``DropPath``).  In eval mode, or with ``drop_rate == 0``, this is the identity.

    Shapes:
        - input: :math:`(N, *)`; output: same.
    """

    def __init__(self, drop_rate: float = 0.0, scale_by_keep: bool = False) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f'drop_rate must be in [0, 1), got {drop_rate}.')
        self.drop_rate = drop_rate
        self.scale_by_keep = scale_by_keep

    def extra_repr(self) -> str:
        return f'drop_rate={self.drop_rate}, scale_by_keep={self.scale_by_keep}'

    def sample_mask(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The per-sample factor ``forward`` multiplies ``x`` by, or None when inactive.

        Shape :math:`(N, 1, ..., 1)` (``x.ndim`` dims), dtype and device of ``x``: 0 for a
        dropped sample, 1 (``1 / (1 - drop_rate)`` with ``scale_by_keep``) for a kept one.
        Draws from the default generator (the same draw ``forward`` makes).  NF blocks fold
        it into their residual merge.
        """
        if not self.training or self.drop_rate == 0.0:
            return None
        keep = 1.0 - self.drop_rate
        shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        if self.scale_by_keep:
            mask = mask / keep
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.sample_mask(x)
        return x if mask is None else x * mask
