"""Residual blocks of NF models (paper Sec. 3 and Fig. 3)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..layers import NFSqueezeExcite, StochasticDepth, build_nf_act, build_nf_conv


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
    """

    def _init_residual_scaling(self, beta: float, alpha: float, skipinit_value: float,
                               drop_path_rate: float, drop_path_scale_by_keep: bool,
                               norm_cfg: Optional[dict]) -> None:
        self.normalized = norm_cfg is not None
        self.beta = 1.0 if self.normalized else beta
        self.alpha = 1.0 if self.normalized else alpha
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
        block's shortcut)."""
        out = self.pre_act(x)
        return out if self.beta == 1.0 else out * (1.0 / self.beta)

    def _merge(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """SE (if any) -> stochastic depth -> x skip_gain x alpha, plus the shortcut."""
        if self.se is not None:
            branch = self.se(branch)
        branch = self.drop_path(branch)
        if self.skip_gain is not None:
            branch = branch * self.skip_gain
        if self.alpha != 1.0:
            branch = branch * self.alpha
        return branch + shortcut


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

    Shapes:
        - input: :math:`(N, C_{in}, H, W)`; output: :math:`(N, C_{out}, H/s, W/s)`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 beta: float = 1.0, alpha: float = 0.2, bottleneck_ratio: float = 0.5,
                 group_width: int = 128, se_ratio: float = 0.5, drop_path_rate: float = 0.,
                 drop_path_scale_by_keep: bool = False, skipinit_value: float = 0.,
                 act_cfg: dict = dict(type='GELU'), padding: str = 'symmetric',
                 ws_eps: float = 1e-4, ws_eps_mode: str = 'max',
                 norm_cfg: Optional[dict] = None, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
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
        self.pre_act = build_nf_act(act_cfg, norm_cfg)
        self.conv1 = build_nf_conv(in_channels, mid_channels, 1, **conv)
        self.act1 = build_nf_act(act_cfg, norm_cfg)
        self.conv2 = build_nf_conv(mid_channels, mid_channels, 3, stride=stride, groups=groups,
                                   **conv)
        self.act2 = build_nf_act(act_cfg, norm_cfg)
        self.conv2b = build_nf_conv(mid_channels, mid_channels, 3, groups=groups, **conv)
        self.act2b = build_nf_act(act_cfg, norm_cfg)
        self.conv3 = build_nf_conv(mid_channels, out_channels, 1, **conv)
        self.se = (NFSqueezeExcite(out_channels, int(out_channels * se_ratio))
                   if se_ratio > 0 else None)
        self.has_shortcut_conv = stride > 1 or in_channels != out_channels
        if self.has_shortcut_conv:
            self.shortcut_pool = (nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
                                  if stride > 1 else nn.Identity())
            self.shortcut_conv = build_nf_conv(in_channels, out_channels, 1, **conv)
        self._init_residual_scaling(beta, alpha, skipinit_value, drop_path_rate,
                                    drop_path_scale_by_keep, norm_cfg)
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
                 norm_cfg: Optional[dict] = None, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        mid_channels = out_channels // expansion
        conv = dict(padding=padding, ws_eps=ws_eps, ws_eps_mode=ws_eps_mode, norm_cfg=norm_cfg)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pre_act = build_nf_act(act_cfg, norm_cfg)
        self.conv1 = build_nf_conv(in_channels, mid_channels, 1, **conv)
        self.act1 = build_nf_act(act_cfg, norm_cfg)
        self.conv2 = build_nf_conv(mid_channels, mid_channels, 3, stride=stride, **conv)
        self.act2 = build_nf_act(act_cfg, norm_cfg)
        self.conv3 = build_nf_conv(mid_channels, out_channels, 1, **conv)
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
                                               stride=1 if pool_shortcut else stride, **conv)
        self._init_residual_scaling(beta, alpha, skipinit_value, drop_path_rate,
                                    drop_path_scale_by_keep, norm_cfg)
        self._zero_init_last_norm(self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._pre_activation(x)
        shortcut = self.shortcut_conv(self.shortcut_pool(out)) if self.has_shortcut_conv else x
        out = self.conv1(out)
        out = self.conv2(self.act1(out))
        out = self.conv3(self.act2(out))
        return self._merge(out, shortcut)
