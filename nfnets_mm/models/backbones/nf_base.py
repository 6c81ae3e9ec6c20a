"""Shared machinery of NF backbones: stage building, out_indices, freezing."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm


def resolve_arch(arch: Union[str, dict], arch_zoo: Dict[str, dict], required: Sequence[str],
                 defaults: dict, what: str) -> dict:
    """Look up a named arch (case-insensitive) or validate a custom arch dict."""
    if isinstance(arch, str):
        key = arch.lower()
        if key not in arch_zoo:
            raise KeyError(f'Unknown {what} arch {arch!r}; valid choices are '
                           f'{", ".join(repr(k) for k in arch_zoo)} or a dict with keys '
                           f'{", ".join(required)}.')
        arch = arch_zoo[key]
    elif not isinstance(arch, dict):
        raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}.')
    missing = [k for k in required if k not in arch]
    if missing:
        raise KeyError(f'Custom {what} arch is missing {missing}; it needs {list(required)} '
                       f'and may set {sorted(defaults)}.')
    unknown = set(arch) - set(required) - set(defaults)
    if unknown:
        raise KeyError(f'Unknown keys {sorted(unknown)} in the {what} arch; valid keys are '
                       f'{sorted(set(required) | set(defaults))}.')
    resolved = dict(defaults)
    resolved.update(arch)
    if len(resolved['depths']) != len(resolved['widths']):
        raise ValueError(f'arch depths {resolved["depths"]} and widths {resolved["widths"]} '
                         'must have the same length.')
    return resolved


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is a bool, else raise a ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}.')
    return value


#: ``memory_format`` choices of the NF backbones.
MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def check_memory_format(value: str) -> torch.memory_format:
    """The torch memory format named ``value`` (a key of :data:`MEMORY_FORMATS`)."""
    if not isinstance(value, str) or value not in MEMORY_FORMATS:
        raise ValueError(f'memory_format must be one of {", ".join(MEMORY_FORMATS)}, '
                         f'got {value!r}.')
    return MEMORY_FORMATS[value]


def expected_stds(depths: Sequence[int], alpha: float) -> List[List[float]]:
    """Expected std of the input of every block (paper Sec. 3).

    The variance starts at 1, grows by ``alpha**2`` after every block and is reset to
    ``1 + alpha**2`` after each stage's first (transition) block, whose shortcut sees
    the normalized input.
    """
    stds, var = [], 1.0
    for depth in depths:
        stage = []
        for index in range(depth):
            stage.append(var**0.5)
            if index == 0:
                var = 1.0
            var += alpha**2
        stds.append(stage)
    return stds


class NFBackboneBase(BaseModule):
    """Base of :class:`NFNet` and :class:`NFResNet`.

    Subclasses build ``self.stem`` (a module), ``self.stages`` (a ``ModuleList`` of
    ``Sequential`` of blocks) and optionally ``self.final`` (applied to the last stage's
    output), and fill ``self.stage_channels``.  This class handles ``out_indices``,
    ``frozen_stages``, ``norm_eval``, ``memory_format`` and ``switch_to_deploy``, and
    validates ``fold_scales`` (which the subclasses pass on to their blocks).

    ``memory_format='channels_last'`` stores every 4-d weight in NHWC order when the
    backbone is built, i.e. before the runner wraps it in DistributedDataParallel (whose
    gradient buckets follow the parameters' strides as they are then) and before the EMA
    hook copies it; loading a checkpoint copies into these tensors and keeps their
    layout.  ``forward`` hands the input to the stem in the same format, so that every
    activation stays NHWC.  The numbers are the same as contiguous (within the
    convolution algorithms' rounding); what differs is speed: NHWC is the native layout
    of tensor-core convolutions.  MMEngine and MMPretrain have no memory-format option,
    hence this one; ``tools/analysis/benchmark.py --formats`` measures both.
    """

    def __init__(self, out_indices: Sequence[int] = (-1, ), frozen_stages: int = -1,
                 norm_eval: bool = False, fold_scales: bool = True,
                 memory_format: str = 'contiguous', init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.fold_scales = check_bool('fold_scales', fold_scales)
        self.memory_format = memory_format
        self._torch_memory_format = check_memory_format(memory_format)
        self._out_indices_arg = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    def _finish_build(self, final_channels: Optional[int]) -> None:
        num_stages = len(self.stages)
        out_indices = self._out_indices_arg
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, (list, tuple)):
            raise TypeError(f'out_indices must be a sequence of ints, got {out_indices!r}.')
        resolved = []
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices {index} is out of range; valid stage indices '
                                 f'are 0..{num_stages - 1} (or negative).')
            resolved.append(index % num_stages)
        self.out_indices = tuple(resolved)
        stage_out = list(self.stage_channels)
        if final_channels is not None:
            stage_out[-1] = final_channels
        #: Channels of every stage output as returned by ``forward``.
        self.stage_out_channels = tuple(stage_out)
        #: Channels of each returned feature map, in ``out_indices`` order; use it for
        #: an FPN's ``in_channels`` or a head's ``in_channels``.
        self.out_channels = tuple(stage_out[i] for i in self.out_indices)
        if not -1 <= self.frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got '
                             f'{self.frozen_stages}.')
        self._freeze_stages()
        if self.memory_format != 'contiguous':
            self.to(memory_format=self._torch_memory_format)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        modules = [self.stem] + list(self.stages[:self.frozen_stages])
        if self.frozen_stages == len(self.stages) and getattr(self, 'final', None) is not None:
            modules.append(self.final)
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Args: x (Tensor): :math:`(N, 3, H, W)`.

        Returns:
            tuple[Tensor]: one :math:`(N, C_i, H_i, W_i)` map per ``out_indices`` entry,
            with ``C_i = self.out_channels[k]``.
        """
        if self.memory_format != 'contiguous' and x.dim() == 4:
            x = x.contiguous(memory_format=self._torch_memory_format)
        x = self.stem(x)
        outs = []
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == last and getattr(self, 'final', None) is not None:
                x = self.final(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def switch_to_deploy(self) -> None:
        """Fold weight standardization into every WS conv (inference/export only)."""
        for module in self.modules():
            if module is not self and hasattr(module, 'switch_to_deploy'):
                module.switch_to_deploy()
        self.deploy = True


def make_stages(block_cls: type, in_channels: int, depths: Sequence[int],
                widths: Sequence[int], strides: Sequence[int], alpha: float,
                drop_path_rate: float, block_kwargs: dict) -> Tuple[nn.ModuleList, List[int]]:
    """Build the stages, with per-block beta and linearly growing drop-path rates."""
    stds = expected_stds(depths, alpha)
    total = sum(depths)
    stages, block_index = nn.ModuleList(), 0
    for depth, width, stride, stage_stds in zip(depths, widths, strides, stds):
        blocks = []
        for index in range(depth):
            blocks.append(
                block_cls(in_channels, width, stride=stride if index == 0 else 1,
                          beta=stage_stds[index], alpha=alpha,
                          drop_path_rate=drop_path_rate * block_index / total,
                          **block_kwargs))
            in_channels = width
            block_index += 1
        stages.append(nn.Sequential(*blocks))
    return stages, list(widths)
