"""Check that a detector's neck takes the channels its backbone returns."""
from typing import List, Optional, Sequence, Union

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from nfnets_mm.registry import HOOKS


class NeckWiringError(ValueError):
    """A neck's ``in_channels`` do not match the feature maps its backbone returns."""


def _first_neck(neck: nn.Module) -> nn.Module:
    """The neck that receives the backbone's features (the first of a ``Sequential``)."""
    return neck[0] if isinstance(neck, nn.Sequential) and len(neck) else neck


def _neck_in_channels(neck: nn.Module) -> Union[int, List[int], None]:
    """``neck.in_channels``: a list (one per input map), an int (necks that take one map,
    the last, e.g. YOLOF's ``DilatedEncoder``), or None if unknown."""
    channels = getattr(neck, 'in_channels', None)
    if isinstance(channels, int):
        return channels
    if isinstance(channels, (list, tuple)) and all(isinstance(c, int) for c in channels):
        return list(channels)
    return None


def _matches(got: Sequence[int], expected: Union[int, List[int]]) -> bool:
    if isinstance(expected, int):
        return len(got) > 0 and got[-1] == expected
    return list(got) == expected


def _mismatch_message(backbone: nn.Module, neck: nn.Module, got: Sequence[int],
                      expected: Union[int, List[int]], source: str) -> str:
    if isinstance(expected, int):
        fix = f'Set model.neck.in_channels={list(got)[-1] if got else "?"} (the last map\'s)'
        maps = 'a last map of that width'
    else:
        fix = f'Set model.neck.in_channels={list(got)} (the backbone\'s out_channels)'
        maps = f'{len(expected)} maps of those widths'
    return (f'model.neck.in_channels does not match the backbone: '
            f'{type(backbone).__name__} {source} {list(got)}, but '
            f'{type(neck).__name__} expects in_channels={expected}. '
            f'{fix}, or change the backbone\'s out_indices to return {maps}.')


def _wiring(model: nn.Module):
    """``(backbone, first neck, its in_channels)`` of a (wrapped) detector, or None when
    it has no backbone / neck or the neck's ``in_channels`` is unknown."""
    if is_model_wrapper(model):
        model = model.module
    backbone = getattr(model, 'backbone', None)
    neck = getattr(model, 'neck', None)
    if backbone is None or neck is None:
        return None
    neck = _first_neck(neck)
    expected = _neck_in_channels(neck)
    if expected is None:
        return None
    return backbone, neck, expected


def check_neck_wiring(model: nn.Module) -> bool:
    """Compare ``model.backbone.out_channels`` with ``model.neck.in_channels``.

    Args:
        model (nn.Module): a detector (``model.backbone``, ``model.neck``); a model
            wrapper (DDP ...) is unwrapped.

    Returns:
        bool: True if both lists are known and were compared; False if the model has
        no backbone / neck or one of them does not expose its channel list (e.g.
        MMDetection's ``ResNet`` has no ``out_channels``; see
        :func:`install_neck_input_check` for those).

    Raises:
        NeckWiringError: naming both lists when they differ.
    """
    wiring = _wiring(model)
    if wiring is None:
        return False
    backbone, neck, expected = wiring
    got = getattr(backbone, 'out_channels', None)
    if not isinstance(got, (list, tuple)):
        return False
    if not _matches(list(got), expected):
        raise NeckWiringError(
            _mismatch_message(backbone, neck, got, expected, 'returns out_channels'))
    return True


def install_neck_input_check(model: nn.Module) -> Optional[object]:
    """Check the channels of the first feature maps that reach the neck, for any backbone.

    Registers a forward pre-hook on the neck that compares the channel count of each
    input map with ``neck.in_channels`` and removes itself after the first forward that
    matches, so it costs nothing afterwards.  A mismatch raises :class:`NeckWiringError`
    naming both lists instead of the convolution's shape error (or FPN's bare
    ``assert len(inputs) == len(self.in_channels)``).

    Returns:
        The hook handle, or None if the model has no neck with a known ``in_channels``.
    """
    wiring = _wiring(model)
    if wiring is None:
        return None
    backbone, neck, expected = wiring
    handle = None

    def check_inputs(module, args):
        inputs = args[0] if args else None
        if isinstance(inputs, (list, tuple)) and all(hasattr(x, 'shape') for x in inputs):
            got = [int(x.shape[1]) for x in inputs]
            if not _matches(got, expected):
                raise NeckWiringError(
                    _mismatch_message(backbone, module, got, expected,
                                      'returns feature maps with channels'))
            handle.remove()

    handle = neck.register_forward_pre_hook(check_inputs)
    return handle


@HOOKS.register_module()
class NFNeckWiringCheckHook(Hook):
    """Stop a run whose neck does not take the backbone's channels, with a clear error.

    At ``before_run`` (the first hook call of ``runner.train()`` / ``val()`` / ``test()``:
    after the model, data loaders and optimizer are built, before pretrained weights are
    loaded and before the first iteration) it compares ``backbone.out_channels`` with
    ``neck.in_channels`` (:func:`check_neck_wiring`); for backbones that do not expose
    ``out_channels`` it checks the first feature maps that reach the neck instead
    (:func:`install_neck_input_check`).  Either way the error names both lists.

    Why a hook: the backbone cannot see the neck (a check in ``NFNet.forward`` could only
    check itself), and MMDetection builds the detector, not this package.  The runner is
    the first place that holds the assembled model, in training, validation and testing
    alike.  Add it with
    ``default_hooks = dict(neck_wiring=dict(type='NFNeckWiringCheckHook'))`` (merged into
    MMDetection's default hooks, so no other hook is replaced).  Models
    built without a runner (``mmdet.apis.init_detector``) are not checked;
    call :func:`check_neck_wiring` there.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        if not check_neck_wiring(runner.model):
            install_neck_input_check(runner.model)
