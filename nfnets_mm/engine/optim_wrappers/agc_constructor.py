"""Optimizer wrapper constructor that knows parameter names for AGC exclusion."""
import copy
import difflib
import fnmatch
import warnings
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS

from nfnets_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .agc_optim_wrapper import DEFAULT_EXCLUDE

#: Last name components of the parameters DeepMind's recipe does not decay: WS gains,
#: skip gains and biases.  Parameters of norm layers (BN counterparts) are not decayed
#: either.
NF_NO_DECAY_NAMES = ('gain', 'skip_gain', 'bias')
_NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, _InstanceNorm)


def merge_param_groups(groups: List[dict]) -> List[dict]:
    """Merge per-parameter groups whose options (lr, weight decay, ``agc`` ...) are equal.

    MMEngine's paramwise machinery makes one group per parameter (233 for NFNet-F0).
    Optimizers run their multi-tensor kernels per group, so few large groups make
    ``optimizer.step()`` much cheaper (and AGC's bucketing spans more tensors) while
    every parameter keeps exactly its options.  Order: by first occurrence.
    """
    merged: Dict[Tuple, dict] = {}
    for group in groups:
        options = {k: v for k, v in group.items() if k != 'params'}
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        if key not in merged:
            merged[key] = dict(options, params=[])
        merged[key]['params'].extend(group['params'])
    return list(merged.values())


#: ``clip_grad.exclude`` for common MMDetection detectors, by ``model.type``: the weights of
#: their output layers (RPN objectness / box deltas, R-CNN class scores / box deltas, mask
#: logits, dense-head class / box convs), the detection counterpart of the classifier that
#: DeepMind leaves unclipped.  ``fnmatch`` patterns on ``model.named_parameters()``.
DETECTOR_OUTPUT_LAYERS: Dict[str, Tuple[str, ...]] = {
    'MaskRCNN': ('*rpn_cls.weight', '*rpn_reg.weight', '*fc_cls.weight', '*fc_reg.weight',
                 '*conv_logits.weight'),
    'FasterRCNN': ('*rpn_cls.weight', '*rpn_reg.weight', '*fc_cls.weight', '*fc_reg.weight'),
    'RetinaNet': ('*retina_cls.weight', '*retina_reg.weight'),
}


def detector_output_layers(detector_type: str) -> List[str]:
    """AGC exclusion patterns for an MMDetection detector type (``'MaskRCNN'`` ...).

    For configs: ``exclude=detector_output_layers(_base_.model.type)``.

    Raises:
        ValueError: for a detector not in :data:`DETECTOR_OUTPUT_LAYERS`, naming the known
            ones and what to write instead.
    """
    if detector_type not in DETECTOR_OUTPUT_LAYERS:
        raise ValueError(
            f'No AGC output-layer list for detector type {detector_type!r}; known: '
            f'{sorted(DETECTOR_OUTPUT_LAYERS)}. Set clip_grad.exclude to fnmatch patterns of '
            f'its output layers\' weights (e.g. [\'*conv_cls.weight\', \'*conv_reg.weight\'] '
            f'for FCOS; see model.named_parameters()), or [] to clip everything.')
    return list(DETECTOR_OUTPUT_LAYERS[detector_type])


