"""What the DeepMind and timm converters share: variant detection from the variant
table, shape-ratio inference, the target model's shapes and the placement check.
"""
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from nfnets_mm.variants import NFNET_VARIANTS

__all__ = ['ConversionError', 'same', 'ratio', 'nfnet_variant_arch', 'match_nfnet_variant',
           'classifier_config', 'target_shapes', 'check_placement', 'place_tensors']


class ConversionError(ValueError):
    """A source cannot be converted; the message says why and what is supported."""


def same(a: Any, b: Any) -> bool:
    """Equal arch values: sequences element-wise, numbers to 1e-9."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and \
            tuple(a) == tuple(b)
    return abs(float(a) - float(b)) < 1e-9


def ratio(pairs: List[Tuple[int, int]], what: str) -> float:
    """A ratio ``r`` with ``int(den * r) == num`` for every ``(num, den)`` pair (our
    models use one ratio for all blocks); :class:`ConversionError` otherwise."""
    num, den = pairs[0]
    value = num / den
    for n, d in pairs:
        if int(d * value) != n:
            raise ConversionError(f'inconsistent {what} across blocks ({n}/{d} vs '
                                  f'{num}/{den}); our models use a single ratio.')
    return value


def nfnet_variant_arch(name: str) -> dict:
    """The full NFNet arch dict of a variant of :data:`~nfnets_mm.variants.NFNET_VARIANTS`
    (depths and widths from the table, the rest ``NFNet.arch_defaults``).

    Raises:
        KeyError: unknown ``name``; the message lists the valid variants.
    """
    from nfnets_mm.models import NFNet
    key = str(name).upper()
    if key not in NFNET_VARIANTS:
        raise KeyError(f'unknown variant {name!r}; valid choices are '
                       f'{", ".join(NFNET_VARIANTS)}.')
    variant = NFNET_VARIANTS[key]
    return dict(NFNet.arch_defaults, depths=tuple(variant.depths),
                widths=tuple(variant.widths))


def match_nfnet_variant(arch: dict) -> Optional[str]:
    """The name (``'F0'`` ... ``'F7+'``) of the variant whose full arch equals ``arch``,
    or ``None`` for a custom arch."""
    for name in NFNET_VARIANTS:
        full = nfnet_variant_arch(name)
        if all(k in arch and same(full[k], arch[k]) for k in full):
            return name
    return None


def _listed(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


def classifier_config(backbone: dict, num_classes: int, in_channels: int) -> dict:
    """The MMPretrain ``ImageClassifier`` config a converted state dict loads into
    (tuples as lists, so that it reads like a config file)."""
    return dict(type='ImageClassifier', backbone=_listed(backbone),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='NFNetClsHead', num_classes=num_classes,
                          in_channels=in_channels))


def target_shapes(cfg: dict) -> 'OrderedDict[str, Tuple[int, ...]]':
    """State-dict shapes of the model ``cfg`` builds (on the meta device: no memory)."""
    import nfnets_mm  # noqa: F401  (registers NFNet & co)
    from mmpretrain.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(cfg)
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


def check_placement(shapes: Dict[str, Tuple[int, ...]],
                    sources_of: Dict[str, List[Optional[str]]], unexpected: Sequence[str],
                    shape_errors: Sequence[str], unknown: Sequence[str] = ()) -> List[str]:
    """The problems of a mapping, as sentences (empty when every source tensor has
    exactly one target of the right shape and every target key is filled)."""
    problems = []
    if unknown:
        problems.append(f'unexpected source keys: {list(unknown)[:10]}')
    duplicates = {t: s for t, s in sources_of.items() if len(s) > 1}
    if duplicates:
        problems.append('several source tensors for one target: ' + '; '.join(
            f'{t} <- {s}' for t, s in list(duplicates.items())[:10]))
    if unexpected:
        problems.append(f'unexpected source tensors (no such target key): '
                        f'{list(unexpected)[:10]}')
    missing = [k for k in shapes if k not in sources_of]
    if missing:
        problems.append(f'missing source tensors for target keys: {missing[:10]}'
                        + (f' (+{len(missing) - 10} more)' if len(missing) > 10 else ''))
    if shape_errors:
        problems.append('shape mismatches: ' + '; '.join(list(shape_errors)[:10]))
    return problems


def place_tensors(plan: Iterable[Tuple[str, Optional[str], Any]],
                  shapes: 'OrderedDict[str, Tuple[int, ...]]',
                  make_tensor: Callable[[Optional[str], Any, Tuple[int, ...]], torch.Tensor],
                  source_shape: Callable[[Optional[str]], Any],
                  unknown: Sequence[str] = ()
                  ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Fill the target state dict from a converter's ``(target, source, how)`` plan.

    ``make_tensor(source, how, target_shape)`` gives the converted tensor of one entry;
    ``source_shape(source)`` describes the source in shape errors.  Returns the state dict
    in the model's key order (``shapes``) and the problems (:func:`check_placement`); the
    state dict is only complete when there are none.
    """
    state_dict: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    sources_of: Dict[str, List[Optional[str]]] = {}
    unexpected, shape_errors = [], []
    for target, source, how in plan:
        sources_of.setdefault(target, []).append(source)
        if target not in shapes:
            unexpected.append(f'{source} -> {target}')
            continue
        tensor = make_tensor(source, how, shapes[target])
        if tuple(tensor.shape) != shapes[target]:
            shape_errors.append(f'{source} {source_shape(source)} -> {target} '
                                f'{tuple(tensor.shape)}, expected {shapes[target]}')
            continue
        state_dict[target] = tensor
    problems = check_placement(shapes, sources_of, unexpected, shape_errors, unknown)
    if problems:
        return state_dict, problems
    return OrderedDict((k, state_dict[k]) for k in shapes), problems
