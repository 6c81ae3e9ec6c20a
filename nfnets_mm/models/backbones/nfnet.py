"""NFNet-F0 ... F7 and the wide "+" variants (Brock et al. 2021, Sec. 5)."""
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch.nn as nn

from nfnets_mm.registry import MODELS
from nfnets_mm.variants import NFNET_VARIANTS
from ..layers import build_nf_act, build_nf_conv
from .nf_base import NFBackboneBase, make_stages, resolve_arch
from .nf_blocks import NFNetBlock


def _nfnet_arch_zoo() -> dict:
    """``{'f0': dict(depths=..., widths=...), ..., 'f7+': ...}`` from the variant table."""
    return {name.lower(): dict(depths=variant.depths, widths=variant.widths)
            for name, variant in NFNET_VARIANTS.items()}


@MODELS.register_module()
class NFNet(NFBackboneBase):
    """Normalizer-Free Network (NFNet-F*), paper Sec. 5 and Table 3.

    Stem: four 3x3 WS convs (16 s2, 32, 64, 128 s2) with gamma-activations between
    them.  Four stages of :class:`NFNetBlock` (widths 256/512/1536/1536, strides
    1/2/2/2, group width 128, bottleneck ratio 0.5, SE ratio 0.5).  Head-side: a 1x1
    WS conv to ``2 x 1536 = 3072`` channels and a gamma-activation (``with_final_conv``).

    Per-variant depths and widths come from the variant table,
    :data:`nfnets_mm.variants.NFNET_VARIANTS` (``get_variant('F1').depths``), which also
    holds the paper's Table 3 parameter and FLOP counts.  ``stage_out_channels`` is
    ``(256, 512, 1536, 3072)`` for F0-F7 and ``(384, 768, 2048, 4096)`` for the wide
    ``F*+`` variants (paper App. C).

    The last entry of ``stage_out_channels`` is the final conv's width when
    ``with_final_conv=True``; otherwise it is the last stage width (1536 / 2048).
    Output strides of the stages are 4, 8, 16, 32.

    Args:
        arch (str | dict): ``'F0'`` ... ``'F7'``, ``'F0+'`` ... ``'F7+'`` (case-insensitive),
            or a dict with ``depths`` and ``widths`` and optionally ``group_width``,
            ``bottleneck_ratio``, ``se_ratio``, ``stem_channels``, ``final_conv_ratio``.
        in_channels (int): Image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages whose outputs are returned (negative
            indices count from the last stage). Defaults to (-1, ), the last stage.
        frozen_stages (int): Freeze the stem and the first ``frozen_stages`` stages
            (-1: nothing). Defaults to -1.
        norm_eval (bool): Keep norm layers in eval mode (only matters with
            ``norm_cfg``). Defaults to False.
        act_cfg (dict): Activation; DeepMind's release uses
            ``dict(type='GELU', approximate='tanh')``, timm exact GELU. Defaults to
            ``dict(type='GELU')``.
        alpha (float): Residual scale. Defaults to 0.2.
        drop_path_rate (float): Stochastic depth of the last block; block ``i`` of ``N``
            uses ``rate * i / N``. Defaults to 0.1 (DeepMind's model default; the released
            ImageNet recipe uses 0.25).
        drop_path_scale_by_keep (bool): Rescale kept samples (timm) instead of
            DeepMind's plain masking. Defaults to False.
        skipinit_value (float): Initial skip gain. Defaults to 0 (SkipInit).
        padding (str): ``'symmetric'`` or ``'same'`` (TF/Haiku, for DeepMind weights).
        ws_eps (float): WS stabiliser. Defaults to 1e-4.
        ws_eps_mode (str): ``'max'`` (DeepMind) or ``'add'`` (timm, use ``ws_eps=1e-5``).
        with_final_conv (bool): Apply the final 1x1 conv + activation after the last
            stage. Defaults to True.
        norm_cfg (dict, optional): ``None`` (normalizer-free) or e.g. ``dict(type='BN')`` for
            the batch-normalized counterpart of the same architecture (paper Table 7).
        fold_scales (bool): Compute the paper's constant scales without passes of their own
            over the activations. ``True`` (default): every gamma activation that feeds only
            WS convs (stem ``act1``-``act3``, all block activations) leaves its gamma, and a
            block's pre-activation also its ``1 / beta``, to the ``input_scale`` of the
            conv(s) it feeds (conv1 and a transition's shortcut conv), which multiplies
            the standardized weight's per-row scale; each block's SE, stochastic depth,
            skip gain and alpha become one small factor of a single
            ``addcmul(shortcut, branch, factor)``.  A literal reading of the paper applies
            each constant as its own elementwise op; this computes the same function (about
            eight full-size passes fewer per block, forward and again backward), with outputs and
            gradients equal within floating-point rounding (tested to 1e-5 relative in
            fp32).  The final activation (read by the head) keeps its gamma.  ``False``
            computes module by module, for comparison.  Parameters and state dicts are the
            same either way (before ``switch_to_deploy``: the deployed weights include the
            folded scales, so a deployed state dict needs the same ``fold_scales``).
        memory_format (str): ``'contiguous'`` (default) or ``'channels_last'``: the layout
            of the weights and activations (see :class:`NFBackboneBase`).  Same outputs;
            NHWC usually trains faster under AMP on tensor-core GPUs (measure:
            ``tools/analysis/benchmark.py train --formats contiguous channels_last``).
        init_cfg (dict, optional): MMEngine init config, e.g.
            ``dict(type='Pretrained', checkpoint='f0.pth', prefix='backbone.')``.
    """

    arch_zoo = _nfnet_arch_zoo()
    arch_defaults = dict(group_width=128, bottleneck_ratio=0.5, se_ratio=0.5,
                         stem_channels=(16, 32, 64, 128), final_conv_ratio=2.0)

    def __init__(self,
                 arch: Union[str, dict] = 'F0',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (-1, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 act_cfg: dict = dict(type='GELU'),
                 alpha: float = 0.2,
                 drop_path_rate: float = 0.1,
                 drop_path_scale_by_keep: bool = False,
                 skipinit_value: float = 0.,
                 padding: str = 'symmetric',
                 ws_eps: float = 1e-4,
                 ws_eps_mode: str = 'max',
                 with_final_conv: bool = True,
                 norm_cfg: Optional[dict] = None,
                 fold_scales: bool = True,
                 memory_format: str = 'contiguous',
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, fold_scales, memory_format,
                         init_cfg)
        self.arch_settings = resolve_arch(arch, self.arch_zoo, ('depths', 'widths'),
                                          self.arch_defaults, 'NFNet')
        settings = self.arch_settings
        conv = dict(padding=padding, ws_eps=ws_eps, ws_eps_mode=ws_eps_mode, norm_cfg=norm_cfg)

        stem, channels, input_scale = [], in_channels, 1.0
        stem_channels = settings['stem_channels']
        for index, width in enumerate(stem_channels):
            stride = 2 if index in (0, len(stem_channels) - 1) else 1
            stem.append((f'conv{index + 1}', build_nf_conv(channels, width, 3, stride,
                                                           input_scale=input_scale, **conv)))
            if index < len(stem_channels) - 1:
                act = build_nf_act(act_cfg, norm_cfg, fold_gamma=self.fold_scales)
                stem.append((f'act{index + 1}', act))
                input_scale = act.deferred_gamma
            channels = width
        self.stem = nn.Sequential(OrderedDict(stem))

        block_kwargs = dict(bottleneck_ratio=settings['bottleneck_ratio'],
                            group_width=settings['group_width'], se_ratio=settings['se_ratio'],
                            drop_path_scale_by_keep=drop_path_scale_by_keep,
                            skipinit_value=skipinit_value, act_cfg=act_cfg,
                            fold_scales=self.fold_scales, **conv)
        num_stages = len(settings['depths'])
        strides = [1] + [2] * (num_stages - 1)
        self.stages, self.stage_channels = make_stages(
            NFNetBlock, channels, settings['depths'], settings['widths'], strides, alpha,
            drop_path_rate, block_kwargs)

        final_channels = None
        self.final = None
        if with_final_conv:
            final_channels = int(settings['widths'][-1] * settings['final_conv_ratio'])
            self.final = nn.Sequential(
                OrderedDict(conv=build_nf_conv(settings['widths'][-1], final_channels, 1, **conv),
                            act=build_nf_act(act_cfg, norm_cfg)))
        self._finish_build(final_channels)
