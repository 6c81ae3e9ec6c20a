"""timm NFNet / NF-ResNet state dicts -> MMPretrain state dicts.

Supported timm families (detected from the state dict):

* ``dm_nfnet_f*`` (DeepMind weights ported by timm): gamma inside the activations, TF
  "SAME" padding, a ``skipinit_gain`` per block.  Loads exactly into
  ``NFNet(padding='same', act_cfg=dict(type='GELU'), ws_eps=1e-5, ws_eps_mode='add')``.
* ``nfnet_f*`` / ``nfnet_l0`` (timm-trained): symmetric padding, no skip gains (our skip
  gains become 1) and the activation gamma folded into the convs.  Since our model keeps
  gamma in the activations, the converter multiplies the gains of the two convs that do
  not follow an activation (``stem.conv1`` and ``final_conv``) by gamma and divides the
  classifier weight by gamma; the result is exact.  GELU is assumed for F-shaped models
  and SiLU for ``nfnet_l0``-shaped ones; pass ``act`` (``--act``) otherwise.
* ``nf_resnet*`` / ``nf_seresnet*``: timm's NF-ResNets take the shortcut of strided
  transition blocks through a 2x2 average pool (``ceil_mode``, ``count_include_pad=False``)
  and a stride-1 1x1 conv ("ResNet-D"), so they load exactly into
  ``NFResNet(depth, avg_down=True, act_cfg=dict(type='ReLU'), ws_eps=1e-5,
  ws_eps_mode='add')``.  Like ``nfnet_f*`` they have no skip gains (ours become 1) and keep
  the ReLU gamma inside their convs, so gamma is folded into ``stem.conv`` and out of the
  classifier weight.

Refused with an explanation: ECA attention (``eca_nfnet_*``, ``nf_ecaresnet*``),
NF-RegNets (``nf_regnet_*``) and anything else.
"""

import os.path as osp
import re
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from nfnets_mm.utils.checkpoint_io import refuse_existing, save_checkpoint_atomic
from nfnets_mm.utils.safe_checkpoint import safe_load
from nfnets_mm.variants import get_variant
from ._common import (ConversionError, classifier_config, place_tensors,
                      match_nfnet_variant, ratio, same, target_shapes)

__all__ = ['ACTIVATIONS', 'ConversionError', 'load_timm_state_dict', 'unwrap_state_dict',
           'is_timm_state_dict', 'detect_family', 'infer_nfnet_arch', 'infer_nf_resnet',
           'build_plan', 'convert_state_dict', 'convert_file', 'convert']

#: ``--act`` choices -> MMCV activation configs.
ACTIVATIONS = {
    'gelu': dict(type='GELU'),
    'silu': dict(type='SiLU'),
    'relu': dict(type='ReLU'),
}
#: Our state-dict names of timm's block modules.
_BLOCK_MODULES = {
    'conv1': 'conv1',
    'conv2': 'conv2',
    'conv2b': 'conv2b',
    'conv3': 'conv3',
    'downsample.conv': 'shortcut_conv',
    'attn_last.fc1': 'se.fc1',
    'attn_last.fc2': 'se.fc2',
}
_RE_STEM = re.compile(r'^stem\.(conv\d*)\.(weight|bias|gain)$')
_RE_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.(conv1|conv2|conv2b|conv3|downsample\.conv|'
                       r'attn_last\.fc1|attn_last\.fc2)\.(weight|bias|gain)$')
