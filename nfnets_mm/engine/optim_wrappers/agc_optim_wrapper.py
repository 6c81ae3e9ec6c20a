"""MMEngine optimizer wrappers that apply Adaptive Gradient Clipping."""
import logging
import math
import warnings
from typing import List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from nfnets_mm.registry import OPTIM_WRAPPERS
from .agc import UNIT_KINDS, adaptive_clip_grad_, norm_dtype
from .agc_fused import COMPILE_KEYS, CompiledAGC
from .amp_dtype import resolve_amp_dtype, resolve_loss_scale

#: Keys accepted in ``clip_grad`` when ``type='agc'``.
AGC_KEYS = ('type', 'clipping', 'eps', 'grad_eps', 'exclude', 'log_stats',
            'max_consecutive_skips', 'fused')
#: Default of ``clip_grad.max_consecutive_skips``: this many updates in a row with a
#: non-finite gradient stop training.  Far above the few overflow skips a dynamic fp16
#: loss scale needs to settle (each halves the scale: 25 take 2**16 down to 2**-9).
DEFAULT_MAX_CONSECUTIVE_SKIPS = 25
#: Parameters left unclipped by default: MMPretrain's classifier weight (paper Sec. 4.1,
#: "it is always better to not clip the final linear layer").
DEFAULT_EXCLUDE = ('head.fc.weight', )


class NonFiniteGradientError(RuntimeError):
    """Too many consecutive updates had NaN / Inf gradients; training cannot recover."""


def parse_agc_cfg(clip_grad: Optional[dict]) -> dict:
    """Validate an AGC ``clip_grad`` dict and fill in defaults."""
    cfg = dict(type='agc', clipping=0.01, eps=1e-3, grad_eps=1e-6, log_stats=True,
               max_consecutive_skips=DEFAULT_MAX_CONSECUTIVE_SKIPS, fused=False)
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
    limit = cfg['max_consecutive_skips']
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError('AGC max_consecutive_skips must be a positive int (updates with '
                         'non-finite gradients in a row before training stops) or None '
                         f'(never stop), got {limit!r}.')
    fused = cfg['fused']
    if not isinstance(fused, (bool, dict)):
        raise TypeError('AGC fused must be False (eager AGC), True (one torch.compile-d pass) '
                        f'or a dict of torch.compile options ({", ".join(COMPILE_KEYS)}), '
                        f'got {fused!r}.')
    return cfg


