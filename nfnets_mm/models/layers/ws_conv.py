"""Scaled Weight Standardized convolution (paper Eq. 1)."""
import numbers
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from nfnets_mm.registry import MODELS
from .padding import (check_padding_mode, needs_dynamic_same_padding, pad_same,
                      symmetric_padding)
from .ws_function import (WS_EPS_MODES, check_eps_mode, is_compiling,
                          scaled_weight_standardization)

__all__ = ['ScaledStdConv2d', 'WS_EPS_MODES']


def _check_positive_finite(name: str, value, meaning: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite real > 0."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real)
                                       and 0 < value < float('inf')):
        raise ValueError(f'{name} must be a positive finite number ({meaning}), got {value!r}.')


@MODELS.register_module(name='NFScaledStdConv2d')
class ScaledStdConv2d(nn.Conv2d):
    r"""Conv2d whose weight is Scaled Weight Standardized before every use.

    Registered as ``type='NFScaledStdConv2d'`` (NF-prefixed so that it cannot collide with another
    package's name in MMEngine's root registry; see :mod:`nfnets_mm.registry`).

    Paper Eq. (1):

    .. math::
        \hat W_{ij} = \frac{W_{ij} - \mu_i}{\sigma_i \sqrt{N}} \cdot g_i

    where :math:`\mu_i, \sigma_i^2` are the mean and (biased) variance of output
    unit :math:`i` over its fan-in :math:`N = C_{in} / groups \cdot k_h \cdot k_w`,
    and :math:`g_i` is a learnable per-output-channel gain (init 1).  Every such conv
    carries a bias (init 0).

    Two numerically different stabilisers are available:

    * ``eps_mode='max'`` (default, DeepMind's release):
      ``scale = rsqrt(max(var * fan_in, eps)) * gain`` with ``eps=1e-4``.
    * ``eps_mode='add'`` (timm's port): ``scale = rsqrt((var + eps) * fan_in) * gain``
      with ``eps=1e-5``.

    The standardized weight is computed once per forward by one fused op
    (:class:`~nfnets_mm.models.layers.ws_function.ScaledWSFunction`: one statistics pass
    and one output pass forward, a closed-form backward; while ``torch.compile``,
    ``torch.export`` or ``torch.jit.trace`` capture a graph the plain formula is recorded
    instead, for compilers to fuse and exporters to translate).  Setting the class attribute
    ``ScaledStdConv2d.fused_ws = False`` (or the instance attribute) selects the plain
    autograd formula everywhere; both give the same result within rounding.  In eval mode with no
    gradient required it is cached and reused until the raw weight or gain changes
    (tracked through their in-place version counters and storage), so repeated
    inference pays for standardization once.

    :meth:`switch_to_deploy` folds the standardization into a plain conv weight for
    inference and export.

    ``input_scale`` :math:`\lambda` carries a constant factor of the conv's *input* into its
    weight: the layer computes :math:`\mathrm{conv}(x, \lambda \hat W) + b =
    \mathrm{conv}(\lambda x, \hat W) + b` (zero padding commutes with the scale; the bias is
    not scaled).  NF backbones use it to fold the preceding activation's gamma and a block's
    :math:`1/\beta` (paper Sec. 3) into the per-output-row scale the standardization computes
    anyway, instead of spending a full pass over the activation tensor on them (see
    ``fold_scales`` of :class:`~nfnets_mm.models.NFNet`).  It applies on every path: fused and
    plain standardization, the eval cache, :meth:`switch_to_deploy`.  It is a constant of
    the architecture, not a parameter: it is not in the state dict.

    Args:
        in_channels (int): Input channels :math:`C_{in}`.
        out_channels (int): Output channels :math:`C_{out}`.
        kernel_size (int): Square kernel size.
        stride (int): Stride. Defaults to 1.
        dilation (int): Dilation. Defaults to 1.
        groups (int): Groups. Defaults to 1.
        bias (bool): Whether to add a bias. Defaults to True.
        padding (str): ``'symmetric'`` or ``'same'`` (TF "SAME"). Defaults to
            ``'symmetric'``.
        eps (float): Variance stabiliser, see above. Defaults to 1e-4.
        eps_mode (str): ``'max'`` or ``'add'``. Defaults to ``'max'``.
        input_scale (float): Constant :math:`\lambda` multiplying the standardized weight,
            i.e. the input (see above). Defaults to 1.0.

    Shapes:
        - input: :math:`(N, C_{in}, H, W)`
        - output: :math:`(N, C_{out}, H', W')`, with :math:`H' = \lceil H / s \rceil`
          for ``'same'`` padding.
        - ``weight``: :math:`(C_{out}, C_{in} / groups, k, k)`; ``gain``: :math:`(C_{out},)`;
          ``bias``: :math:`(C_{out},)`.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 stride: int = 1,
                 dilation: int = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding: str = 'symmetric',
                 eps: float = 1e-4,
                 eps_mode: str = 'max',
                 input_scale: float = 1.0) -> None:
        self.padding_mode_name = check_padding_mode(padding)
        check_eps_mode(eps_mode)
        _check_positive_finite('eps', eps, 'the Eq. 1 stabiliser')
        _check_positive_finite('input_scale', input_scale,
                               'a constant factor of the input, e.g. an activation gamma')
        self.dynamic_same = (padding == 'same'
                             and needs_dynamic_same_padding(kernel_size, stride, dilation))
        static_pad = 0 if self.dynamic_same else symmetric_padding(kernel_size, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=static_pad, dilation=dilation, groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.ones(out_channels))
        self.eps = eps
        self.eps_mode = eps_mode
        self.input_scale = float(input_scale)
        self.fan_in = self.weight[0].numel()
        self.deploy = False
        self._cache_key: Optional[Tuple] = None
        self._cached_weight: Optional[torch.Tensor] = None

    #: Standardize with the fused op (``True``) or the plain autograd formula.
    fused_ws: bool = True

    def reset_parameters(self) -> None:
        """Fan-in variance-scaling init for the weight, zero bias, unit gain."""
        nn.init.kaiming_normal_(self.weight, mode='fan_in', nonlinearity='linear')
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if hasattr(self, 'gain'):
            nn.init.ones_(self.gain)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        s += f', padding_mode_name={self.padding_mode_name!r}'
        if not self.deploy:
            s += f', eps={self.eps}, eps_mode={self.eps_mode!r}'
        if self.input_scale != 1.0:
            # After switch_to_deploy the scale is part of ``weight`` (shown for the record).
            s += f', input_scale={self.input_scale}'
        return s + (', deploy=True' if self.deploy else '')

    def train(self, mode: bool = True):
        # Writes through ``.data`` (EMA updates, parameter swaps) bypass the version
        # counter; every mode switch therefore starts from a fresh cache.
        self._cache_key = self._cached_weight = None
        return super().train(mode)

    def standardized_weight(self) -> torch.Tensor:
        """Return :math:`\\lambda \\hat W` (Eq. (1) times ``input_scale``), the weight
        the layer convolves with, shape :math:`(C_{out}, C_{in}/g, k, k)`.

        Same dtype and memory format (contiguous or channels_last) as ``weight``; see
        :func:`~nfnets_mm.models.layers.ws_function.scaled_weight_standardization`.
        """
        return scaled_weight_standardization(self.weight, self.gain, self.eps, self.eps_mode,
                                             fused=self.fused_ws, input_scale=self.input_scale)

    def _weight_for_forward(self) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (self.weight.requires_grad
                                                  or self.gain.requires_grad)
        # Under torch.compile the standardization is traced into the graph (the compiler
        # hoists it); the eager cache below keys on data_ptr() / inference mode, which
        # Dynamo cannot trace (one graph break per conv).
        if self.training or needs_grad or is_compiling():
            self._cache_key = self._cached_weight = None
            return self.standardized_weight()
        # An inference-mode tensor cannot be reused outside inference mode (autograd
        # refuses to save it), so the mode is part of the key.
        key = (self.weight._version, self.gain._version, self.weight.data_ptr(),
               self.gain.data_ptr(), self.weight.dtype, self.weight.device,
               torch.is_inference_mode_enabled(), self.input_scale)
        if key != self._cache_key or self._cached_weight is None:
            with torch.no_grad():
                self._cached_weight = self.standardized_weight()
            self._cache_key = key
        return self._cached_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        weight = self.weight if self.deploy else self._weight_for_forward()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold standardization, gain and ``input_scale`` into ``weight``; drop ``gain``.

        Afterwards the layer is a plain convolution with the same output; it can no
        longer be trained as a WS conv.
        """
        if self.deploy:
            return
        folded = self.standardized_weight()
        self.weight = nn.Parameter(folded, requires_grad=False)
        del self.gain
        self.register_parameter('gain', None)
        self._cache_key = self._cached_weight = None
        self.deploy = True
