"""Signal Propagation Plots (Brock et al. 2021, Sec. 3 and Fig. 2).

For every residual block we record, on the block *output* (the residual stream):

* ``mean_sq``: mean squared activation, ``E[x^2]`` over N, C, H, W;
* ``avg_channel_sq_mean``: average over channels of the squared channel mean
  (``mean_c(E_{N,H,W}[x]^2)``), the "mean shift" NF networks must keep small;
* ``avg_channel_var``: average over channels of the channel variance.

For an NF model at initialisation with the residual branches switched on (skip gain 1)
and unit-variance inputs, the residual stream's variance follows the analytic
schedule: it grows by ``alpha**2`` per block and is reset to ``1 + alpha**2`` after
each transition block (:func:`expected_block_output_variances`).

The schedule assumes variance-preserving shortcuts.  NF-ResNets (strided 1x1 conv
shortcuts) follow it in absolute terms.  NFNets average-pool 2x2 before the shortcut
conv of a stride-2 transition; at initialisation their zero-mean standardized filters
produce spatially decorrelated features, so that pool divides the stream's variance
by up to 4 at each stride-2 transition, after which the stream again grows by
``alpha**2`` per block relative to the new level.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn

from ..models.backbones.nf_base import NFBackboneBase, expected_stds


@dataclass
class BlockSignalStats:
    """Statistics of one block's output."""
    name: str
    mean_sq: float
    avg_channel_sq_mean: float
    avg_channel_var: float


def expected_block_output_variances(backbone: NFBackboneBase, alpha: Optional[float] = None
                                    ) -> List[float]:
    """Analytic variance of every block's output, in block order (paper Sec. 3)."""
    blocks = [b for stage in backbone.stages for b in stage]
    if alpha is None:
        alpha = blocks[0].alpha
    depths = [len(stage) for stage in backbone.stages]
    stds = [s for stage in expected_stds(depths + [1], alpha) for s in stage]
    return [s**2 for s in stds[1:len(blocks) + 1]]


@torch.no_grad()
def signal_propagation_stats(backbone: NFBackboneBase, inputs: torch.Tensor,
                             skip_gain: Optional[float] = 1.0) -> List[BlockSignalStats]:
    """Run ``inputs`` through ``backbone`` and collect per-block output statistics.

    Args:
        backbone: An :class:`NFNet` / :class:`NFResNet` (or its BN counterpart).
        inputs: :math:`(N, C, H, W)` images, typically i.i.d. N(0, 1).
        skip_gain: Temporarily set every block's skip gain to this value (1.0 turns the
            residual branches on, as in the paper's plots; ``None`` keeps the weights).

    The model runs in whatever mode it is in: use ``eval()`` (or ``drop_path_rate=0``)
    for NF models and ``train()`` for a BN counterpart, whose norms then use batch
    statistics as in training.

    Returns:
        list[BlockSignalStats]: one entry per residual block, in forward order.
    """
    blocks = [(f'stages.{s}.{b}', block) for s, stage in enumerate(backbone.stages)
              for b, block in enumerate(stage)]
    saved = {}
    if skip_gain is not None:
        for name, block in blocks:
            if block.skip_gain is not None:
                saved[name] = block.skip_gain.detach().clone()
                block.skip_gain.fill_(skip_gain)
    stats: List[BlockSignalStats] = []

    def make_hook(name: str):

        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            x = output.float()
            channel_mean = x.mean(dim=(0, 2, 3))
            stats.append(BlockSignalStats(
                name=name,
                mean_sq=float(x.pow(2).mean()),
                avg_channel_sq_mean=float(channel_mean.pow(2).mean()),
                avg_channel_var=float(x.var(dim=(0, 2, 3), unbiased=False).mean())))

        return hook

    handles = [block.register_forward_hook(make_hook(name)) for name, block in blocks]
    try:
        backbone(inputs)
    finally:
        for handle in handles:
            handle.remove()
        for name, block in blocks:
            if name in saved:
                block.skip_gain.copy_(saved[name])
    return stats
