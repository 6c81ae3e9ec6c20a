"""DeepMind's released NFNet parameters (Haiku) -> MMPretrain state dict.

DeepMind's ``F{n}_haiku.npz`` files are *pickled* dicts of Haiku parameters (not
``np.savez`` archives), either nested (``module_name -> {param_name: array}``) or flat
(``'module_name/param_name' -> array``); both are accepted, and so are real ``.npz``
zip archives and ``.npy`` files holding such a dict.  Pickles are read with the
package's restricted unpickler (:class:`~nfnets_mm.utils.safe_checkpoint.RestrictedUnpickler`),
which can only rebuild numpy arrays, dtypes, scalars and plain containers, so an
untrusted file cannot run code.

The state dict (``backbone.*``, ``head.fc.*``) loads into::

    ImageClassifier(
        backbone=dict(type='NFNet', arch='F0', padding='same',
                      act_cfg=dict(type='GELU', approximate='tanh')),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='NFNetClsHead', num_classes=1000, in_channels=3072))

Layout transforms: convs HWIO -> OIHW, linears ``(in, out)`` -> ``(out, in)``, gains of
any broadcastable shape -> ``(C_out,)``, skip gains -> 0-d.  The architecture is
inferred from the parameter shapes (block count, widths, group width, ...) and named
after the variant of :data:`~nfnets_mm.variants.NFNET_VARIANTS` it equals.
"""
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from nfnets_mm.utils.checkpoint_io import refuse_existing, save_checkpoint_atomic
from nfnets_mm.utils.safe_checkpoint import UnsafePickleError, restricted_load
from nfnets_mm.variants import NFNET_VARIANTS
from ._common import (ConversionError, classifier_config, place_tensors,
                      match_nfnet_variant, nfnet_variant_arch, ratio, same, target_shapes)

__all__ = ['DM_BACKBONE_SETTINGS', 'UnsafePickleError', 'UnreadableSourceError', 'read_haiku_file',
           'flatten_params', 'load_haiku_params', 'parse_names', 'infer_arch',
           'model_config', 'build_mapping', 'convert_params', 'convert_file', 'convert']

class UnreadableSourceError(ValueError):
    """The source file is truncated or not a pickle, ``.npy`` or ``.npz`` file."""


#: Model settings DeepMind's weights were trained with (TF "SAME" padding, tanh GELU).
DM_BACKBONE_SETTINGS = dict(padding='same', act_cfg=dict(type='GELU', approximate='tanh'))

# DeepMind conv name inside an ``nf_block`` -> our module name.
_BLOCK_CONVS = {
    'conv0': 'conv1',
    'conv1': 'conv2',
    'conv1b': 'conv2b',
    'conv2': 'conv3',
    'conv_shortcut': 'shortcut_conv',
}
_SE_LINEARS = {'linear': 'fc1', 'linear_1': 'fc2'}
# WS conv parameter name -> our name ('b' tolerated as an alias of 'bias').
_CONV_PARAMS = {'w': 'weight', 'gain': 'gain', 'bias': 'bias', 'b': 'bias'}
_LINEAR_PARAMS = {'w': 'weight', 'b': 'bias'}


# --------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------
def read_haiku_file(path: str) -> Any:
    """Read a pickle, ``.npy`` or ``.npz`` file safely and return the raw object."""
    with open(path, 'rb') as f:
        return _read_haiku_stream(f)


def _read_haiku_stream(f: BinaryIO) -> Any:
    head = f.read(8)
    f.seek(0)
    if head.startswith(b'PK\x03\x04'):  # a real np.savez archive: no pickles inside
        with np.load(f, allow_pickle=False) as npz:
            return OrderedDict((key, npz[key]) for key in npz.files)
    if head.startswith(b'\x93NUMPY'):
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        return restricted_load(f)  # the object payload of an .npy is a pickle
    return restricted_load(f)


def _as_array(value: Any, key: str) -> np.ndarray:
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or type(value) is not np.ndarray:
        raise TypeError(f'parameter {key!r} is a {type(value).__name__}, expected a numpy '
                        'array; the file must be a (nested) dict of str -> ndarray.')
    if value.dtype.hasobject or value.dtype.kind not in 'fiub':
        raise TypeError(f'parameter {key!r} has dtype {value.dtype}, expected a numeric '
                        'array.')
    return value


