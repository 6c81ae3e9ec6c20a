"""MMEngine optimizer wrappers that apply Adaptive Gradient Clipping."""
import warnings
from typing import List, Optional

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from nfnets_mm.registry import OPTIM_WRAPPERS
from .agc import adaptive_clip_grad_

#: Keys accepted in ``clip_grad`` when ``type='agc'``.
AGC_KEYS = ('type', 'clipping', 'eps', 'grad_eps', 'exclude', 'log_stats')
#: Parameters left unclipped by default: MMPretrain's classifier weight (paper Sec. 4.1,
#: "it is always better to not clip the final linear layer").
DEFAULT_EXCLUDE = ('head.fc.weight', )


def parse_agc_cfg(clip_grad: Optional[dict]) -> dict:
    """Validate an AGC ``clip_grad`` dict and fill in defaults."""
    cfg = dict(type='agc', clipping=0.01, eps=1e-3, grad_eps=1e-6, log_stats=True)
    if clip_grad is None:
        clip_grad = {}
    if not isinstance(clip_grad, dict):
        raise TypeError(f'clip_grad must be a dict, got {type(clip_grad).__name__}.')
    clip_type = clip_grad.get('type', 'agc')
    if clip_type != 'agc':
        raise ValueError(f'AGC optimizer wrappers need clip_grad type "agc", got {clip_type!r}; '
                         'use type="OptimWrapper" for "norm"/"value" clipping.')
    unknown = set(clip_grad) - set(AGC_KEYS)
    if unknown:
        raise KeyError(f'Unknown AGC clip_grad keys {sorted(unknown)}; valid keys are '
                       f'{", ".join(AGC_KEYS)}.')
    cfg.update(clip_grad)
    if not cfg['clipping'] > 0:
        raise ValueError(f'AGC clipping must be > 0, got {cfg["clipping"]}.')
    if cfg['eps'] < 0 or cfg['grad_eps'] <= 0:
        raise ValueError('AGC eps must be >= 0 and grad_eps > 0.')
    return cfg


