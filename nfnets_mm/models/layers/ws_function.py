r"""Scaled Weight Standardization (paper Eq. 1) as one fused op, forward and backward.

:class:`ScaledStdConv2d` standardizes its weight on every training forward.  Written as
plain tensor code (``var_mean``, ``clamp``, ``rsqrt``, multiplies), autograd records about
a dozen elementwise nodes per conv and replays them backwards: for NFNet-F0 that is about
1,000 extra op calls and as many passes over the weights per step.  This module computes
the same :math:`\hat W` with one statistics pass and one output pass, and its gradient
with the closed form below (two row reductions and two output passes).

Notation, per output unit (one row of the weight viewed as :math:`(C_{out}, N)`, with
:math:`N` the fan-in):

.. math::
    \mu = \tfrac1N \textstyle\sum_j W_j, \qquad
    v = \tfrac1N \textstyle\sum_j (W_j - \mu)^2, \qquad
    s = \begin{cases} (\max(N v, \epsilon))^{-1/2} & \text{'max' (DeepMind)} \\
                      (N (v + \epsilon))^{-1/2} & \text{'add' (timm)} \end{cases}

.. math::
    \hat W_j = g\, s\, (W_j - \mu) \qquad \text{(Eq. 1, } a := g s \text{)}

An optional constant ``input_scale`` :math:`\lambda` (a Python float) multiplies the
result: :math:`\lambda \hat W`.  It carries a constant that would otherwise multiply the
conv's *input* (an activation's gamma, a block's :math:`1/\beta`), since
:math:`\mathrm{conv}(\lambda x, \hat W) = \mathrm{conv}(x, \lambda \hat W)`: applied to the
:math:`C_{out}`-sized row scale (:math:`a := \lambda g s`), it costs nothing over the
activation tensor, and without an op of its own: :math:`\lambda s` is computed directly as
:math:`(\max(N v, \epsilon) / \lambda^2)^{-1/2} = (\max(N v / \lambda^2,
\epsilon / \lambda^2))^{-1/2}` (``'max'``) or :math:`((v + \epsilon) N / \lambda^2)^{-1/2}`
(``'add'``), i.e. by changing two Python constants.  Below, :math:`s` in :math:`a` stands
for :math:`\lambda s`; :math:`\partial L / \partial g` gains the factor :math:`\lambda`.

**Backward.**  With :math:`G = \partial L / \partial \hat W` and
:math:`k = \sum_j G_j (W_j - \mu)`:

* :math:`\partial L / \partial g = s\, k`.
* Through :math:`\mu` (with :math:`\partial \mu / \partial W_j = 1/N` and
  :math:`\sum_j (W_j - \mu) = 0`): :math:`-a \bar G`, :math:`\bar G = \tfrac1N \sum_j G_j`.
* Through :math:`s`: :math:`\partial L / \partial s = g k`, and
  :math:`\partial v / \partial W_j = \tfrac2N (W_j - \mu)` (the :math:`\mu` term sums to
  zero).  In both modes :math:`\partial s / \partial v = -\tfrac N2 s^3` where the
  stabiliser does not bind: ``'add'``: :math:`s = (N(v+\epsilon))^{-1/2}`;
  ``'max'`` with :math:`N v \ge \epsilon`: :math:`s = (N v)^{-1/2}`.  Where ``'max'`` clamps
  (:math:`N v < \epsilon`), :math:`s = \epsilon^{-1/2}` is constant and the term vanishes
  (at :math:`N v = \epsilon` it is kept, like ``torch.clamp``'s gradient).  The product is
  :math:`-g s^3 k\, m\, (W_j - \mu)`, :math:`m \in \{0, 1\}` that mask.

.. math::
    \frac{\partial L}{\partial W_j} = a (G_j - \bar G) - g s^3 k m (W_j - \mu)
    = a G_j - c W_j + (c \mu - a \bar G), \qquad c = a s^2 k m,

which is what a training-mode batch norm's backward computes (see
:class:`ScaledWSFunction` for how it is reused, clamped rows included).

**'add' mode and ``F.batch_norm``.**  :math:`\hat W` in ``'add'`` mode is exactly a
training-mode batch norm of the :math:`(1, C_{out}, N)` view with that :math:`\epsilon`
and affine weight :math:`g / \sqrt N`: batch norm normalises each channel over the
remaining axes with :math:`(v + \epsilon)^{-1/2}`.  The ``'max'`` mode cannot be written
that way in general: batch norm only adds its :math:`\epsilon`; with
:math:`\epsilon_{bn} = 0` it agrees with ``'max'`` on rows where :math:`N v \ge \epsilon`,
but on clamped rows it divides by the raw (possibly zero) standard deviation in the
forward and keeps the variance term in the backward, which ``'max'`` drops.  Both modes
therefore go through :class:`ScaledWSFunction`; see :func:`scaled_weight_standardization`
for which path runs.

**Dtypes.**  fp32 / fp64 weights are computed in their own dtype.  fp16 / bf16 weights
(a ``.half()`` model; under AMP autocast the parameters stay fp32) get their row
statistics and gradients computed in fp32 and the result cast back, which is at least as
accurate as the plain-autograd formula in the low-precision dtype.
"""
import math
from typing import Callable, Tuple