def flatten_params(obj: Any) -> 'OrderedDict[str, np.ndarray]':
    """Validate a (nested) dict of str -> ndarray and flatten it to ``'a/b/c' -> array``.

    Haiku's nested form ``{'NFNet/~/stem_conv0': {'w': ...}}`` and the flat form
    ``{'NFNet/~/stem_conv0/w': ...}`` both become ``'NFNet/~/stem_conv0/w'``.
    """
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()  # np.save(dict) wraps the dict in a 0-d object array
    if not isinstance(obj, dict):
        raise TypeError(f'expected a dict of Haiku parameters, got {type(obj).__name__}.')
    flat: 'OrderedDict[str, np.ndarray]' = OrderedDict()

    def visit(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if not isinstance(key, str):
                raise TypeError(f'non-string key {key!r} under {prefix or "<root>"!r}; '
                                'expected a dict of str -> ndarray.')
            name = f'{prefix}/{key}' if prefix else key
            if isinstance(value, dict):
                visit(value, name)
            else:
                if name in flat:
                    raise ConversionError(f'parameter {name!r} appears twice (nested and flat).')
                flat[name] = _as_array(value, name)

    visit(obj, '')
    if not flat:
        raise ValueError('the file holds no parameters.')
    return flat


def load_haiku_params(path: str) -> 'OrderedDict[str, np.ndarray]':
    """Safely load DeepMind NFNet parameters as a flat ``name -> ndarray`` dict."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'source checkpoint {path!r} does not exist.')
    if osp.getsize(path) == 0:
        raise UnreadableSourceError(f'source checkpoint {path!r} is empty (0 bytes).')
    try:
        raw = read_haiku_file(path)
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise UnreadableSourceError(
            f'cannot read source checkpoint {path!r}: it is truncated or not a pickle, '
            f'.npy or .npz file ({type(err).__name__}: {err}).') from None
    return flatten_params(raw)


# --------------------------------------------------------------------------------------
# Parsing the Haiku names and inferring the architecture
# --------------------------------------------------------------------------------------
_RE_STEM = re.compile(r'^stem_conv(\d+)/(\w+)$')
_RE_SKIP = re.compile(r'^nf_block(?:_(\d+))?/skip_gain$')
_RE_CONV = re.compile(r'^nf_block(?:_(\d+))?/~/(conv0|conv1|conv1b|conv2|conv_shortcut)/(\w+)$')
_RE_SE = re.compile(r'^nf_block(?:_(\d+))?/~/squeeze_excite/~/(linear|linear_1)/(\w+)$')
_RE_FINAL = re.compile(r'^final_conv/(\w+)$')
_RE_HEAD = re.compile(r'^linear/(\w+)$')


class ParsedParam:
    """Where one source tensor goes: target key (without block position yet) and kind."""

    def __init__(self, source: str, kind: str, block: Optional[int] = None,
                 module: str = '', param: str = '') -> None:
        self.source, self.kind, self.block = source, kind, block
        self.module, self.param = module, param


def _strip_root(flat: Dict[str, np.ndarray]) -> Tuple[str, Dict[str, str]]:
    """Find the common root module (``'NFNet'``) and map relative names to full ones."""
    roots = {key.split('/~/', 1)[0] for key in flat if '/~/' in key}
    if len(roots) != 1:
        raise ConversionError('could not find a single Haiku root module such as "NFNet/~/..." in '
                              f'the parameter names (found roots {sorted(roots)}); expected names '
                              'like "NFNet/~/stem_conv0/w".')
    root = roots.pop()
    relative, outside = {}, []
    for key in flat:
        if key.startswith(root + '/~/'):
            relative[key[len(root) + 3:]] = key
        else:
            outside.append(key)
    if outside:
        raise ConversionError(f'unexpected parameters outside the {root!r} module: {outside[:10]}.')
    return root, relative


def parse_names(flat: Dict[str, np.ndarray]) -> Tuple[str, List[ParsedParam]]:
    """Classify every source name; unknown names raise a :class:`ConversionError`
    listing them all."""
    root, relative = _strip_root(flat)
    parsed, unknown = [], []
    for rel, full in relative.items():
        m = _RE_STEM.match(rel)
        if m and m.group(2) in _CONV_PARAMS:
            parsed.append(ParsedParam(full, 'stem', int(m.group(1)), param=m.group(2)))
            continue
        m = _RE_SKIP.match(rel)
        if m:
            parsed.append(ParsedParam(full, 'skip', int(m.group(1) or 0)))
            continue
        m = _RE_CONV.match(rel)
        if m and m.group(3) in _CONV_PARAMS:
            parsed.append(ParsedParam(full, 'block_conv', int(m.group(1) or 0), m.group(2),
                                      m.group(3)))
            continue
        m = _RE_SE.match(rel)
        if m and m.group(3) in _LINEAR_PARAMS:
            parsed.append(ParsedParam(full, 'se', int(m.group(1) or 0), m.group(2), m.group(3)))
            continue
        m = _RE_FINAL.match(rel)
        if m and m.group(1) in _CONV_PARAMS:
            parsed.append(ParsedParam(full, 'final', param=m.group(1)))
            continue
        m = _RE_HEAD.match(rel)
        if m and m.group(1) in _LINEAR_PARAMS:
            parsed.append(ParsedParam(full, 'head', param=m.group(1)))
            continue
        unknown.append(full)
    if unknown:
        more = ' ...' if len(unknown) > 10 else ''
        raise ConversionError(
            f'{len(unknown)} unexpected parameter name(s) that no part of NFNet takes: '
            f'{unknown[:10]}{more}. Expected {root}/~/stem_conv<i>/{{w,gain,bias}}, '
            'nf_block[_k]/skip_gain, nf_block[_k]/~/{conv0,conv1,conv1b,conv2,conv_shortcut}/'
            '{w,gain,bias}, nf_block[_k]/~/squeeze_excite/~/linear[_1]/{w,b}, final_conv/'
            '{w,gain,bias}, linear/{w,b}.')
    return root, parsed


def _shape(flat: Dict[str, np.ndarray], key: str) -> Tuple[int, ...]:
    if key not in flat:
        raise ConversionError(f'missing parameter {key!r}, needed to infer the architecture.')
    return tuple(flat[key].shape)


def _block_name(root: str, index: int) -> str:
    return f'{root}/~/nf_block' + (f'_{index}' if index else '')


def infer_arch(flat: Dict[str, np.ndarray], root: str,
               parsed: List[ParsedParam]) -> Tuple[dict, int]:
    """Infer the NFNet arch dict and the number of classes from parameter shapes.

    Stages start at the first block and at every block with a ``conv_shortcut``
    (every stage after the first is strided, so it always has one).

    Returns:
        tuple: ``(arch dict with all keys, num_classes)``.
    """
    stem_ids = sorted({p.block for p in parsed if p.kind == 'stem'})
    if stem_ids != list(range(len(stem_ids))) or not stem_ids:
        raise ConversionError('stem convs must be stem_conv0..stem_convN, found indices '
                              f'{stem_ids}.')
    stem_channels = tuple(_shape(flat, f'{root}/~/stem_conv{i}/w')[3] for i in stem_ids)
    block_ids = sorted({p.block for p in parsed if p.kind in ('skip', 'block_conv', 'se')})
    if block_ids != list(range(len(block_ids))) or not block_ids:
        raise ConversionError('blocks must be named nf_block, nf_block_1, ... without gaps; found '
                              f'indices {block_ids}.')
    depths, widths, mids, groups, se, prev = [], [], [], [], [], stem_channels[-1]
    has_se = None
    for index in block_ids:
        name = _block_name(root, index)
        for conv in ('conv0', 'conv1', 'conv1b', 'conv2'):
            if f'{name}/~/{conv}/w' not in flat:
                raise ConversionError(f'missing parameter {name}/~/{conv}/w; our NFNet blocks have '
                                      'conv0, conv1, conv1b and conv2 (use_two_convs=True).')
        out = _shape(flat, f'{name}/~/conv2/w')[3]
        mid = _shape(flat, f'{name}/~/conv0/w')[3]
        group_width = _shape(flat, f'{name}/~/conv1/w')[2]
        transition = f'{name}/~/conv_shortcut/w' in flat
        if index == 0 or transition:
            depths.append(0)
            widths.append(out)
        elif out != widths[-1] or out != prev:
            raise ConversionError(f'{name} changes width {prev} -> {out} without a conv_shortcut.')
        depths[-1] += 1
        mids.append((mid, out))
        groups.append(group_width)
        block_has_se = f'{name}/~/squeeze_excite/~/linear/w' in flat
        if has_se is None:
            has_se = block_has_se
        elif has_se != block_has_se:
            raise ConversionError('some blocks have squeeze_excite and some do not.')
        if block_has_se:
            se.append((_shape(flat, f'{name}/~/squeeze_excite/~/linear/w')[1], out))
        prev = out
    if len(set(groups)) != 1:
        raise ConversionError(f'group widths differ across blocks: {sorted(set(groups))}.')
    final_key = f'{root}/~/final_conv/w'
    arch = dict(depths=tuple(depths), widths=tuple(widths), group_width=groups[0],
                bottleneck_ratio=ratio(mids, 'bottleneck ratio'),
                se_ratio=ratio(se, 'SE ratio') if has_se else 0.,
                stem_channels=stem_channels)
    if final_key not in flat:
        raise ConversionError(f'missing {final_key}; our NFNet checkpoints need the final conv.')
    arch['final_conv_ratio'] = ratio([(_shape(flat, final_key)[3], widths[-1])],
                                     'final conv ratio')
    head_w = _shape(flat, f'{root}/~/linear/w')
    return arch, head_w[1]


# --------------------------------------------------------------------------------------
# Target model and mapping
# --------------------------------------------------------------------------------------
def model_config(arch: Union[str, dict], num_classes: int, in_channels: int) -> dict:
    """MMPretrain model config the converted checkpoint loads into."""
    return classifier_config(dict(type='NFNet', arch=arch, **DM_BACKBONE_SETTINGS),
                             num_classes, in_channels)


def _transform(array: np.ndarray, kind: str, key: str) -> np.ndarray:
    """Apply the Haiku -> PyTorch layout change of one tensor."""
    if kind == 'conv_w':
        if array.ndim != 4:
            raise ConversionError(f'{key}: expected an HWIO conv weight, got shape {array.shape}.')
        return array.transpose(3, 2, 0, 1)
    if kind == 'linear_w':
        if array.ndim != 2:
            raise ConversionError(f'{key}: expected an (in, out) weight, got shape {array.shape}.')
        return array.T
    if kind == 'vector':
        if sum(d != 1 for d in array.shape) > 1:
            raise ConversionError(f'{key}: expected a per-channel vector (or a broadcastable '
                                  f'shape such as (1, 1, 1, C)), got shape {array.shape}.')
        return array.reshape(-1)
    if kind == 'scalar':
        if array.size != 1:
            raise ConversionError(f'{key}: expected a scalar, got shape {array.shape}.')
        return array.reshape(())
    raise AssertionError(kind)


def build_mapping(parsed: List[ParsedParam],
                  depths: Tuple[int, ...]) -> List[Tuple[str, str, str]]:
    """(target key, source key, transform kind) for every source tensor."""
    positions, index = {}, 0
    for stage, depth in enumerate(depths):
        for block in range(depth):
            positions[index] = f'backbone.stages.{stage}.{block}'
            index += 1
    mapping, unplaced = [], []
    for p in parsed:
        if p.kind in ('skip', 'block_conv', 'se') and p.block not in positions:
            unplaced.append(p.source)
            continue
        if p.kind == 'stem':
            name = _CONV_PARAMS[p.param]
            target = f'backbone.stem.conv{p.block + 1}.{name}'
            kind = 'conv_w' if name == 'weight' else 'vector'
        elif p.kind == 'skip':
            target, kind = f'{positions[p.block]}.skip_gain', 'scalar'
        elif p.kind == 'block_conv':
            name = _CONV_PARAMS[p.param]
            target = f'{positions[p.block]}.{_BLOCK_CONVS[p.module]}.{name}'
            kind = 'conv_w' if name == 'weight' else 'vector'
        elif p.kind == 'se':
            name = _LINEAR_PARAMS[p.param]
            target = f'{positions[p.block]}.se.{_SE_LINEARS[p.module]}.{name}'
            kind = 'linear_w' if name == 'weight' else 'vector'
        elif p.kind == 'final':
            name = _CONV_PARAMS[p.param]
            target = f'backbone.final.conv.{name}'
            kind = 'conv_w' if name == 'weight' else 'vector'
        else:  # head
            name = _LINEAR_PARAMS[p.param]
            target = f'head.fc.{name}'
            kind = 'linear_w' if name == 'weight' else 'vector'
        mapping.append((target, p.source, kind))
    if unplaced:
        raise ConversionError(f'parameters of blocks beyond the {sum(depths)} blocks of the arch: '
                              f'{unplaced[:10]}.')
    return mapping


def convert_params(flat: Dict[str, np.ndarray], variant: Optional[str] = None
                   ) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Convert flat Haiku params to an MMPretrain state dict.

    Every source tensor is placed exactly once and every key of the target model is
    filled, with matching shapes; otherwise a :class:`ConversionError` lists the
    offending keys.

    Args:
        flat: ``'NFNet/~/module/param' -> array`` (:func:`flatten_params`).
        variant: expected variant (``'F0'`` ...); only checks the inferred arch.

    Returns:
        tuple: ``(state_dict, meta)``; ``meta['model']`` is the model config to load it.
    """
    root, parsed = parse_names(flat)
    arch, num_classes = infer_arch(flat, root, parsed)
    name = match_nfnet_variant(arch)
    if variant is not None:
        try:
            expected = nfnet_variant_arch(variant)
        except KeyError:
            raise ConversionError(f'unknown --variant {variant!r}; valid choices are '
                                  f'{", ".join(NFNET_VARIANTS)}.') from None
        diff = {k: (arch[k], expected[k]) for k in expected if not same(arch[k], expected[k])}
        if diff:
            raise ConversionError(
                                  f'the checkpoint does not match --variant {variant}: '
                                  + ', '.join(f'{k} is {a} in the checkpoint but {b} for {variant}'
                                  for k, (a, b) in diff.items())
                                  + f' (the checkpoint has {sum(arch["depths"])} blocks; '
                                  + (f'it looks like {name}).' if name
                                     else 'it is a custom arch).'))
    final_channels = int(arch['widths'][-1] * arch['final_conv_ratio'])
    cfg = model_config(name if name else arch, num_classes, final_channels)
    shapes = target_shapes(cfg)

    def make_tensor(source, kind, _):
        array = _transform(flat[source], kind, source)
        # np.array, not np.ascontiguousarray: that one turns a 0-d skip gain into shape (1,)
        return torch.from_numpy(np.array(array, dtype=np.float32, order='C'))

    state_dict, problems = place_tensors(build_mapping(parsed, arch['depths']), shapes,
                                         make_tensor, lambda s: tuple(flat[s].shape))
    if problems:
        raise ConversionError('cannot convert the DeepMind checkpoint: ' + ' | '.join(problems))
    meta = dict(
        converted_from='deepmind_haiku',
        converter='nfnets_mm.converters.deepmind',
        haiku_root=root,
        arch=name if name else cfg['backbone']['arch'],
        num_classes=num_classes,
        model=cfg,
        note='Load with padding="same" and act_cfg=dict(type="GELU", approximate="tanh") '
             '(DeepMind settings); input normalised with ImageNet mean/std.')
    return state_dict, meta




def convert_file(src: str, variant: Optional[str] = None
                 ) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Read the DeepMind file ``src`` safely and convert it; returns
    ``(state_dict, meta)`` as :func:`convert_params` (``meta['source']`` is the file
    name)."""
    state_dict, meta = convert_params(load_haiku_params(src), variant)
    meta['source'] = osp.basename(src)
    return state_dict, meta


def convert(src: str, dst: str, variant: Optional[str] = None, force: bool = False) -> dict:
    """Convert the DeepMind file ``src`` into the MMPretrain checkpoint ``dst``
    (``{'state_dict', 'meta'}``, written atomically; an existing ``dst`` is refused
    unless ``force``).  Returns the meta."""
    refuse_existing(dst, force)  # before the conversion, not only at the write
    state_dict, meta = convert_file(src, variant)
    save_checkpoint_atomic(state_dict, meta, dst, force)
    return meta