class AGCMixin:
    """Adds AGC, and skipping of non-finite updates, to an MMEngine optimizer wrapper.

    MMEngine's wrappers clip in ``step()``: ``OptimWrapper`` right before
    ``optimizer.step()``, ``AmpOptimWrapper`` after ``GradScaler.unscale_`` and before
    the scaler's (possibly skipped) step.  The AGC wrappers keep that order, so AGC
    clips the raw, unscaled, accumulated (and, under DDP, all-reduced) gradient once per
    update, before the optimizer applies weight decay and momentum.

    Param groups carrying ``agc=False`` are not clipped.  Groups are marked by
    :class:`AGCOptimWrapperConstructor` (from ``clip_grad.exclude`` name patterns) or by
    ``paramwise_cfg.custom_keys`` (e.g. ``{'head.fc.weight': dict(agc=False)}``).  A group
    may also set ``agc_clipping`` to override ``clipping``.

    **Non-finite gradients.**  AGC computes every gradient norm anyway; when any
    gradient (of a clipped or an excluded parameter) holds a NaN or Inf, the update is
    skipped: parameters, momentum buffers and the optimizer's step count stay as they
    were, as ``GradScaler`` does for AMP overflows (under AMP the scaler skips it and
    lowers the loss scale; this wrapper counts it the same way).  A skipped update is
    logged as a warning, ``train/agc_skipped`` is 1 for it (0 otherwise, so its logged
    window mean is the fraction of skipped updates) and ``train/agc_clip_fraction`` /
    ``train/agc_mean_factor`` are NaN, never the healthy-looking values a NaN
    gradient produces (a NaN norm compares false, i.e. "not clipped").  After
    ``max_consecutive_skips`` skipped updates in a row :class:`NonFiniteGradientError`
    stops training; the weights (and so every checkpoint saved) are those of the last
    finite update.  Deciding whether to step needs the flag on the host: one
    device-to-host read per update (the flag and the statistics together).  Under AMP
    the ``GradScaler`` reads its overflow flag at the same point anyway; the fp32 wrapper
    on a GPU pays this one sync per update for the guarantee.

    ``clip_grad`` keys: ``clipping`` (lambda, 0.01), ``eps`` (1e-3), ``grad_eps`` (1e-6),
    ``exclude`` (name patterns, used by the constructor), ``log_stats`` (True: record
    ``train/agc_clip_fraction``, ``train/agc_mean_factor``, the clip fraction per unit
    kind ``train/agc_clip_fraction_{weights,gains_biases,skip_gains}``, the largest clip
    ratio ``train/agc_max_clip_ratio`` and ``train/agc_skipped`` in the message hub, all
    from the one host read above), ``max_consecutive_skips`` (25; ``None`` never stops),
    ``fused`` (``False``: eager multi-tensor AGC; ``True`` or a dict of ``torch.compile``
    options such as ``dict(mode='max-autotune-no-cudagraphs')``: the whole update, statistics and
    finiteness check included, as one compiled graph, :class:`~.agc_fused.CompiledAGC`;
    same results within fp32 rounding; compiled at the first update).  ``fused`` is off by
    default: its speed-up is a GPU measurement (``tools/analysis/benchmark.py agc``), and
    the first update pays the compile time.
    """

    def __init__(self, *args, clip_grad: Optional[dict] = None, **kwargs) -> None:
        agc_cfg = parse_agc_cfg(clip_grad)
        super().__init__(*args, clip_grad=None, **kwargs)
        self.agc_cfg = agc_cfg
        # Truthy, like MMEngine's wrappers when clipping is configured.
        self.clip_grad_kwargs = {k: v for k, v in agc_cfg.items()
                                 if k not in ('exclude', 'max_consecutive_skips', 'fused')}
        fused = agc_cfg['fused']
        #: The compiled AGC pass (``clip_grad.fused``), else ``None`` (eager AGC).
        self.compiled_agc = None if fused is False else CompiledAGC(
            agc_cfg['eps'], agc_cfg['grad_eps'], fused if isinstance(fused, dict) else None)
        #: Updates skipped for non-finite gradients: in a row, and in this process.
        self.consecutive_skips = 0
        self.skipped_updates = 0
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
        """MMEngine's clipping hook: AGC and its statistics (see :meth:`_agc_update`).

        The AGC wrappers' own ``step`` calls :meth:`_agc_update` instead, which also
        decides whether the optimizer steps; a subclass that keeps MMEngine's ``step``
        gets the clipping but not the skipping of non-finite updates.
        """
        self._agc_update()

    # Runs eagerly under torch.compile (MMEngine's ``compile=`` compiles ``train_step``):
    # traced, its guards hold the ``.grad`` tensors that ``zero_grad(set_to_none=True)``
    # frees, so every step would recompile until Dynamo's limit.
    @torch.compiler.disable
    def _agc_update(self) -> bool:
        """Clip with AGC, log, count a non-finite update; return whether it may step.

        Raises:
            NonFiniteGradientError: ``max_consecutive_skips`` updates in a row had a
                non-finite gradient.
        """
        sums, units, finite = self._clip_and_check()
        total = units[0]
        # One device-to-host read per update: the flag, with the statistics.
        values = [finite.float().reshape(1)]
        if sums is not None:
            values.append(sums.float().to(finite.device))
        flag, *stats = torch.cat(values).tolist()
        ok = flag == 1.0
        if self.agc_cfg['log_stats']:
            for key, value in self._agc_log_values(ok, stats, units).items():
                self.message_hub.update_scalar(f'train/{key}', value)
            self.message_hub.update_scalar('train/agc_skipped', 0 if ok else 1)
        if ok:
            self.consecutive_skips = 0
            return True
        self.consecutive_skips += 1
        self.skipped_updates += 1
        limit = self.agc_cfg['max_consecutive_skips']
        # Under AMP, a few overflow skips while the dynamic loss scale settles are routine.
        level = logging.INFO if isinstance(self, AmpOptimWrapper) else logging.WARNING
        print_log(
            'Non-finite (NaN/Inf) gradient: this update is skipped, parameters and '
            f'optimizer state are unchanged ({self.consecutive_skips} in a row'
            f'{"" if limit is None else f" of at most {limit}"}, {self.skipped_updates} '
            'in this run).', logger='current', level=level)
        if limit is not None and self.consecutive_skips >= limit:
            raise NonFiniteGradientError(
                f'{self.consecutive_skips} consecutive updates had non-finite (NaN/Inf) '
                'gradients and were skipped; stopping. The parameters and every checkpoint '
                'saved hold the last finite update. Likely causes: a learning rate too high '
                'for this batch size, a corrupt input or label, or a loss that is not '
                'finite for some sample; resume from the last checkpoint after fixing it. '
                'clip_grad.max_consecutive_skips sets the limit (None: never stop).')
        return False

    @staticmethod
    def _agc_log_values(ok: bool, stats: List[float], units: Tuple[int, ...]) -> dict:
        """The logged statistics (without ``train/``) from the host-read ``stats``.

        ``agc_clip_fraction`` and ``agc_mean_factor`` over all units;
        ``agc_clip_fraction_<kind>`` per unit kind present (:data:`UNIT_KINDS`: weights,
        gains and biases, skip gains) and ``agc_max_clip_ratio``, the largest
        ``||G_i|| / (clipping * max(||W_i||, eps))`` (above 1: that unit was scaled down
        by this factor).  NaN for a skipped (non-finite) update; nothing without units.
        """
        total, by_kind = units[0], units[1:]
        if not total:
            return {}
        keys = ['agc_clip_fraction', 'agc_mean_factor'] + [
            f'agc_clip_fraction_{kind}' for kind, n in zip(UNIT_KINDS, by_kind) if n]
        keys.append('agc_max_clip_ratio')
        if not ok:
            return {key: math.nan for key in keys}
        clipped, factor_sum, *kind_clipped, max_ratio = stats
        values = dict(agc_clip_fraction=clipped / total, agc_mean_factor=factor_sum / total)
        for kind, n, c in zip(UNIT_KINDS, by_kind, kind_clipped):
            if n:
                values[f'agc_clip_fraction_{kind}'] = c / n
        values['agc_max_clip_ratio'] = max_ratio
        return values

    def _clip_and_check(self) -> Tuple[Optional[torch.Tensor], Tuple[int, ...],
                                       torch.Tensor]:
        """Clip every AGC group; check the gradients of the excluded groups.

        Returns:
            tuple: ``(stats, units, finite)``: ``stats`` = (clipped units, sum of
            factors, clipped units per kind (3), largest clip ratio) as one 6-vector
            tensor (``None`` if nothing was clipped); ``units`` = (total units, units
            per kind (3)); ``finite``, a 0-d bool tensor, ``True`` when every gradient
            of the optimizer is finite.
        """
        by_clipping, unclipped = {}, []
        for group in self.optimizer.param_groups:
            params = [p for p in group['params'] if p.requires_grad and p.grad is not None]
            if group.get('agc', True) is False:
                unclipped.extend(params)
                continue
            clipping = group.get('agc_clipping', self.agc_cfg['clipping'])
            by_clipping.setdefault(clipping, []).extend(params)
        if self.compiled_agc is not None:
            return self.compiled_agc(list(by_clipping.items()), unclipped)
        sums, max_ratio, units, finite = None, None, [0, 0, 0, 0], None
        for clipping, params in by_clipping.items():
            if not params:
                continue
            stats = adaptive_clip_grad_(params, clipping=clipping, eps=self.agc_cfg['eps'],
                                        grad_eps=self.agc_cfg['grad_eps'])
            step = torch.cat([torch.stack([stats.clipped_units.float(),
                                           stats.mean_factor.float() * stats.total_units]),
                              stats.clipped_by_kind.float()])
            sums = step if sums is None else sums + step.to(sums.device)
            ratio = stats.max_clip_ratio.float()
            max_ratio = ratio if max_ratio is None else torch.maximum(
                max_ratio, ratio.to(max_ratio.device))
            for i, n in enumerate((stats.total_units, ) + tuple(stats.units_by_kind)):
                units[i] += n
            finite = _and(finite, stats.all_finite)
        for p in unclipped:
            norm = torch.linalg.vector_norm(p.grad, dtype=norm_dtype(p.grad.dtype))
            finite = _and(finite, torch.isfinite(norm))
        if finite is None:
            finite = torch.ones((), dtype=torch.bool)
        if sums is not None:
            sums = torch.cat([sums, max_ratio.reshape(1).to(sums.device)])
        return sums, tuple(units), finite

    def agc_params(self) -> List[torch.Tensor]:
        """Parameters AGC acts on (for inspection and tests)."""
        return [p for g in self.optimizer.param_groups if g.get('agc', True) is not False
                for p in g['params']]