def _closest_names(patterns: List[str], names: List[str]) -> str:
    """A hint for unmatched exclusion patterns: the parameter names closest to them
    (e.g. ``bbox_head.retina_cls.weight`` for ``*fc_cls.weight``), else the last ones
    (where classifiers and detector output layers usually are)."""
    weights = [n for n in names if n.endswith('.weight')] or names
    close: List[str] = []
    for pattern in patterns:
        for name in difflib.get_close_matches(pattern.strip('*'), weights, n=3, cutoff=0.5):
            if name not in close:
                close.append(name)
    if close:
        return f'Closest parameter names: {close}.'
    return f'The last parameter names are: {names[-3:]}.'


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class AGCOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Builds per-parameter groups and marks the ones AGC must leave alone.

    ``clip_grad.exclude`` holds ``fnmatch`` patterns of parameter names (as in
    ``model.named_parameters()``); matching groups get ``agc=False``.  It defaults to
    ``['head.fc.weight']``, the classifier of MMPretrain's linear heads.  An explicit
    pattern that matches no parameter is an error; the default matching nothing (e.g.
    in a detector) is a warning.

    DeepMind's recipe puts no weight decay on gains, skip gains, biases
    (:data:`NF_NO_DECAY_NAMES`) and norm-layer parameters.  That rule is applied after
    MMEngine's ``paramwise_cfg`` (``custom_keys``, ``bias_lr_mult`` ... all keep their
    usual meaning); a parameter whose name a user ``custom_keys`` entry with
    ``decay_mult`` matches, or a norm parameter when ``norm_decay_mult`` is given, keeps
    the user's decay.  ``paramwise_cfg=dict(nf_no_decay=False)`` turns the rule off.
    Parameters with identical options end up in one param group
    (:func:`merge_param_groups`).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = copy.deepcopy(dict(paramwise_cfg or {}))
        self.nf_no_decay = paramwise_cfg.pop('nf_no_decay', True)
        optim_wrapper_cfg = copy.deepcopy(optim_wrapper_cfg)
        optim_wrapper_cfg.setdefault('type', 'AGCOptimWrapper')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        clip_grad = self.optim_wrapper_cfg.get('clip_grad') or {}
        self.exclude_is_default = 'exclude' not in clip_grad
        exclude = clip_grad.get('exclude', DEFAULT_EXCLUDE)
        if isinstance(exclude, str):
            exclude = [exclude]
        self.exclude = list(exclude)

    def _apply_nf_no_decay(self, groups: List[dict], model: nn.Module) -> None:
        if not self.nf_no_decay or not self.base_wd:
            return
        names = {id(p): n for n, p in model.named_parameters()}
        norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES)
                       for p in m.parameters(recurse=False)}
        user_decay_keys = [k for k, v in self.paramwise_cfg.get('custom_keys', {}).items()
                           if 'decay_mult' in v]
        user_norm_decay = 'norm_decay_mult' in self.paramwise_cfg
        for group in groups:
            param = group['params'][0]
            name = names[id(param)]
            if any(key in name for key in user_decay_keys):
                continue
            if id(param) in norm_params:
                if not user_norm_decay:
                    group['weight_decay'] = 0.
            elif name.rsplit('.', 1)[-1] in NF_NO_DECAY_NAMES:
                group['weight_decay'] = 0.

    def _mark_groups(self, groups: List[dict], model: nn.Module) -> None:
        names = {id(p): n for n, p in model.named_parameters()}
        hits = {pattern: 0 for pattern in self.exclude}
        for group in groups:
            name = names[id(group['params'][0])]
            matched = [p for p in self.exclude if fnmatch.fnmatchcase(name, p)]
            for pattern in matched:
                hits[pattern] += 1
            if matched:
                group['agc'] = False
            else:
                group.setdefault('agc', True)
        unmatched = [p for p, n in hits.items() if n == 0]
        if unmatched:
            msg = (f'AGC exclusion pattern(s) {unmatched} (clip_grad.exclude, fnmatch '
                   f'patterns on model.named_parameters()) matched no trainable parameter of '
                   f'{type(model).__name__}. {_closest_names(unmatched, list(names.values()))}')
            if self.exclude_is_default:
                warnings.warn(msg + ' Set clip_grad.exclude to the classifier weight of '
                              'this model, or [] to clip everything.')
            else:
                raise ValueError(msg + ' Fix clip_grad.exclude.')

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        # A plain dict: assigned into a ConfigDict, the param groups would become ConfigDicts,
        # which Dynamo cannot trace in optimizer.step() when a config sets compile= (the
        # runner compiles train_step): InternalTorchDynamoError in torch/optim/sgd.py.
        optimizer_cfg = dict(copy.deepcopy(self.optimizer_cfg))
        groups: List[dict] = []
        self.add_params(groups, model)
        self._apply_nf_no_decay(groups, model)
        self._mark_groups(groups, model)
        optimizer_cfg['params'] = merge_param_groups(groups)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = copy.deepcopy(self.optim_wrapper_cfg)
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