import torch

WS_EPS_MODES = ('max', 'add')
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_eps_mode(eps_mode: str) -> str:
    """Return ``eps_mode`` or raise a ``ValueError`` naming the valid choices."""
    if eps_mode not in WS_EPS_MODES:
        raise ValueError(f'Unknown eps_mode {eps_mode!r}; valid choices are '
                         f'{", ".join(repr(m) for m in WS_EPS_MODES)}.')
    return eps_mode


def _row_scale(var: torch.Tensor, fan_in: int, eps: float, eps_mode: str,
               input_scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row :math:`\\lambda s` and the mask :math:`m` (1 where the variance term is
    live); :math:`\\lambda` enters through the Python constants only (module docstring)."""
    inv_sq = 1.0 / (input_scale * input_scale)
    n_var = var * (fan_in * inv_sq)
    if eps_mode == 'max':
        floor = eps * inv_sq
        live = n_var >= floor
        return torch.rsqrt(torch.clamp(n_var, min=floor)), live.to(var.dtype)
    return torch.rsqrt((var + eps) * (fan_in * inv_sq)), torch.ones_like(var)


class ScaledWSFunction(torch.autograd.Function):
    """Fused Eq. (1) on a 2-D weight view.

    Inputs: ``flat`` :math:`(C_{out}, N)` (any strides), ``gain`` :math:`(C_{out},)`,
    ``eps`` (float), ``eps_mode`` (``'max'`` / ``'add'``), ``input_scale`` (float, default
    1: :math:`\\lambda` of the module docstring).  Output: :math:`\\lambda \\hat W`,
    :math:`(C_{out}, N)`, contiguous, dtype of ``flat``.  Gradients flow to ``flat`` and
    ``gain`` (closed form of the module docstring).  Double backward is refused.

    The passes over the weight are ATen's batch-norm kernels, used as plain row-wise
    primitives (the same on CPU and CUDA): ``batch_norm_update_stats`` (mean and biased
    variance per row; 2-3x faster than ``var_mean`` on CPU), one in-place
    :math:`(W - \\mu) a` pass, and ``native_batch_norm_backward``, whose training-mode formula
    ``(G - mean(G) - (W - mu) * dot(G, W - mu) * r**2 / N) * r * w_bn`` with
    ``r = s * sqrt(N)`` and ``w_bn = a / r`` is the closed form above on live rows.  On
    clamped ``'max'`` rows it is given ``r = 1e-8`` and ``w_bn = a / r``: the variance
    term is then scaled by ``r**2``: with :math:`|W_j - \\mu| < \\sqrt\\epsilon` and
    :math:`|k| < \\sqrt{N \\epsilon} \\max|G|` it is below ``|a| * 1e-16 * eps * max|G|``,
    under fp64 rounding, while ``r * w_bn = a`` keeps :math:`a (G - \\bar G)` (no host
    sync, no extra pass).  Its ``grad_weight = r * k`` gives
    :math:`\\partial L / \\partial g = s k`.
    """

    #: ``r`` used on clamped rows (see the class docstring).
    CLAMPED_ROW_R = 1e-8

    @staticmethod
    def forward(ctx, flat: torch.Tensor, gain: torch.Tensor, eps: float,
                eps_mode: str, input_scale: float = 1.0) -> torch.Tensor:
        out_dtype = flat.dtype
        work = flat.float() if flat.dtype in _LOW_PRECISION else flat
        rows = work.unsqueeze(0)  # (1, C_out, N): batch-norm channels = output units
        mean, var = torch.batch_norm_update_stats(rows, None, None, 1.0)
        scale, live = _row_scale(var, work.shape[1], eps, eps_mode, input_scale)
        a = scale * gain.to(work.dtype)
        # (W - mu) * a, subtraction first: a constant row gives exactly 0 (a fused
        # multiply-add W * a - mu * a, e.g. inference-mode batch_norm, leaves rounding).
        out = torch.sub(work, mean[:, None]).mul_(a[:, None])
        ctx.eps_mode, ctx.input_scale = eps_mode, input_scale
        ctx.save_for_backward(flat, gain, mean, scale, live)
        return out.to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        flat, gain, mean, scale, live = ctx.saved_tensors
        work = flat.float() if flat.dtype in _LOW_PRECISION else flat
        grad = grad_out.to(work.dtype)
        a = scale * gain.to(work.dtype)
        r = scale * (math.sqrt(work.shape[1]) / ctx.input_scale)  # s sqrt(N), without lambda
        if ctx.eps_mode == 'max':
            r = torch.where(live.bool(), r, torch.full_like(r, ScaledWSFunction.CLAMPED_ROW_R))
        grad_rows, grad_r_weight, _ = torch.ops.aten.native_batch_norm_backward(
            grad.unsqueeze(0), work.unsqueeze(0), a / r, None, None, mean, r, True, 0.,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        grad_flat = grad_gain = None
        if ctx.needs_input_grad[0]:
            grad_flat = grad_rows.squeeze(0).to(flat.dtype)
        if ctx.needs_input_grad[1]:
            grad_gain = (grad_r_weight * (scale / r)).to(gain.dtype)
        return grad_flat, grad_gain, None, None, None


def row_major_view(weight: torch.Tensor) -> Tuple[torch.Tensor, Callable]:
    """View ``weight`` :math:`(C_{out}, C_{in}, k_h, k_w)` as :math:`(C_{out}, N)` without a copy.

    Eq. (1)'s statistics do not depend on the order of a row's entries, so a
    channels_last weight is flattened in its memory order :math:`(C_{out}, k_h, k_w,
    C_{in})` instead of being copied into :math:`(C_{out}, C_{in} k_h k_w)`.  Returns the
    view and a function mapping a :math:`(C_{out}, N)` result of that view back to the
    4-D shape (in the same memory format as ``weight``).
    """
    if weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(
            memory_format=torch.channels_last):
        c_out, c_in, kh, kw = weight.shape
        perm = weight.permute(0, 2, 3, 1)
        return (perm.reshape(c_out, -1),
                lambda flat: flat.view(c_out, kh, kw, c_in).permute(0, 3, 1, 2))
    shape = weight.shape
    return weight.reshape(shape[0], -1), lambda flat: flat.view(shape)


def scaled_ws_autograd(weight: torch.Tensor, gain: torch.Tensor, eps: float,
                       eps_mode: str, input_scale: float = 1.0) -> torch.Tensor:
    """Eq. (1) as plain tensor ops differentiated by autograd (unfused).

    Used under ``torch.compile``, where the compiler traces and fuses these ops itself,
    and kept as the unfused baseline.  Same shapes as
    :func:`scaled_weight_standardization`.
    """
    flat, restore = row_major_view(weight)
    var, mean = torch.var_mean(flat, dim=1, unbiased=False)
    scale, _ = _row_scale(var, flat.shape[1], eps, eps_mode, input_scale)
    scale = scale * gain
    return restore(flat * scale[:, None] - (mean * scale)[:, None])


def is_compiling() -> bool:
    """``torch.compiler.is_compiling()`` (torch >= 2.3), Dynamo's own check before."""
    check = getattr(torch.compiler, 'is_compiling', None)
    if check is None:  # torch < 2.3
        from torch import _dynamo
        check = _dynamo.is_compiling
    return bool(check())


def _tracing() -> bool:
    """Whether a graph is being captured (``torch.compile`` / ``torch.export`` /
    TorchScript tracing): those record the plain formula, which compilers fuse themselves
    and exporters (ONNX) can translate, unlike a Python ``autograd.Function``."""
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return (is_compiling() or torch.jit.is_tracing()
            or (is_exporting is not None and is_exporting()))


def scaled_weight_standardization(weight: torch.Tensor, gain: torch.Tensor, eps: float,
                                  eps_mode: str = 'max', fused: bool = True,
                                  input_scale: float = 1.0) -> torch.Tensor:
    r"""Return :math:`\lambda \hat W = \lambda g (W - \mu) s` of Eq. (1).

    Args:
        weight (Tensor): :math:`(C_{out}, C_{in}/groups, k_h, k_w)`, contiguous or
            channels_last (the result has the same memory format).
        gain (Tensor): :math:`(C_{out},)`.
        eps (float): Stabiliser.
        eps_mode (str): ``'max'`` (DeepMind) or ``'add'`` (timm), see the module
            docstring.
        fused (bool): Use :class:`ScaledWSFunction` (default).  ``False``, and any call
            while ``torch.compile`` / ``torch.export`` / ``torch.jit.trace`` captures a
            graph, runs :func:`scaled_ws_autograd`.
        input_scale (float): Constant :math:`\lambda` multiplying the result (folded into
            the per-row scale, see the module docstring). Defaults to 1.

    Returns:
        Tensor: :math:`\lambda \hat W`, shape and dtype of ``weight``.
    """
    check_eps_mode(eps_mode)
    if not fused or _tracing():
        return scaled_ws_autograd(weight, gain, eps, eps_mode, input_scale)
    flat, restore = row_major_view(weight)
    return restore(ScaledWSFunction.apply(flat, gain, eps, eps_mode, float(input_scale)))