def _and(flag: Optional[torch.Tensor], other: torch.Tensor) -> torch.Tensor:
    return other if flag is None else flag & other.to(flag.device)


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

    def step(self, **kwargs) -> None:
        """Clip with AGC, then ``optimizer.step``, unless a gradient is not finite."""
        if self._agc_update():
            self.optimizer.step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class AmpAGCOptimWrapper(AGCMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` with AGC on the unscaled gradients.

    Takes the arguments of both (``loss_scale``, ``dtype``, ``use_fsdp`` ...).  Steps whose
    gradients overflow are skipped by the ``GradScaler`` as usual, and counted and logged
    as :class:`AGCMixin` describes.

    Args:
        loss_scale (str | float | dict): ``'auto'`` (default): ``'dynamic'`` for fp16
            autocast, no scaling (a static scale of 1.0) for bf16 / fp32 / fp64, which
            have fp32's exponent range.  Otherwise as MMEngine's ``AmpOptimWrapper``.
        dtype (str | torch.dtype | None): ``'auto'`` (default): bfloat16 autocast where the
            GPU computes bf16 natively (``torch.cuda.is_bf16_supported``; DeepMind trains
            NFNets in bf16), else float16 with a logged message.  ``'float16'``,
            ``'bfloat16'``, ``'float32'``, ``'float64'`` (or the torch dtypes) force one;
            ``None`` is MMEngine's default (fp16 on CUDA).  Anything else is refused,
            naming the valid choices (:mod:`~nfnets_mm.engine.optim_wrappers.amp_dtype`).
    """

    def __init__(self, *args, loss_scale='auto', dtype='auto', **kwargs) -> None:
        dtype = resolve_amp_dtype(dtype)
        super().__init__(*args, loss_scale=resolve_loss_scale(loss_scale, dtype), dtype=dtype,
                         **kwargs)

    def step(self, **kwargs) -> None:
        """Unscale, clip with AGC, then let the ``GradScaler`` step (or skip) and update."""
        self.loss_scaler.unscale_(self.optimizer)
        self._agc_update()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