class AGCMixin:
    """Adds AGC to an MMEngine optimizer wrapper.

    MMEngine's wrappers call ``self._clip_grad()`` from ``step()`` whenever
    ``clip_grad_kwargs`` is set: ``OptimWrapper`` right before ``optimizer.step()``,
    ``AmpOptimWrapper`` after ``GradScaler.unscale_`` and before the scaler's (possibly
    skipped) step.  Overriding ``_clip_grad`` therefore clips the raw, unscaled,
    accumulated (and, under DDP, all-reduced) gradient once per update, before the
    optimizer applies weight decay and momentum.

    Param groups carrying ``agc=False`` are not clipped.  Groups are marked by
    :class:`AGCOptimWrapperConstructor` (from ``clip_grad.exclude`` name patterns) or by
    ``paramwise_cfg.custom_keys`` (e.g. ``{'head.fc.weight': dict(agc=False)}``).  A group
    may also set ``agc_clipping`` to override ``clipping``.

    ``clip_grad`` keys: ``clipping`` (lambda, 0.01), ``eps`` (1e-3), ``grad_eps`` (1e-6),
    ``exclude`` (name patterns, used by the constructor), ``log_stats`` (True: record
    ``train/agc_clip_fraction`` and ``train/agc_mean_factor`` in the message hub).
    """

    def __init__(self, *args, clip_grad: Optional[dict] = None, **kwargs) -> None:
        agc_cfg = parse_agc_cfg(clip_grad)
        super().__init__(*args, clip_grad=None, **kwargs)
        self.agc_cfg = agc_cfg
        # A truthy ``clip_grad_kwargs`` makes MMEngine's ``step`` call ``_clip_grad``.
        self.clip_grad_kwargs = {k: v for k, v in agc_cfg.items() if k != 'exclude'}
        self._check_exclusion()

    def _check_exclusion(self) -> None:
        groups = self.optimizer.param_groups
        marked = any('agc' in g for g in groups)
        exclude = self.agc_cfg.get('exclude', DEFAULT_EXCLUDE)
        if marked:
            if not any(g.get('agc', True) is False for g in groups):
                warnings.warn('AGC clips every parameter, the final classifier included; '
                              'the paper recommends excluding it (clip_grad.exclude).')
            return
        if exclude:
            raise ValueError(
                f'AGC exclusion patterns {list(exclude)} need parameter names, but this '
                'optimizer was built without them. Build the optimizer wrapper with '
                "constructor='AGCOptimWrapperConstructor', or mark groups with "
                "paramwise_cfg.custom_keys={'head.fc.weight': dict(agc=False)}, or set "
                'clip_grad.exclude=[] to clip every parameter.')
        warnings.warn('AGC clips every parameter, the final classifier included '
                      '(clip_grad.exclude=[]); the paper recommends excluding it.')

    def _clip_grad(self) -> None:
        by_clipping = {}
        for group in self.optimizer.param_groups:
            if group.get('agc', True) is False:
                continue
            clipping = group.get('agc_clipping', self.agc_cfg['clipping'])
            by_clipping.setdefault(clipping, []).extend(
                p for p in group['params'] if p.requires_grad and p.grad is not None)
        sums, total = None, 0
        for clipping, params in by_clipping.items():
            if not params:
                continue
            stats = adaptive_clip_grad_(params, clipping=clipping, eps=self.agc_cfg['eps'],
                                        grad_eps=self.agc_cfg['grad_eps'])
            step = torch.stack([stats.clipped_units.float(),
                                stats.mean_factor.float() * stats.total_units])
            sums = step if sums is None else sums + step.to(sums.device)
            total += stats.total_units
        if self.agc_cfg['log_stats'] and total:
            self._log_agc_stats(sums, total)

    def _log_agc_stats(self, sums: torch.Tensor, total: int) -> None:
        """Record ``train/agc_clip_fraction`` and ``train/agc_mean_factor``.

        On CPU the values are written at once.  On CUDA, reading them back at once
        would stall the host until the GPU finished this step (the step is
        launch-bound for NFNets), so they are copied to pinned memory asynchronously and
        written at the next update (or by :meth:`flush_agc_stats`): the log then shows
        the statistics one update late, which a logging interval hides, and the very
        last update's statistics are not logged.
        """
        if sums.device.type != 'cuda':
            self._write_agc_stats(sums, total)
            return
        self.flush_agc_stats()
        host = torch.empty(2, dtype=torch.float32, pin_memory=True)
        host.copy_(sums, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(sums.device))
        self._agc_pending = (host, event, total)

    def flush_agc_stats(self) -> None:
        """Write statistics still in flight from the previous update, if any."""
        pending = getattr(self, '_agc_pending', None)
        if pending is None:
            return
        host, event, total = pending
        event.synchronize()
        self._agc_pending = None
        self._write_agc_stats(host, total)

    def _write_agc_stats(self, sums: torch.Tensor, total: int) -> None:
        clipped, factor_sum = sums.tolist()
        self.message_hub.update_scalar('train/agc_clip_fraction', clipped / total)
        self.message_hub.update_scalar('train/agc_mean_factor', factor_sum / total)

    def agc_params(self) -> List[torch.Tensor]:
        """Parameters AGC acts on (for inspection and tests)."""
        return [p for g in self.optimizer.param_groups if g.get('agc', True) is not False
                for p in g['params']]


@OPTIM_WRAPPERS.register_module()
class AGCOptimWrapper(AGCMixin, OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` with AGC (paper Sec. 4, Eq. 3).

    Example:
        >>> optim_wrapper = dict(
        ...     type='AGCOptimWrapper',
        ...     constructor='AGCOptimWrapperConstructor',
        ...     optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True,
        ...                    weight_decay=2e-5),
        ...     clip_grad=dict(type='agc', clipping=0.01, eps=1e-3,
        ...                    exclude=['head.fc.weight']))
    """


@OPTIM_WRAPPERS.register_module()
class AmpAGCOptimWrapper(AGCMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` with AGC on the unscaled gradients.

    Takes the arguments of both (``loss_scale``, ``dtype`` ...).  Steps whose
    gradients overflow are skipped by the ``GradScaler`` as usual.
    """
