"""Residual blocks of NF models (paper Sec. 3 and Fig. 3)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..layers import NFSqueezeExcite, StochasticDepth, build_nf_act, build_nf_conv
from .nf_base import check_bool


class _NFResidualBase(BaseModule):
    r"""Shared parts of NF residual blocks.

    Every NF block computes (paper Sec. 3)

    .. math::
        h_{i+1} = h_i + \alpha \cdot g_{skip} \cdot f_i(\mathrm{act}(h_i) / \beta_i)

    where :math:`\beta_i = \sqrt{\mathrm{Var}[h_i]}` is the *expected* std of the
    block input, :math:`\alpha` (0.2) sets the variance growth per block, and
    :math:`g_{skip}` is a learnable scalar initialised at 0 (SkipInit).  Transition
    blocks take the shortcut from the pre-activated, :math:`\beta`-scaled input.

    With ``norm_cfg`` set, the block is the normalized counterpart: every conv is
    followed by the norm, activations have no gamma, :math:`\beta = \alpha = 1`, there
    is no skip gain and the last norm of the branch is zero-initialised instead.

    **Folded constants** (``fold_scales=True``, the default).  Read literally, the formula
    costs one pass over an activation-sized tensor for each constant: every activation's
    gamma, :math:`1/\beta`, the SE excitation, the stochastic-depth mask,
    :math:`g_{skip}`, :math:`\alpha` and the addition.  The folded block computes the same
    function with fewer passes: each activation that feeds only WS convs returns
    :math:`\mathrm{act}(x)` and its gamma (and :math:`1/\beta` for the pre-activation)
    becomes the ``input_scale`` of the conv(s) it feeds
    (:math:`\mathrm{conv}(\gamma x, \hat W) = \mathrm{conv}(x, \gamma \hat W)`, applied to
    the :math:`C_{out}`-sized per-row scale of the weight standardization); SE, mask,
    :math:`g_{skip}` and :math:`\alpha` are first multiplied into one small
    :math:`(N, C, 1, 1)` (or :math:`(N, 1, 1, 1)`, or scalar) factor :math:`s` and the
    merge is a single ``torch.addcmul(shortcut, branch, s)``.  Outputs and gradients agree
    with the literal computation (``fold_scales=False``) within floating-point rounding;
    parameters and state dicts are identical (until ``switch_to_deploy``, which bakes each
    conv's ``input_scale`` into its weight: a deployed state dict belongs to the
    ``fold_scales`` setting it was deployed with).  Forward hooks on ``se`` and ``drop_path``
    do not fire on the folded path (their :meth:`~NFSqueezeExcite.channel_scale` and
    :meth:`~StochasticDepth.sample_mask` are called instead).
    """

    def _init_scaling_constants(self, beta: float, alpha: float, norm_cfg: Optional[dict],
                                fold_scales: bool) -> None:
        """Set ``beta``, ``alpha`` and ``fold_scales`` (before the convs are built)."""
        self.normalized = norm_cfg is not None
        self.beta = 1.0 if self.normalized else beta
        self.alpha = 1.0 if self.normalized else alpha
        self.fold_scales = check_bool('fold_scales', fold_scales)

    def _build_act(self, act_cfg: dict, norm_cfg: Optional[dict]) -> nn.Module:
        """A gamma activation that feeds only WS convs (gamma folded when folding)."""
        return build_nf_act(act_cfg, norm_cfg, fold_gamma=self.fold_scales)

    def _pre_act_scale(self) -> float:
        """``input_scale`` of the convs fed by the pre-activation: ``gamma / beta`` when
        folding, else 1."""
        return self.pre_act.deferred_gamma / self.beta if self.fold_scales else 1.0

    def _init_residual_scaling(self, skipinit_value: float, drop_path_rate: float,
                               drop_path_scale_by_keep: bool) -> None:
        if self.normalized:
            self.skip_gain = None
        else:
            self.skip_gain = nn.Parameter(torch.tensor(float(skipinit_value)))
        self.drop_path = StochasticDepth(drop_path_rate, drop_path_scale_by_keep)

    def _zero_init_last_norm(self, last_conv: nn.Module) -> None:
        if self.normalized and hasattr(last_conv, 'norm'):
            nn.init.zeros_(last_conv.norm.weight)

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``act(x) / beta``: the normalized input of the branch (and of a transition
        block's shortcut).  Folding, just ``act(x)``: gamma and ``1 / beta`` are then the
        ``input_scale`` of the convs it feeds."""
        out = self.pre_act(x)
        return out if self.fold_scales or self.beta == 1.0 else out * (1.0 / self.beta)

    def _merge(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """SE (if any) -> stochastic depth -> x skip_gain x alpha, plus the shortcut.

        Args: branch :math:`(N, C, H, W)`; shortcut: same shape.  Returns: same shape.
        """
        if self.fold_scales:
            return self._merge_folded(branch, shortcut)
        if self.se is not None:
            branch = self.se(branch)
        branch = self.drop_path(branch)
        if self.skip_gain is not None:
            branch = branch * self.skip_gain
        if self.alpha != 1.0:
            branch = branch * self.alpha
        return branch + shortcut

    def _merge_folded(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """:meth:`_merge` as one pass over ``branch``: ``shortcut + branch * s`` with the
        small factor ``s = se_scale (N, C, 1, 1) * mask (N, 1, 1, 1) * skip_gain * alpha``.

        Each part is optional: no SE, stochastic depth inactive (eval, rate 0), and the
        normalized counterpart's missing skip gain (where ``alpha`` is 1 too).
        """
        factor = None
        if self.se is not None:
            factor = self.se.channel_scale(branch)[:, :, None, None]
        mask = self.drop_path.sample_mask(branch)
        if mask is not None:
            factor = mask if factor is None else factor * mask
        if self.skip_gain is not None:
            gain = self.skip_gain if self.alpha == 1.0 else self.skip_gain * self.alpha
            factor = gain if factor is None else factor * gain
        if factor is None:
            return branch + shortcut
        # In branch's dtype: CUDA autocast runs addcmul in the widest dtype of its inputs
        # (its "promote" list), so the fp32 skip gain (0-d; the factor when there is no SE
        # and no active mask) would make the block's output, and with it the rest of the
        # stage, fp32. The unfolded product ``branch * skip_gain`` stays in branch's dtype.
        return torch.addcmul(shortcut, branch, factor.to(branch.dtype))


class NFNetBlock(_NFResidualBase):
    """The NFNet-F block (paper Fig. 3 / Fig. 6).

    ``act -> 1x1 conv -> act -> 3x3 grouped conv (stride) -> act -> 3x3 grouped conv
    -> act -> 1x1 conv -> squeeze-excite (x2) -> stochastic depth -> x skip_gain x alpha``,
    added to the shortcut (2x2 average pool + 1x1 conv on transitions).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first 3x3 conv and of the shortcut.
        beta (float): Expected std of the block input.
        alpha (float): Residual scale. Defaults to 0.2.
        bottleneck_ratio (float): ``mid_channels = out_channels * ratio``.
        group_width (int): Channels per group of the 3x3 convs (groups =
            ``mid_channels // group_width``, at least 1).
        se_ratio (float): SE hidden width as a fraction of ``out_channels``.
        drop_path_rate (float): Stochastic depth rate of this block.
        act_cfg (dict): Activation.
        padding (str): ``'symmetric'`` or ``'same'``.
        ws_eps, ws_eps_mode: See :class:`ScaledStdConv2d`.
        norm_cfg (dict, optional): Build the normalized counterpart.
        fold_scales (bool): Fold the constant scales into the convs' weights and the
            residual merge into one pass (see :class:`_NFResidualBase`); ``False`` computes
            them module by module. Same outputs within rounding. Defaults to True.

    Shapes:
        - input: :math:`(N, C_{in}, H, W)`; output: :math:`(N, C_{out}, H/s, W/s)`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 beta: float = 1.0, alpha: float = 0.2, bottleneck_ratio: float = 0.5,
                 group_width: int = 128, se_ratio: float = 0.5, drop_path_rate: float = 0.,
                 drop_path_scale_by_keep: bool = False, skipinit_value: float = 0.,
                 act_cfg: dict = dict(type='GELU'), padding: str = 'symmetric',
                 ws_eps: float = 1e-4, ws_eps_mode: str = 'max',
                 norm_cfg: Optional[dict] = None, fold_scales: bool = True,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._init_scaling_constants(beta, alpha, norm_cfg, fold_scales)
        mid_channels = int(out_channels * bottleneck_ratio)
        # DeepMind: groups = mid // group_width (floor), so a wide variant's 192-channel
        # stage uses one group of 192.
        groups = max(1, mid_channels // group_width)
        if mid_channels % groups:
            raise ValueError(f'mid channels {mid_channels} (= {out_channels} x '
                             f'{bottleneck_ratio}) are not divisible into {groups} groups '
                             f'of about {group_width} channels.')
        conv = dict(padding=padding, ws_eps=ws_eps, ws_eps_mode=ws_eps_mode, norm_cfg=norm_cfg)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pre_act = self._build_act(act_cfg, norm_cfg)
        self.conv1 = build_nf_conv(in_channels, mid_channels, 1,
                                   input_scale=self._pre_act_scale(), **conv)
        self.act1 = self._build_act(act_cfg, norm_cfg)
        self.conv2 = build_nf_conv(mid_channels, mid_channels, 3, stride=stride, groups=groups,
                                   input_scale=self.act1.deferred_gamma, **conv)
        self.act2 = self._build_act(act_cfg, norm_cfg)
        self.conv2b = build_nf_conv(mid_channels, mid_channels, 3, groups=groups,
                                    input_scale=self.act2.deferred_gamma, **conv)
        self.act2b = self._build_act(act_cfg, norm_cfg)
        self.conv3 = build_nf_conv(mid_channels, out_channels, 1,
                                   input_scale=self.act2b.deferred_gamma, **conv)
        self.se = (NFSqueezeExcite(out_channels, int(out_channels * se_ratio))
                   if se_ratio > 0 else None)
        self.has_shortcut_conv = stride > 1 or in_channels != out_channels
        if self.has_shortcut_conv:
            self.shortcut_pool = (nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
                                  if stride > 1 else nn.Identity())
            self.shortcut_conv = build_nf_conv(in_channels, out_channels, 1,
                                               input_scale=self._pre_act_scale(), **conv)
        self._init_residual_scaling(skipinit_value, drop_path_rate, drop_path_scale_by_keep)
        self._zero_init_last_norm(self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._pre_activation(x)
        shortcut = self.shortcut_conv(self.shortcut_pool(out)) if self.has_shortcut_conv else x
        out = self.conv1(out)
        out = self.conv2(self.act1(out))
        out = self.conv2b(self.act2(out))
        out = self.conv3(self.act2b(out))
        return self._merge(out, shortcut)


class NFResNetBottleneck(_NFResidualBase):
    """Pre-activation bottleneck of NF-ResNets (paper Sec. 3).

    ``act -> 1x1 conv -> act -> 3x3 conv (stride) -> act -> 1x1 conv [-> SE x2]
    -> stochastic depth -> x skip_gain x alpha``, added to the shortcut.  On transition
    blocks the shortcut is a 1x1 conv of the pre-activated input: strided, as in
    DeepMind's NF-ResNets, or with ``avg_down=True`` and ``stride > 1`` a parameter-free
    ``stride x stride`` average pool (``ceil_mode=True, count_include_pad=False``)
    followed by a stride-1 1x1 conv ("ResNet-D" down-sampling, as in MMPretrain's
    ``ResNet(avg_down=True)`` and timm's ``nf_resnet*``).  Both variants have the same
    parameters (``shortcut_conv.*``).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the 3x3 conv and of the shortcut.
        beta (float): Expected std of the block input.
        alpha (float): Residual scale. Defaults to 0.2.
        expansion (int): ``mid_channels = out_channels // expansion``. Defaults to 4.
        se_ratio (float): SE hidden width as a fraction of ``out_channels``; 0 disables SE.
        drop_path_rate (float): Stochastic depth rate of this block.
        avg_down (bool): Use an average pool + stride-1 conv instead of a strided conv
            for the shortcut when ``stride > 1``. Defaults to False.
        act_cfg (dict): Activation. Defaults to ReLU.
        padding (str): ``'symmetric'`` or ``'same'``.
        ws_eps, ws_eps_mode: See :class:`ScaledStdConv2d`.
        norm_cfg (dict, optional): Build the normalized counterpart.
        fold_scales (bool): Fold the constant scales into the convs' weights and the
            residual merge into one pass (see :class:`_NFResidualBase`); ``False`` computes
            them module by module. Same outputs within rounding. Defaults to True.

    Shapes:
        - input: :math:`(N, C_{in}, H, W)`; output: :math:`(N, C_{out}, H/s, W/s)`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 beta: float = 1.0, alpha: float = 0.2, expansion: int = 4,
                 se_ratio: float = 0., drop_path_rate: float = 0.,
                 drop_path_scale_by_keep: bool = False, skipinit_value: float = 0.,
                 avg_down: bool = False, act_cfg: dict = dict(type='ReLU'),
                 padding: str = 'symmetric',
                 ws_eps: float = 1e-4, ws_eps_mode: str = 'max',
                 norm_cfg: Optional[dict] = None, fold_scales: bool = True,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._init_scaling_constants(beta, alpha, norm_cfg, fold_scales)
        mid_channels = out_channels // expansion
        conv = dict(padding=padding, ws_eps=ws_eps, ws_eps_mode=ws_eps_mode, norm_cfg=norm_cfg)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pre_act = self._build_act(act_cfg, norm_cfg)
        self.conv1 = build_nf_conv(in_channels, mid_channels, 1,
                                   input_scale=self._pre_act_scale(), **conv)
        self.act1 = self._build_act(act_cfg, norm_cfg)
        self.conv2 = build_nf_conv(mid_channels, mid_channels, 3, stride=stride,
                                   input_scale=self.act1.deferred_gamma, **conv)
        self.act2 = self._build_act(act_cfg, norm_cfg)
        self.conv3 = build_nf_conv(mid_channels, out_channels, 1,
                                   input_scale=self.act2.deferred_gamma, **conv)
        self.se = (NFSqueezeExcite(out_channels, max(1, int(out_channels * se_ratio)))
                   if se_ratio > 0 else None)
        self.avg_down = avg_down
        self.has_shortcut_conv = stride > 1 or in_channels != out_channels
        if self.has_shortcut_conv:
            pool_shortcut = avg_down and stride > 1
            self.shortcut_pool = (
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                if pool_shortcut else nn.Identity())
            self.shortcut_conv = build_nf_conv(in_channels, out_channels, 1,
                                               stride=1 if pool_shortcut else stride,
                                               input_scale=self._pre_act_scale(), **conv)
        self._init_residual_scaling(skipinit_value, drop_path_rate, drop_path_scale_by_keep)
        self._zero_init_last_norm(self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._pre_activation(x)
        shortcut = self.shortcut_conv(self.shortcut_pool(out)) if self.has_shortcut_conv else x
        out = self.conv1(out)
        out = self.conv2(self.act1(out))
        out = self.conv3(self.act2(out))
        return self._merge(out, shortcut)