_RE_SKIP = re.compile(r'^stages\.(\d+)\.(\d+)\.skipinit_gain$')
_RE_FINAL = re.compile(r'^final_conv\.(weight|bias|gain)$')
_RE_HEAD = re.compile(r'^head\.fc\.(weight|bias)$')


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def load_timm_state_dict(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """Load a timm state dict (bare, or under ``'state_dict'`` / ``'model'``) safely."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'source checkpoint {path!r} does not exist.')
    # Weights-only: refuses code in a pickle (UnsafeCheckpointError) and names empty or
    # truncated files (CorruptCheckpointError).
    return unwrap_state_dict(safe_load(path, map_location='cpu'), repr(path))


def _inner_state_dict(obj: Any) -> Any:
    """``obj['state_dict']`` or ``obj['model']`` when a dict, else ``obj``."""
    if isinstance(obj, dict):
        for key in ('state_dict', 'model'):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def unwrap_state_dict(obj: Any, name: str = 'the checkpoint'
                      ) -> 'OrderedDict[str, torch.Tensor]':
    """The state dict of a loaded timm checkpoint (bare, or under ``'state_dict'`` /
    ``'model'``), validated (str -> tensor) and without a ``module.`` prefix."""
    obj = _inner_state_dict(obj)
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f'{name} holds no state dict (got {type(obj).__name__}).')
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ConversionError(f'non-tensor entries in the state dict: {bad[:10]}.')
    if all(k.startswith('module.') for k in obj):
        obj = OrderedDict((k[len('module.'):], v) for k, v in obj.items())
    return OrderedDict(obj)


#: Module names only timm's NF models have (ours: ``shortcut_conv``, ``se.fc1``,
#: ``skip_gain``, ``final.conv``).
_TIMM_ONLY = re.compile(r'^(?:module\.)?(?:stages\.\d+\.\d+\.(?:downsample\.conv\.|attn_last\.|'
                        r'skipinit_gain$)|final_conv\.)')


def is_timm_state_dict(obj: Any) -> bool:
    """Whether a loaded checkpoint is a timm NF model's state dict (bare or under
    ``'state_dict'`` / ``'model'``): some key names a module only timm's NFNets /
    NF-ResNets have (``stages.*.*.downsample.conv``, ``.attn_last``,
    ``.skipinit_gain``, ``final_conv``) and none has our ``backbone.`` prefix."""
    obj = _inner_state_dict(obj)
    if not isinstance(obj, dict) or not obj:
        return False
    keys = [k for k in obj if isinstance(k, str)]
    return (not any(k.startswith('backbone.') for k in keys)
            and any(_TIMM_ONLY.match(k) for k in keys))


# --------------------------------------------------------------------------------------
# Detection and architecture inference
# --------------------------------------------------------------------------------------
def detect_family(sd: Dict[str, torch.Tensor]) -> str:
    """``'nfnet'`` (deep 4-conv stem, extra conv) or ``'nf_resnet'``; refuse others."""
    keys = list(sd)
    if any(k.startswith('backbone.') for k in keys):
        raise ConversionError('this looks like an MMPretrain checkpoint already (keys start '
                              'with "backbone."); nothing to convert.')
    if any('.attn_last.conv.' in k for k in keys):
        raise ConversionError('ECA attention found (timm eca_nfnet_* / nf_ecaresnet*); '
                              'our NFNet/NFResNet only have squeeze-excite. Supported: '
                              'dm_nfnet_f*, nfnet_f*, nfnet_l0, nf_resnet*/nf_seresnet*.')
    if any(re.match(r'^stages\.\d+\.\d+\.attn\.', k) for k in keys):
        raise ConversionError('attention between conv2 and conv3 found (timm nf_regnet_*); '
                              'NF-RegNets are not implemented in nfnets_mm. Supported: '
                              'dm_nfnet_f*, nfnet_f*, nfnet_l0, nf_resnet*.')
    has_extra_conv = any('.conv2b.' in k for k in keys)
    if 'stem.conv1.weight' in sd and has_extra_conv and 'final_conv.weight' in sd:
        return 'nfnet'
    if 'stem.conv.weight' in sd and not has_extra_conv:
        kernel = tuple(sd['stem.conv.weight'].shape[-2:])
        if kernel == (7, 7):
            return 'nf_resnet'
        raise ConversionError(f'stem conv with kernel {kernel} (timm nf_regnet_*?); only the '
                              '7x7 stem of NF-ResNets is supported.')
    raise ConversionError('unrecognised timm model: expected a dm_nfnet_f*/nfnet_f*/nfnet_l0 '
                          'state dict (stem.conv1..4, stages.*.*.conv2b, final_conv) or an '
                          'nf_resnet* one (7x7 stem.conv).')


def _blocks(sd: Dict[str, torch.Tensor]) -> List[List[int]]:
    """Block indices per stage, validated to be contiguous."""
    found: Dict[int, set] = {}
    for key in sd:
        m = re.match(r'^stages\.(\d+)\.(\d+)\.', key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(found)
    if stages != list(range(len(stages))) or not stages:
        raise ConversionError(f'stages must be numbered 0..N-1, found {stages}.')
    out = []
    for s in stages:
        blocks = sorted(found[s])
        if blocks != list(range(len(blocks))):
            raise ConversionError(f'blocks of stage {s} are not contiguous: {blocks}.')
        out.append(blocks)
    return out


def _get(sd: Dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in sd:
        raise ConversionError(f'missing {key!r} in the timm state dict.')
    return sd[key]


def infer_nfnet_arch(sd: Dict[str, torch.Tensor]) -> Tuple[dict, int, int]:
    """Arch dict of our NFNet, number of classes and head input channels."""
    stem_ids = sorted(int(m.group(1)) for k in sd
                      for m in [re.match(r'^stem\.conv(\d+)\.weight$', k)] if m)
    if stem_ids != list(range(1, len(stem_ids) + 1)):
        raise ConversionError(f'stem convs must be stem.conv1..N, found {stem_ids}.')
    stem_channels = tuple(_get(sd, f'stem.conv{i}.weight').shape[0] for i in stem_ids)
    depths, widths, mids, se, groups = [], [], [], [], set()
    has_se = None
    for s, blocks in enumerate(_blocks(sd)):
        depths.append(len(blocks))
        for b in blocks:
            prefix = f'stages.{s}.{b}.'
            out = _get(sd, prefix + 'conv3.weight').shape[0]
            if b == 0:
                widths.append(out)
            mid = _get(sd, prefix + 'conv1.weight').shape[0]
            mids.append((mid, out))
            groups.add(_get(sd, prefix + 'conv2.weight').shape[1])
            block_se = prefix + 'attn_last.fc1.weight' in sd
            has_se = block_se if has_se is None else has_se
            if has_se != block_se:
                raise ConversionError('some blocks have squeeze-excite and some do not.')
            if block_se:
                se.append((sd[prefix + 'attn_last.fc1.weight'].shape[0], out))
    if len(groups) != 1:
        raise ConversionError(f'group widths differ across blocks: {sorted(groups)}.')
    final = _get(sd, 'final_conv.weight').shape[0]
    arch = dict(depths=tuple(depths), widths=tuple(widths), group_width=groups.pop(),
                bottleneck_ratio=ratio(mids, 'bottleneck ratio'),
                se_ratio=ratio(se, 'SE ratio') if has_se else 0.,
                stem_channels=stem_channels,
                final_conv_ratio=ratio([(final, widths[-1])], 'final conv ratio'))
    return arch, _get(sd, 'head.fc.weight').shape[0], final


def _is_nfnet_l0(arch: dict) -> bool:
    # timm's eca/nfnet_l0: F0's depths and widths (the variant table) with narrower groups,
    # bottleneck and SE, a 1.5x final conv and SiLU.
    f0 = get_variant('F0')
    return (same(arch['depths'], f0.depths) and same(arch['widths'], f0.widths)
            and arch['group_width'] == 64 and same(arch['bottleneck_ratio'], 0.25)
            and same(arch['se_ratio'], 0.25) and same(arch['final_conv_ratio'], 1.5))


def infer_nf_resnet(sd: Dict[str, torch.Tensor]) -> Tuple[dict, int, int]:
    """Our NFResNet kwargs (depth, stem_channels, width_multiplier, se_ratio), classes,
    head input channels."""
    from nfnets_mm.models import NFResNet
    blocks = _blocks(sd)
    depths = tuple(len(b) for b in blocks)
    depth = next((d for d, v in NFResNet.arch_settings.items() if tuple(v) == depths), None)
    if depth is None:
        raise ConversionError(f'NF-ResNet with blocks per stage {depths} has no NFResNet depth; '
                              f'valid: {dict(NFResNet.arch_settings)}.')
    widths = tuple(_get(sd, f'stages.{s}.0.conv3.weight').shape[0] for s in range(len(depths)))
    multiplier = widths[0] // 256
    if multiplier < 1 or widths != tuple(c * multiplier for c in (256, 512, 1024, 2048)):
        raise ConversionError(f'NF-ResNet widths {widths} are not 256/512/1024/2048 x k.')
    mids = [(_get(sd, f'stages.{s}.{b}.conv1.weight').shape[0], widths[s])
            for s, bs in enumerate(blocks) for b in bs]
    if ratio(mids, 'bottleneck ratio') != 0.25:
        raise ConversionError('NF-ResNet bottleneck ratio must be 1/4 (expansion 4).')
    se = [(sd[f'stages.{s}.{b}.attn_last.fc1.weight'].shape[0], widths[s])
          for s, bs in enumerate(blocks) for b in bs
          if f'stages.{s}.{b}.attn_last.fc1.weight' in sd]
    for s, bs in enumerate(blocks):
        for b in bs:
            conv2 = _get(sd, f'stages.{s}.{b}.conv2.weight')
            if conv2.shape[1] != conv2.shape[0]:
                raise ConversionError('grouped 3x3 convs in an NF-ResNet are not supported '
                                      f'(stages.{s}.{b}.conv2 has shape {tuple(conv2.shape)}).')
    kwargs = dict(depth=depth, stem_channels=_get(sd, 'stem.conv.weight').shape[0],
                  width_multiplier=multiplier, se_ratio=ratio(se, 'SE ratio') if se else 0.)
    return kwargs, _get(sd, 'head.fc.weight').shape[0], widths[-1]


# --------------------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------------------
Transform = Callable[[torch.Tensor], torch.Tensor]


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t


def _vector(t: torch.Tensor) -> torch.Tensor:
    if sum(d != 1 for d in t.shape) > 1:
        raise ConversionError(f'expected a per-channel vector, got shape {tuple(t.shape)}.')
    return t.reshape(-1)


def _scaled_vector(scale: float) -> Transform:
    return lambda t: _vector(t) * scale


def _conv1x1_to_linear(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4 and t.shape[2:] == (1, 1):
        return t.reshape(t.shape[0], t.shape[1])
    if t.ndim == 2:
        return t
    raise ConversionError(f'expected a 1x1 conv weight for SE, got {tuple(t.shape)}.')


def _scalar(t: torch.Tensor) -> torch.Tensor:
    if t.numel() != 1:
        raise ConversionError(f'expected a scalar skip gain, got shape {tuple(t.shape)}.')
    return t.reshape(())


def build_plan(sd: Dict[str, torch.Tensor], family: str, gamma_in_conv: bool, gamma: float
               ) -> Tuple[List[Tuple[str, Optional[str], Transform]], List[str]]:
    """(target key, source key or None for a synthesized 1.0, transform) + unknown keys."""
    plan, unknown, has_skip = [], [], set()
    first_stem = 'stem.conv1' if family == 'nfnet' else 'stem.conv'
    for key in sd:
        m = _RE_STEM.match(key)
        if m:
            module, param = m.groups()
            fold = gamma_in_conv and module == first_stem.split('.')[1] and param == 'gain'
            transform = (_scaled_vector(gamma) if fold else
                         _vector if param in ('gain', 'bias') else _plain)
            plan.append((f'backbone.stem.{module}.{param}', key, transform))
            continue
        m = _RE_BLOCK.match(key)
        if m:
            s, b, module, param = m.groups()
            target = f'backbone.stages.{s}.{b}.{_BLOCK_MODULES[module]}.{param}'
            if module.startswith('attn_last'):
                transform = _conv1x1_to_linear if param == 'weight' else _vector
            else:
                transform = _vector if param in ('gain', 'bias') else _plain
            plan.append((target, key, transform))
            continue
        m = _RE_SKIP.match(key)
        if m:
            has_skip.add(m.groups())
            plan.append((f'backbone.stages.{m.group(1)}.{m.group(2)}.skip_gain', key, _scalar))
            continue
        m = _RE_FINAL.match(key)
        if m and family == 'nfnet':
            param = m.group(1)
            fold = gamma_in_conv and param == 'gain'
            transform = (_scaled_vector(gamma) if fold else
                         _vector if param in ('gain', 'bias') else _plain)
            plan.append((f'backbone.final.conv.{param}', key, transform))
            continue
        m = _RE_HEAD.match(key)
        if m:
            param = m.group(1)
            if gamma_in_conv and param == 'weight':
                transform: Transform = lambda t: t / gamma  # noqa: E731
            else:
                transform = _plain
            plan.append((f'head.fc.{param}', key, transform))
            continue
        unknown.append(key)
    # Blocks without timm skip gains get ours set to 1 (no SkipInit at inference).
    for s, blocks in enumerate(_blocks(sd)):
        for b in blocks:
            if (str(s), str(b)) not in has_skip:
                plan.append((f'backbone.stages.{s}.{b}.skip_gain', None, _plain))
    return plan, unknown


def convert_state_dict(sd: Dict[str, torch.Tensor], act: Optional[str] = None
                       ) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Convert a timm state dict; returns ``(state_dict, meta)``.

    ``meta['model']`` is the MMPretrain model config the state dict loads into and
    ``meta['exact']`` says whether that model computes the same function as timm's
    (always True: unsupported models are refused).
    """
    from nfnets_mm.models.layers import ACT_GAMMAS
    family = detect_family(sd)
    notes: List[str] = []
    if act is not None and act not in ACTIVATIONS:
        raise ConversionError(f'unknown --act {act!r}; valid choices are '
                              f'{", ".join(ACTIVATIONS)}.')
    if family == 'nfnet':
        arch, num_classes, head_in = infer_nfnet_arch(sd)
        variant = match_nfnet_variant(arch)
        flavor = 'dm_nfnet' if any(k.endswith('.skipinit_gain') for k in sd) else 'nfnet'
        if act is None:
            if flavor == 'dm_nfnet' or variant is not None:
                act = 'gelu'
            elif _is_nfnet_l0(arch):
                act = 'silu'
            else:
                raise ConversionError('cannot tell the activation of this custom timm NFNet '
                                      f'(arch {arch}); pass --act with one of '
                                      f'{", ".join(ACTIVATIONS)}.')
        backbone = dict(type='NFNet', arch=variant if variant else arch,
                        act_cfg=ACTIVATIONS[act], ws_eps=1e-5, ws_eps_mode='add',
                        padding='same' if flavor == 'dm_nfnet' else 'symmetric')
        gamma_in_conv = flavor == 'nfnet'
    else:
        kwargs, num_classes, head_in = infer_nf_resnet(sd)
        flavor = 'nf_resnet'
        act = act or 'relu'
        # timm's strided shortcuts: 2x2 avg pool (ceil_mode, no pad counting) + 1x1 conv.
        backbone = dict(type='NFResNet', avg_down=True, act_cfg=ACTIVATIONS[act],
                        ws_eps=1e-5, ws_eps_mode='add', padding='symmetric', **kwargs)
        gamma_in_conv = True
    gamma = ACT_GAMMAS[ACTIVATIONS[act]['type']]
    cfg = classifier_config(backbone, num_classes, head_in)
    shapes = target_shapes(cfg)
    plan, unknown = build_plan(sd, family, gamma_in_conv, gamma)

    def make_tensor(source, transform, target_shape):
        if source is None:
            return torch.ones(target_shape)
        try:
            return transform(sd[source].float()).contiguous().clone()
        except ConversionError as err:
            raise ConversionError(f'{source}: {err}') from None

    state_dict, problems = place_tensors(plan, shapes, make_tensor,
                                         lambda s: tuple(sd[s].shape), unknown)
    if problems:
        raise ConversionError(f'cannot convert the timm {flavor} state dict: '
                              + ' | '.join(problems))
    if gamma_in_conv:
        notes.append(f'timm applies the activation gamma ({gamma}) in its convs; folded into '
                     'the first stem conv gain' + (', the final conv gain' if family == 'nfnet'
                                                   else '') + ' and the classifier weight.')
    meta = dict(converted_from=f'timm_{flavor}',
                converter='nfnets_mm.converters.timm',
                num_classes=num_classes, model=cfg, exact=True, notes=notes)
    return state_dict, meta


def convert_file(src: str, act: Optional[str] = None
                 ) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Load the timm checkpoint ``src`` weights-only and convert it; returns
    ``(state_dict, meta)`` as :func:`convert_state_dict` (``meta['source']`` is the
    file name)."""
    state_dict, meta = convert_state_dict(load_timm_state_dict(src), act)
    meta['source'] = osp.basename(src)
    return state_dict, meta


def convert(src: str, dst: str, force: bool = False, act: Optional[str] = None) -> dict:
    """Convert the timm checkpoint ``src`` into the MMPretrain checkpoint ``dst``
    (``{'state_dict', 'meta'}``, written atomically; an existing ``dst`` is refused
    unless ``force``).  Returns the meta."""
    refuse_existing(dst, force)  # before the conversion, not only at the write
    state_dict, meta = convert_file(src, act)
    save_checkpoint_atomic(state_dict, meta, dst, force)
    return meta
