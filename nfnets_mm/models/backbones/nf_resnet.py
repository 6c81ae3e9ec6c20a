"""Pre-activation Normalizer-Free ResNets (paper Sec. 3, Table 4)."""
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch.nn as nn

from nfnets_mm.registry import MODELS
from ..layers import MaxPool2dSame, build_nf_act, build_nf_conv
from .nf_base import NFBackboneBase, make_stages
from .nf_blocks import NFResNetBottleneck


@MODELS.register_module()
class NFResNet(NFBackboneBase):
    """NF-ResNet: a pre-activation bottleneck ResNet without normalization.

    ReLU with its gamma, alpha 0.2, Scaled WS convs and SkipInit, as in DeepMind's
    ``nf_resnet``.  Stem: 7x7 stride-2 WS conv to 64 channels and a 3x3 stride-2 max
    pool; stages of :class:`NFResNetBottleneck` with 256/512/1024/2048 output channels
    (strides 1/2/2/2, output strides 4/8/16/32); since blocks are pre-activated, the
    last stage's output passes through a final activation (``with_final_act``).

    ======  =================
    depth   blocks per stage
    ======  =================
    26      2, 2, 2, 2
    50      3, 4, 6, 3
    101     3, 4, 23, 3
    152     3, 8, 36, 3
    200     3, 24, 36, 3
    ======  =================

    Args:
        depth (int): One of 26, 50, 101, 152, 200.
        width_multiplier (int): Scales 64/128/256/512 mid widths (``out = 4 * mid``).
        se_ratio (float): SE hidden ratio; 0 (default) disables SE.
        avg_down (bool): Down-sample the shortcut of strided transition blocks with a
            2x2 average pool (``ceil_mode=True, count_include_pad=False``) followed by a
            stride-1 1x1 conv, as MMPretrain's ``ResNet(avg_down=True)`` ("ResNet-D")
            and timm's ``nf_resnet*`` do, instead of a stride-2 1x1 conv (DeepMind's
            NF-ResNet).  Same parameters and shapes either way. Defaults to False.
        fold_scales (bool): As :class:`NFNet`: block activations leave their gamma (the
            pre-activation also its ``1 / beta``) to the conv(s) they feed, and each block
            merges SE, stochastic depth, skip gain and alpha in one pass; ``False`` applies
            them one by one, for comparison. Same outputs within rounding, same state
            dict (until ``switch_to_deploy``, as for :class:`NFNet`). The final activation
            keeps its gamma. Defaults to True.
        Others: as :class:`NFNet` (``act_cfg`` defaults to ReLU).
    """

    arch_settings = {
        26: (2, 2, 2, 2),
        50: (3, 4, 6, 3),
        101: (3, 4, 23, 3),
        152: (3, 8, 36, 3),
        200: (3, 24, 36, 3),
    }

    def __init__(self,
                 depth: int = 50,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 width_multiplier: int = 1,
                 out_indices: Sequence[int] = (-1, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 act_cfg: dict = dict(type='ReLU'),
                 alpha: float = 0.2,
                 se_ratio: float = 0.,
                 drop_path_rate: float = 0.1,
                 drop_path_scale_by_keep: bool = False,
                 skipinit_value: float = 0.,
                 avg_down: bool = False,
                 padding: str = 'symmetric',
                 ws_eps: float = 1e-4,
                 ws_eps_mode: str = 'max',
                 with_final_act: bool = True,
                 norm_cfg: Optional[dict] = None,
                 fold_scales: bool = True,
                 memory_format: str = 'contiguous',
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, fold_scales, memory_format,
                         init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(f'Invalid depth {depth} for NFResNet; valid depths are '
                           f'{", ".join(str(d) for d in self.arch_settings)}.')
        self.depth = depth
        self.avg_down = avg_down
        conv = dict(padding=padding, ws_eps=ws_eps, ws_eps_mode=ws_eps_mode, norm_cfg=norm_cfg)
        if padding == 'same':
            pool = MaxPool2dSame(3, 2)
        else:
            pool = nn.MaxPool2d(3, 2, padding=1)
        self.stem = nn.Sequential(
            OrderedDict(conv=build_nf_conv(in_channels, stem_channels, 7, 2, **conv), pool=pool))
        widths = [c * 4 * width_multiplier for c in (64, 128, 256, 512)]
        block_kwargs = dict(se_ratio=se_ratio, drop_path_scale_by_keep=drop_path_scale_by_keep,
                            skipinit_value=skipinit_value, avg_down=avg_down,
                            act_cfg=act_cfg, fold_scales=self.fold_scales, **conv)
        self.stages, self.stage_channels = make_stages(
            NFResNetBottleneck, stem_channels, self.arch_settings[depth], widths, [1, 2, 2, 2],
            alpha, drop_path_rate, block_kwargs)
        self.final = build_nf_act(act_cfg, norm_cfg) if with_final_act else None
        self._finish_build(None)
