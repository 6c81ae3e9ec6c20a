"""EMAHook that hands the initial weights to a :class:`DeepMindEMA`."""
from mmengine.hooks import EMAHook

from nfnets_mm.registry import HOOKS


@HOOKS.register_module(name='NFWarmupEMAHook')  # NF prefix: see nfnets_mm/registry.py
class WarmupEMAHook(EMAHook):
    """MMEngine's :class:`~mmengine.hooks.EMAHook` plus one step at ``before_train``.

    ``EMAHook`` builds the averaged model in ``before_run``, before the runner
    initialises (or loads) the weights.  When training starts from scratch (the average
    has not been updated yet, i.e. no resumed EMA state) this hook copies the weights
    the run really starts from into the average, so :class:`DeepMindEMA` can apply
    DeepMind's first update ``ema_1 = 0.1 * w_0 + 0.9 * w_1`` exactly.  Averaged models
    without a ``sync`` method are left to MMEngine's usual first-update copy.

    Args: as :class:`~mmengine.hooks.EMAHook`; e.g.
        ``dict(type='NFWarmupEMAHook', ema_type='NFDeepMindEMA', momentum=1e-5,
        priority='ABOVE_NORMAL')``.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if int(self.ema_model.steps) == 0 and hasattr(self.ema_model, 'sync'):
            self.ema_model.sync(self.src_model)
