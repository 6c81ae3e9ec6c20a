"""Adaptive Gradient Clipping, paper Sec. 4, Eq. (3).

For every unit :math:`i` of a parameter :math:`W` with gradient :math:`G`:

.. math::
    G_i \\leftarrow
    \\begin{cases}
        \\lambda \\frac{\\max(\\|W_i\\|, \\epsilon)}{\\|G_i\\|} G_i
            & \\text{if } \\frac{\\|G_i\\|}{\\max(\\|W_i\\|, \\epsilon)} > \\lambda \\\\
        G_i & \\text{otherwise}
    \\end{cases}

Units are rows of the output dimension: a conv weight ``(O, I, kh, kw)`` has ``O``
units over ``I * kh * kw``, a linear weight ``(O, I)`` has ``O`` units.  Like
DeepMind's release, a tensor with at most one non-singleton dimension (bias, gain,
a ``(O, 1, 1, 1)`` gain, a scalar skip gain) is one unit.  The gradient norm is
floored at ``grad_eps`` (1e-6) in the division to avoid 0/0.

The implementation is multi-tensor, per ``(device, dtype)`` bucket, with the clip
factors of all units computed in one pass over a flat vector.  Two strategies give the
same result (``stack_same_shapes``):

* per tensor (CPU default, memory-bound there): one ``torch._foreach_norm`` call for
  the single-unit tensors, one row-norm kernel per matrix for its weight and one for
  its gradient, and one ``torch._foreach_mul_`` to apply the factors; per element,
  weights are read once and gradients read twice and written once;
* stacked (CUDA default, launch-bound there): tensors of equal shape are stacked, so
  each shape costs a few kernels (norms, one multiply, one multi-tensor copy back).

Norms are taken in ``torch.promote_types(dtype, float32)``: fp16/bf16 tensors in fp32
(a half-precision norm overflows to inf, which would zero the gradient), fp32 and fp64
in their own precision, complex tensors in their complex dtype (the norm is real).
A gradient norm that is not finite (a NaN or Inf gradient) is reported in
:attr:`AGCStats.all_finite`; the optimizer wrappers then skip the update.

**Statistics per unit kind.**  Units are counted by kind (:data:`UNIT_KINDS`), from the
tensor's shape alone: ``skip_gains`` (one-element tensors: the 0-d SkipInit gains of NF
blocks), ``gains_biases`` (the other single-unit tensors: WS gains, biases) and
``weights`` (one unit per output row).  A zero-initialised single unit is where AGC's
``eps`` floor bites: its update is capped at ``lr * clipping * eps`` per step until its
norm exceeds ``eps``, so on a short schedule a SkipInit gain that starts at 0 barely moves
(see ``docs/training.md``, "SkipInit x AGC").  The unit-weighted overall clip fraction
hides this (there are few such units); the per-kind fractions and the largest clip
ratio :math:`\\max_i \\|G_i\\| / (\\lambda \\max(\\|W_i\\|, \\epsilon))` show it.  All of
them are device tensors, read by the optimizer wrappers in their one host read per step.
"""
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple

import torch

#: Kinds of AGC units, in the order of :attr:`AGCStats.clipped_by_kind`.
UNIT_KINDS = ('weights', 'gains_biases', 'skip_gains')


@dataclass
class AGCStats:
    """What one clipping call did (tensors, so that no host sync is forced)."""

    #: Units whose gradient was rescaled.
    clipped_units: torch.Tensor
    #: Units considered.
    total_units: int
    #: Mean of the factor applied over all units (1.0 = nothing clipped).
    mean_factor: torch.Tensor
    #: 0-d bool: every gradient norm was finite (no NaN / Inf gradient).  When it is
    #: ``False`` the clipped gradients and the statistics above are meaningless.
    all_finite: torch.Tensor
    #: ``(3,)`` clipped units per kind, in :data:`UNIT_KINDS` order.
    clipped_by_kind: Optional[torch.Tensor] = None
    #: Units per kind, in :data:`UNIT_KINDS` order (known from the shapes, no sync).
    units_by_kind: Tuple[int, int, int] = (0, 0, 0)
    #: 0-d: the largest ``||G_i|| / (clipping * max(||W_i||, eps))`` over all units;
    #: above 1 means that unit's gradient was scaled down by this factor.
    max_clip_ratio: Optional[torch.Tensor] = None

    @property
    def clip_fraction(self) -> torch.Tensor:
        return self.clipped_units.float() / max(self.total_units, 1)


def is_single_unit(tensor: torch.Tensor) -> bool:
    """Whether AGC treats ``tensor`` as one unit (at most one dim larger than 1)."""
    return sum(1 for s in tensor.shape if s > 1) <= 1


def norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype AGC takes norms of ``dtype`` tensors in: at least fp32, never narrower.

    fp16/bf16 -> fp32, fp32 -> fp32, fp64 -> fp64, complex64/128 -> themselves (the norm
    of a complex tensor is real).
    """
    return torch.promote_types(dtype, torch.float32)


def _row_norms(t: torch.Tensor, lead: int) -> torch.Tensor:
    """L2 norms over all dims after the first ``lead`` ones, in :func:`norm_dtype`.

    Reduces over those dims in place of reshaping them into one, so that a channels_last
    weight or gradient is read where it lies instead of being copied first.
    """
    return torch.linalg.vector_norm(t, dim=tuple(range(lead, t.ndim)),
                                    dtype=norm_dtype(t.dtype))


def unitwise_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Per-unit L2 norm, shape ``(O,)`` or ``(1,)`` for a single unit."""
    return _row_norms(tensor.reshape(1, -1) if is_single_unit(tensor) else tensor, 1)


def unique_grads(params: Iterable[torch.Tensor], seen: Optional[set] = None
                 ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``(param, grad)`` for every parameter with a gradient, detached; a gradient listed
    twice (also across calls sharing ``seen``) comes once; sparse gradients are refused."""
    seen = set() if seen is None else seen
    for p in params:
        g = p.grad
        if g is None or id(g) in seen:  # a gradient listed twice is clipped once
            continue
        seen.add(id(g))
        if g.is_sparse:
            raise RuntimeError('AGC does not support sparse gradients.')
        yield p.detach(), g.detach()


def _bucket(params: Iterable[torch.Tensor]):
    buckets = defaultdict(lambda: ([], [], [], []))  # vec p, vec g, mat p, mat g
    for p, g in unique_grads(params):
        vp, vg, mp, mg = buckets[(g.device, g.dtype)]
        if is_single_unit(p):
            vp.append(p)
            vg.append(g)
        else:
            mp.append(p)
            mg.append(g)
    for vp, vg, _, _ in buckets.values():
        # one-element tensors (skip gains) first, so that each bucket's flat unit vector
        # is [skip gains | gains and biases | weights] in both strategies
        order = sorted(range(len(vp)), key=lambda i: vp[i].numel() != 1)
        vp[:] = [vp[i] for i in order]
        vg[:] = [vg[i] for i in order]
    return buckets


@torch.no_grad()
def adaptive_clip_grad_(params: Iterable[torch.Tensor], clipping: float = 0.01,
                        eps: float = 1e-3, grad_eps: float = 1e-6,
                        stack_same_shapes: Optional[bool] = None) -> AGCStats:
    """Clip the ``.grad`` of ``params`` in place with AGC (Eq. 3).

    Args:
        params: Parameters; those without ``.grad`` are ignored.
        clipping (float): :math:`\\lambda`, the largest allowed ratio
            ``||G_i|| / max(||W_i||, eps)``. Defaults to 0.01.
        eps (float): Floor of the parameter norm. Defaults to 1e-3.
        grad_eps (float): Floor of the gradient norm in the division. Defaults to 1e-6.
        stack_same_shapes (bool, optional): Process tensors of equal shape together
            (stack, one norm kernel per shape, one multiply, one multi-tensor copy
            back).  It trades extra memory traffic for far fewer kernel launches,
            which wins on GPUs; on CPUs, where AGC is memory-bound, per-tensor kernels
            win.  ``None`` (default): stack on CUDA devices only.  Results are the same.

    Returns:
        AGCStats: clipped unit count, total units and mean clip factor.
    """
    if clipping <= 0:
        raise ValueError(f'AGC clipping must be > 0, got {clipping}.')
    clipped, total, factor_sum, finite = None, 0, None, None
    by_kind, max_ratio, units_by_kind = None, None, [0, 0, 0]
    for (device, _), (vp, vg, mp, mg) in _bucket(params).items():
        n_skip = sum(1 for p in vp if p.numel() == 1)  # sorted first by _bucket
        n_single = len(vp)
        for kind, units in enumerate((sum(p.shape[0] for p in mp), n_single - n_skip,
                                      n_skip)):
            units_by_kind[kind] += units
        stack = device.type == 'cuda' if stack_same_shapes is None else stack_same_shapes
        p_norms: List[torch.Tensor] = []
        g_norms: List[torch.Tensor] = []
        # how to apply each segment of the flat factor vector, in order
        segments: List[Tuple[str, int, object]] = []
        if stack:
            # single-unit tensors as rows of (k, numel), multi-unit ones as (k, O, rest)
            for ps, gs, single in ((vp, vg, True), (mp, mg, False)):
                by_shape = defaultdict(list)
                for index, p in enumerate(ps):
                    by_shape[tuple(p.shape)].append(index)
                # one-element shapes (skip gains) first: see _bucket
                for shape, indices in sorted(by_shape.items(),
                                             key=lambda item: math.prod(item[0]) != 1):
                    grads = [gs[i] for i in indices]
                    params = [ps[i] for i in indices]
                    if single:
                        grads_2d = [g.reshape(1, -1) for g in grads]
                        params_2d = [p.reshape(1, -1) for p in params]
                    else:
                        grads_2d, params_2d = grads, params
                    stacked = torch.stack(grads_2d)
                    p_norms.append(_row_norms(torch.stack(params_2d), 2).flatten())
                    g_norms.append(_row_norms(stacked, 2).flatten())
                    units = len(indices) * (1 if single else shape[0])
                    segments.append(('stacked', units, (grads, stacked)))
        else:
            if vp:
                # fp32 norms at least: a half-precision norm can overflow to inf (factor 0)
                dtype = norm_dtype(vg[0].dtype)
                p_norms.append(torch.stack(torch._foreach_norm(vp, 2, dtype=dtype)))
                g_norms.append(torch.stack(torch._foreach_norm(vg, 2, dtype=dtype)))
                segments.append(('vectors', len(vp), vg))
            for p, g in zip(mp, mg):
                p_norms.append(_row_norms(p, 1))
                g_norms.append(_row_norms(g, 1))
                segments.append(('matrix', p.shape[0], g))
        p_norm = torch.cat(p_norms)
        g_norm = torch.cat(g_norms)
        max_norm = p_norm.clamp_min_(eps).mul_(clipping)
        trigger = g_norm > max_norm
        # [skip gains | gains and biases | weights]: the order _bucket and the stacking
        # above give; three partial sums, no host sync
        skip_part, single_part, weight_part = torch.split(
            trigger, [n_skip, n_single - n_skip, trigger.numel() - n_single])
        kind_counts = torch.stack([weight_part.sum(), single_part.sum(), skip_part.sum()])
        bucket_ratio = (g_norm / max_norm).max()
        factor = torch.where(trigger, max_norm / g_norm.clamp_min(grad_eps),
                             torch.ones_like(max_norm))
        parts = torch.split(factor, [n for _, n, _ in segments])
        grads, scales = [], []
        for (kind, _, data), part in zip(segments, parts):
            if kind == 'vectors':
                grads.extend(data)
                scales.extend(f.to(g.dtype).reshape(()) for f, g in zip(part.unbind(), data))
            elif kind == 'matrix':
                grads.append(data)
                scales.append(part.to(data.dtype).reshape((-1, ) + (1, ) * (data.ndim - 1)))
            else:
                originals, stacked = data
                k = len(originals)
                stacked.mul_(part.to(stacked.dtype).reshape((k, -1) + (1, ) *
                                                              (stacked.ndim - 2)))
                torch._foreach_copy_(originals,
                                     [row.view_as(g) for row, g in zip(stacked.unbind(0),
                                                                       originals)])
        if grads:
            torch._foreach_mul_(grads, scales)
        n_clipped = trigger.sum()
        clipped = n_clipped if clipped is None else clipped + n_clipped.to(clipped.device)
        s = factor.sum()
        factor_sum = s if factor_sum is None else factor_sum + s.to(factor_sum.device)
        total += factor.numel()
        bucket_finite = torch.isfinite(g_norm).all()
        finite = bucket_finite if finite is None else finite & bucket_finite.to(finite.device)
        by_kind = kind_counts if by_kind is None else by_kind + kind_counts.to(by_kind.device)
        max_ratio = bucket_ratio if max_ratio is None else torch.maximum(
            max_ratio, bucket_ratio.to(max_ratio.device))
    if clipped is None:
        zero = torch.zeros(())
        return AGCStats(zero.long(), 0, zero + 1.0, torch.ones((), dtype=torch.bool),
                        torch.zeros(3, dtype=torch.long), (0, 0, 0), zero)
    return AGCStats(clipped, total, factor_sum / total, finite, by_kind,
                    tuple(units_by_kind), max_ratio)


def agc_reference(param: torch.Tensor, grad: torch.Tensor, clipping: float = 0.01,
                  eps: float = 1e-3, grad_eps: float = 1e-6) -> torch.Tensor:
    """Readable single-tensor AGC (Eq. 3); returns the clipped gradient."""
    shape = (-1, ) + (1, ) * (grad.ndim - 1)
    p_norm = unitwise_norm(param).clamp_min(eps)
    g_norm = unitwise_norm(grad)
    max_norm = p_norm * clipping
    factor = torch.where(g_norm > max_norm, max_norm / g_norm.clamp_min(grad_eps),
                         torch.ones_like(g_norm))
    if is_single_unit(grad):
        return grad * factor.reshape(()).to(grad.dtype)
    return grad * factor.reshape(shape).to(grad.dtype)

