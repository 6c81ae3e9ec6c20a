"""Adaptive Gradient Clipping as one compiled pass (paper Sec. 4, Eq. 3).

:func:`~nfnets_mm.engine.optim_wrappers.agc.adaptive_clip_grad_` runs AGC eagerly: a
handful of kernels per tensor (or per shape when stacking), each launched from Python.
On a GPU that is launch-bound: F0's 233 tensors cost milliseconds for a few hundred
megabytes of memory traffic.  :class:`CompiledAGC` writes the whole update -- every
unit's parameter and gradient norm, the clip factors, the in-place rescale, the
finiteness check of the excluded gradients and the logged statistics -- as one function
of the parameter and gradient lists and hands it to ``torch.compile`` with
``fullgraph=True``:

* one graph, no graph break, no host synchronisation inside (``fullgraph=True`` refuses
  a ``.item()`` or a data-dependent branch), static shapes: the code generator is free
  to fuse each tensor's two norms into one read of ``W`` and ``G`` and the factor into
  the one read-modify-write of ``G``.  (No host sync is what CUDA-graph capture needs,
  but ``mode='reduce-overhead'`` does not capture this graph: it rescales gradient
  tensors that ``zero_grad`` re-allocates every step, and Inductor's CUDA graphs skip a
  graph that mutates such non-static inputs.  Persistent gradient buffers would lift
  that; they are not built.);
* the statistics come back as one small tensor, read by the optimizer wrapper in its one
  host read per update (as for the eager path);
* compiled once per parameter set: the guards check the tensors' shapes, dtypes and
  devices, not their identity, so the gradients that ``zero_grad(set_to_none=True)``
  re-allocates every step do not re-trace it (tested).

Unit definitions, norm dtypes (``torch.promote_types(dtype, float32)``) and the
arithmetic are those of :mod:`.agc`, in the same order, so the result equals
:func:`~.agc.agc_reference` up to the summation order of the norms (<= 1e-6 relative in
fp32; tested against it with Inductor's generated code on CPU).  Complex parameters are
refused (the eager path clips them by modulus; Inductor does not generate complex
kernels); sparse gradients are refused as by the eager path.

Why a class and not a function: the compiled callable, and with it the compile cache,
must outlive one step; the optimizer wrapper holds one per AGC configuration.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .agc import UNIT_KINDS, is_single_unit, norm_dtype, unique_grads

#: ``torch.compile`` keyword arguments accepted in ``clip_grad.fused=dict(...)``.
COMPILE_KEYS = ('backend', 'mode', 'options')


class CompiledAGCResult(NamedTuple):
    """What one :class:`CompiledAGC` call did; tensors stay on the device."""

    #: ``(6,)``: clipped units, sum of clip factors, clipped units per kind
    #: (:data:`~.agc.UNIT_KINDS` order), largest ``||G_i|| / (lambda max(||W_i||, eps))``.
    stats: Optional[torch.Tensor]
    #: ``(total units, units per kind (3))``, known from the shapes.
    units: Tuple[int, int, int, int]
    #: 0-d bool: every gradient (clipped and checked-only) is finite.
    finite: torch.Tensor


def _unit_kind(g: torch.Tensor) -> int:
    """Index in :data:`~.agc.UNIT_KINDS`: 0 weights, 1 gains and biases, 2 skip gains."""
    if not is_single_unit(g):
        return 0
    return 2 if g.numel() == 1 else 1


def _agc_pass(params: List[torch.Tensor], grads: List[torch.Tensor],
              clippings: List[float], checked: List[torch.Tensor], eps: float,
              grad_eps: float) -> torch.Tensor:
    """Clip ``grads`` in place (Eq. 3); return ``(7,)`` stats (the 6 of
    :attr:`CompiledAGCResult.stats`, then 1.0 if every gradient is finite else 0.0).

    Written to be traced as one graph: Python loops over static lists, shapes decide the
    unit layout, no tensor value reaches Python.
    """
    device = grads[0].device if grads else checked[0].device
    stat_dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) \
        else torch.float32
    clipped_by_kind = [torch.zeros((), device=device, dtype=stat_dtype) for _ in UNIT_KINDS]
    factor_sum = torch.zeros((), device=device, dtype=stat_dtype)
    max_ratio = torch.full((), float('-inf'), device=device, dtype=stat_dtype)
    finite = torch.ones((), device=device, dtype=torch.bool)
    for p, g, clipping in zip(params, grads, clippings):
        dtype = norm_dtype(g.dtype)
        kind = _unit_kind(g)
        if kind:
            p_norm = torch.linalg.vector_norm(p, dtype=dtype)
            g_norm = torch.linalg.vector_norm(g, dtype=dtype)
            factor_shape: Tuple[int, ...] = ()
        else:
            rows = g.shape[0]
            dims = tuple(range(1, g.ndim))
            p_norm = torch.linalg.vector_norm(p, dim=dims, dtype=dtype)
            g_norm = torch.linalg.vector_norm(g, dim=dims, dtype=dtype)
            factor_shape = (rows, ) + (1, ) * (g.ndim - 1)
        max_norm = p_norm.clamp_min(eps) * clipping
        trigger = g_norm > max_norm
        factor = torch.where(trigger, max_norm / g_norm.clamp_min(grad_eps),
                             torch.ones_like(max_norm))
        g.mul_(factor.to(g.dtype).reshape(factor_shape))
        clipped_by_kind[kind] = clipped_by_kind[kind] + trigger.sum().to(stat_dtype)
        factor_sum = factor_sum + factor.sum().to(stat_dtype)
        max_ratio = torch.maximum(max_ratio, (g_norm / max_norm).max().to(stat_dtype))
        finite = finite & torch.isfinite(g_norm).all()
    for g in checked:
        finite = finite & torch.isfinite(torch.linalg.vector_norm(g, dtype=norm_dtype(g.dtype)))
    clipped = clipped_by_kind[0] + clipped_by_kind[1] + clipped_by_kind[2]
    return torch.stack([clipped, factor_sum, *clipped_by_kind, max_ratio,
                        finite.to(stat_dtype)])


def _units(grads: Sequence[torch.Tensor]) -> Tuple[int, int, int, int]:
    by_kind = [0, 0, 0]
    for g in grads:
        kind = _unit_kind(g)
        by_kind[kind] += g.shape[0] if kind == 0 else 1
    return (sum(by_kind), *by_kind)


class CompiledAGC:
    """AGC over all parameters of an optimizer as one ``torch.compile``-d pass.

    Args:
        eps (float): Floor of the parameter norm (``clip_grad.eps``).
        grad_eps (float): Floor of the gradient norm in the division.
        compile_cfg (dict, optional): ``torch.compile`` options among
            :data:`COMPILE_KEYS` (``backend``, default Inductor; ``mode``, e.g.
            ``'max-autotune-no-cudagraphs'``; not ``'reduce-overhead'``, see above);
            ``options``).  ``fullgraph=True`` and ``dynamic=False`` are always set.

    Call it with ``[(clipping, params), ...]`` (the AGC groups) and the parameters whose
    gradients are only checked for finiteness (the excluded ones); it returns a
    :class:`CompiledAGCResult`.  Parameters without ``.grad`` are skipped; a gradient
    listed twice is clipped once.
    """

    def __init__(self, eps: float = 1e-3, grad_eps: float = 1e-6,
                 compile_cfg: Optional[dict] = None) -> None:
        cfg = dict(compile_cfg or {})
        unknown = set(cfg) - set(COMPILE_KEYS)
        if unknown:
            raise KeyError(f'Unknown torch.compile options {sorted(unknown)} for the compiled '
                           f'AGC pass; valid keys are {", ".join(COMPILE_KEYS)}.')
        self.eps, self.grad_eps = float(eps), float(grad_eps)
        self._compiled = torch.compile(self._pass, fullgraph=True, dynamic=False, **cfg)

    def _pass(self, params, grads, clippings, checked):
        return _agc_pass(params, grads, clippings, checked, self.eps, self.grad_eps)

    @staticmethod
    def _collect(clip_groups, checked_params):
        per_device: Dict[torch.device, Tuple[list, list, list, list]] = {}
        seen = set()  # shared: a gradient listed in two groups is clipped once

        def real_grads(params):
            for p, g in unique_grads(params, seen):
                if g.is_complex():
                    raise TypeError('The compiled AGC pass does not support complex '
                                    f'parameters (got {g.dtype}); set clip_grad.fused=False, '
                                    'whose eager path clips them by modulus.')
                yield p, g

        for clipping, params in clip_groups:
            for p, g in real_grads(params):
                ps, gs, cs, _ = per_device.setdefault(g.device, ([], [], [], []))
                ps.append(p)
                gs.append(g)
                cs.append(float(clipping))
        for _, g in real_grads(checked_params):
            per_device.setdefault(g.device, ([], [], [], []))[3].append(g)
        return per_device

    def __call__(self, clip_groups: Sequence[Tuple[float, Sequence[torch.Tensor]]],
                 checked_params: Sequence[torch.Tensor] = ()) -> CompiledAGCResult:
        stats, finite, units = None, None, [0, 0, 0, 0]
        for ps, gs, cs, checked in self._collect(clip_groups, checked_params).values():
            units = [a + b for a, b in zip(units, _units(gs))]
            out = self._compiled(ps, gs, cs, checked)
            part_finite = out[6] == 1
            finite = part_finite if finite is None else finite & part_finite.to(finite.device)
            if not gs:
                continue
            part = out[:6].float()
            if stats is None:
                stats = part
            else:
                part = part.to(stats.device)
                stats = torch.cat([stats[:5] + part[:5],
                                   torch.maximum(stats[5:], part[5:])])
        if finite is None:
            finite = torch.ones((), dtype=torch.bool)
        return CompiledAGCResult(stats, tuple(units), finite)
