"""DeepMind's EMA of the weights with TF1-style decay warmup, as an MMEngine averaged model.

DeepMind's NFNet release keeps ``ema = d_t * ema + (1 - d_t) * params`` after every
optimizer step ``t = 0, 1, 2, ...`` (``params`` already updated, ``ema`` starting as a
copy of the initial weights) with ``d_t = min(decay, (1 + t) / (10 + t))`` and
``decay = 0.99999``.  In MMEngine's notation (``ema.lerp_(params, momentum)``) that is
``momentum_t = 1 - d_t = max(1 - decay, 9 / (10 + t))``.

Neither of MMEngine's classes gives this exactly:

* ``ExponentialMovingAverage(momentum=1e-5)`` has no warmup at all;
* ``MomentumAnnealingEMA(momentum=1e-5, gamma=g)`` uses ``g / (g + steps)``: ``g=9``
  gives ``9 / (9 + t)``, one step behind DeepMind's ``9 / (10 + t)``, and ``g=10`` gives
  ``10 / (10 + t)``; moreover both copy the weights on the first update instead of
  averaging them with the initial ones.

:class:`DeepMindEMA` implements the formula above with ``t`` = number of previous
updates.  To reproduce the first update exactly it needs the initial weights, which
MMEngine's ``EMAHook`` cannot give it (it builds the average in ``before_run``, *before*
the runner initialises the weights); :class:`~nfnets_mm.engine.hooks.WarmupEMAHook`
syncs them in ``before_train``.  Under the plain ``EMAHook`` the first update copies
the weights as MMEngine does; the initial weights' share in DeepMind's average,
``0.1 * prod_{t=1}^{s-1} (1 + t) / (10 + t)``, is below 1e-9 after 100 steps, so the
two agree to that precision from then on.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import ExponentialMovingAverage

from nfnets_mm.registry import MODELS


@MODELS.register_module(name='NFDeepMindEMA')  # NF prefix: see nfnets_mm/registry.py
class DeepMindEMA(ExponentialMovingAverage):
    """EMA with DeepMind's warmup: ``momentum_t = max(momentum, 1 - (1 + t) / (10 + t))``.

    Args:
        model (nn.Module): The model to average.
        momentum (float): Asymptotic momentum ``1 - decay``. Defaults to 1e-5
            (decay 0.99999, the NFNet recipe).
        warmup (bool): Apply the ``(1 + t) / (10 + t)`` decay warmup. Defaults to True.
        interval (int): Update every ``interval`` calls. Defaults to 1.
        device (torch.device, optional): Where to keep the average.
        update_buffers (bool): Average buffers too. Defaults to False.
    """

    def __init__(self,
                 model: nn.Module,
                 momentum: float = 1e-5,
                 warmup: bool = True,
                 interval: int = 1,
                 device: Optional[torch.device] = None,
                 update_buffers: bool = False) -> None:
        super().__init__(model, momentum=momentum, interval=interval, device=device,
                         update_buffers=update_buffers)
        self.warmup = warmup
        #: True once :meth:`sync` gave the average the weights before the first update.
        self.synced = False

    def momentum_at(self, step: int) -> float:
        """``1 - min(1 - momentum, (1 + t) / (10 + t))`` for update ``t`` (0-based)."""
        if not self.warmup:
            return self.momentum
        return max(self.momentum, 1. - (1. + step) / (10. + step))

    @torch.no_grad()
    def sync(self, model: nn.Module) -> None:
        """Copy ``model``'s current weights into the average (DeepMind's ``ema_0``)."""
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        for name, avg in self.avg_parameters.items():
            avg.data.copy_(source[name].data.to(avg.device))
        self.synced = True

    def avg_func(self, averaged_param: torch.Tensor, source_param: torch.Tensor,
                 steps: int) -> None:
        averaged_param.lerp_(source_param, self.momentum_at(int(steps)))

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Update after an optimizer step; the first one averages if :meth:`sync` ran."""
        if int(self.steps) == 0 and not self.synced:
            # No initial weights known: start from the current ones (MMEngine's way).
            super().update_parameters(model)
            return
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        if int(self.steps) % self.interval == 0:
            for name, avg in self.avg_parameters.items():
                if avg.dtype.is_floating_point:
                    self.avg_func(avg.data, source[name].data.to(avg.device), self.steps)
        if not self.update_buffers:
            for b_avg, b_src in zip(self.module.buffers(), model.buffers()):
                b_avg.data.copy_(b_src.data.to(b_avg.device))
        self.steps += 1
