"""Released NFNet weights in one config line: format detection, conversion in memory,
the converted-weights cache and the architecture check.

MMEngine's ``CheckpointLoader`` schemes of :mod:`nfnets_mm.utils.checkpoint_schemes`
(local paths, ``http(s)://`` and the alias ``dm-nfnets://F0`` ... ``dm-nfnets://F6``)
read every file through :func:`load_checkpoint_file`, which tells the formats apart by
content, not by name:

* **DeepMind Haiku parameters** (``F0_haiku.npz``: a plain pickle, an ``np.savez``
  archive or an object ``.npy``) are read with the package's restricted unpickler
  (:class:`~nfnets_mm.utils.safe_checkpoint.RestrictedUnpickler`) and converted by
  :mod:`nfnets_mm.converters.deepmind`.
* **PyTorch checkpoints** are loaded weights-only with the allowlist
  (:mod:`nfnets_mm.utils.safe_checkpoint`).  A timm ``dm_nfnet_*`` / ``nfnet_*`` /
  ``nf_resnet*`` state dict (recognised by module names only timm has, see
  :func:`~nfnets_mm.converters.timm.is_timm_state_dict`) is converted by
  :mod:`nfnets_mm.converters.timm`; anything else is returned unchanged.

A converted checkpoint is ``{'state_dict': {'backbone.*', 'head.fc.*'}, 'meta': {...}}``,
the ``ImageClassifier`` layout, so ``load_from=`` and ``init_cfg=dict(type='Pretrained',
checkpoint=..., prefix='backbone.')`` (backbone only, e.g. in MMDetection) both work.

Cache: a converted download is saved next to it, in ``<download folder>/converted/
<file name>.<SHA-256 of the file>.pth`` (written atomically, never over an existing
file), and later loads read that file weights-only instead of converting again.  Local
DeepMind files are cached the same way under ``<torch.hub.get_dir()>/checkpoints/
converted/`` (nothing is written next to a user's file); local timm files are converted
in memory (it takes well under a second).

Architecture check: the tensors of a converted checkpoint are remembered (by identity,
weakly), and MMEngine's ``load_state_dict`` (which ``load_checkpoint``,
``Runner(load_from=...)`` and ``PretrainedInit`` call) is wrapped by
:func:`install_arch_check`: loading them into an NFNet / NF-ResNet of another
architecture (F1 weights into an F0 model), or into a backbone without
``prefix='backbone.'``, raises :class:`PretrainedArchMismatchError` naming both, instead
of MMEngine's warning and a half-initialised model.  Other checkpoints are not checked.
"""
import glob
import hashlib
import logging
import os
import os.path as osp
import re
import weakref
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch
from mmengine.logging import print_log

from nfnets_mm.utils.checkpoint_io import save_checkpoint_atomic
from nfnets_mm.utils.safe_checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                                             UnsafePickleError, load_with_allowlist,
                                             safe_load)
from nfnets_mm.variants import NFNET_VARIANTS, get_variant
from . import deepmind, timm
from ._common import ConversionError, match_nfnet_variant

__all__ = ['DM_SCHEME', 'CheckpointNotFoundError', 'CheckpointDownloadError',
           'PretrainedArchMismatchError', 'PRETRAINED_LOAD_ERRORS', 'dm_weights_url',
           'how_to_get', 'source_format', 'load_checkpoint_file', 'converted_cache_dir',
           'check_arch', 'check_settings', 'install_arch_check']

#: The alias scheme of DeepMind's released weights: ``dm-nfnets://F0`` ... ``F6``.
DM_SCHEME = 'dm-nfnets://'
#: Sub-folder of a download folder that holds converted checkpoints.
CONVERTED_DIR = 'converted'


class CheckpointNotFoundError(FileNotFoundError):
    """A local checkpoint does not exist; the message says how to get one."""


class CheckpointDownloadError(OSError):
    """A checkpoint could not be downloaded; the message says how to get it anyway."""


class PretrainedArchMismatchError(ValueError):
    """Converted weights of one architecture loaded into a model of another."""


#: Errors of loading pretrained weights whose message is the whole story (what is
#: wrong and what to do): command lines print them as one ``error:`` line, without a
#: traceback through MMEngine.
PRETRAINED_LOAD_ERRORS = (CheckpointNotFoundError, CheckpointDownloadError,
                          PretrainedArchMismatchError, UnsafeCheckpointError,
                          CorruptCheckpointError)


# ----------------------------------------------------------------------------
# DeepMind's released weights and the how-to messages
# ----------------------------------------------------------------------------
def _released() -> Dict[str, str]:
    return {n: v.dm_weights_url for n, v in NFNET_VARIANTS.items() if v.dm_weights_url}


def dm_weights_url(name: str) -> str:
    """The URL of DeepMind's released weights of variant ``name`` (``'F0'`` ... ``'F6'``,
    case-insensitive), from :data:`~nfnets_mm.variants.NFNET_VARIANTS`.

    Raises:
        ValueError: not a variant, or one without released weights; the message lists
            the released ones.
    """
    released = ', '.join(_released())
    try:
        variant = get_variant(name)
    except KeyError:
        raise ValueError(f'{DM_SCHEME}{name}: unknown NFNet variant {name!r}; DeepMind '
                         f'released weights for {released}.') from None
    if not variant.dm_weights_url:
        raise ValueError(f'{DM_SCHEME}{name}: DeepMind released no weights for '
                         f'NFNet-{variant.name}; released: {released}.')
    return variant.dm_weights_url


def _dm_variant_of(source: str) -> Optional[str]:
    """``'F0'`` for ``dm-nfnets://F0``, DeepMind's F0 URL or a file named
    ``F0_haiku.npz``; else ``None``."""
    if source.startswith(DM_SCHEME):
        return source[len(DM_SCHEME):].upper()
    for name, url in _released().items():
        if source == url or osp.basename(source) == osp.basename(url):
            return name
    return None


def how_to_get(source: str, cache_file: Optional[str] = None) -> str:
    """Sentences telling how to obtain the checkpoint ``source`` (a path or URL):
    the one-line alias, the converters, or where to place a download."""
    variant = _dm_variant_of(source)
    steps = []
    if variant is not None and variant in _released():
        url = _released()[variant]
        name = osp.basename(url)
        steps.append(f"DeepMind's NFNet-{variant} weights: use checkpoint="
                     f"'{DM_SCHEME}{variant}' (or load_from='{DM_SCHEME}{variant}') on a "
                     f'machine with internet access: {url} is downloaded once, converted '
                     'and cached.')
        steps.append(f'Offline: download {url} elsewhere, then '
                     + (f'copy it to {cache_file} (the download cache), or ' if cache_file
                        else '')
                     + f'use its local path as the checkpoint (converted on load), or '
                     f'convert it once with `python tools/model_converters/'
                     f'dm_nfnet_to_mmpretrain.py {name} checkpoints/nfnet-'
                     f'{variant.lower()}_dm-in1k.pth` and use that path.')
    else:
        if cache_file:
            steps.append(f'Download {source} elsewhere and copy it to {cache_file} '
                         '(the download cache; it is used as is), or use a local path.')
        steps.append("DeepMind's released NFNet weights need no file: checkpoint="
                     f"'{DM_SCHEME}F0' ... '{DM_SCHEME}F6' (downloaded and converted on "
                     'first use). A downloaded F*_haiku.npz or timm state dict loads as a '
                     'path or URL as it is, or converts with `python tools/model_converters/'
                     'dm_nfnet_to_mmpretrain.py SRC DST` / `timm_nfnet_to_mmpretrain.py SRC '
                     'DST` (docs/converters.md).')
    return ' '.join(steps)


# ----------------------------------------------------------------------------
# format detection
# ----------------------------------------------------------------------------
#: ``torch.save``'s legacy format starts with this number, pickled.
_TORCH_MAGIC = torch.serialization.MAGIC_NUMBER.to_bytes(10, 'little')


def source_format(path: str) -> str:
    """``'deepmind'`` (a plain pickle, an ``np.savez`` archive or an ``.npy``) or
    ``'torch'`` (``torch.save``'s zip or legacy format, and anything unreadable, which
    the weights-only loader then names), from the file's first bytes."""
    with open(path, 'rb') as f:
        head = f.read(32)
    if head.startswith(b'PK\x03\x04'):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return 'torch'  # truncated: the torch loader explains it
        torch_zip = any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names)
        return 'torch' if torch_zip or not names else 'deepmind'
    if head.startswith(b'\x93NUMPY'):
        return 'deepmind'
    if head.startswith(b'\x80') and len(head) > 2:
        body = head[2:]
        if body.startswith(b'\x95'):  # protocol >= 4 frame
            body = body[9:]
        if body.startswith(b'\x8a\x0a' + _TORCH_MAGIC):
            return 'torch'
        return 'deepmind'
    return 'torch'  # the legacy tar format, or damage the weights-only loader names


# ----------------------------------------------------------------------------
# converted-weights cache and tensor provenance
# ----------------------------------------------------------------------------
def converted_cache_dir(download_dir: Optional[str] = None) -> str:
    """``<download_dir or torch.hub.get_dir()/checkpoints>/converted``."""
    if download_dir is None:
        download_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(download_dir, CONVERTED_DIR)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_path(source: str, cache_dir: str, sha256: str) -> str:
    return osp.join(cache_dir, f'{osp.basename(source)}.{sha256}.pth')


def _has_cached_conversion(source: str, cache_dir: str) -> bool:
    """Whether any conversion of a file named like ``source`` is cached (no hashing)."""
    return bool(glob.glob(osp.join(glob.escape(cache_dir),
                                   glob.escape(osp.basename(source)) + '.*.pth')))


#: ``id(tensor) -> (weak reference, description of the converted source)``.
_PROVENANCE: Dict[int, Tuple[weakref.ref, dict]] = {}


def _remember(checkpoint: dict, label: str) -> dict:
    """Remember the tensors of a converted ``checkpoint`` (read from ``label``) for the
    architecture check; returns ``checkpoint``."""
    info = dict(source=label, backbone=checkpoint['meta']['model']['backbone'])
    for tensor in checkpoint['state_dict'].values():
        if torch.is_tensor(tensor):
            key = id(tensor)
            _PROVENANCE[key] = (weakref.ref(tensor, lambda _, key=key: _PROVENANCE.pop(
                key, None)), info)
    return checkpoint


def _provenance(state_dict: Any) -> Optional[dict]:
    """The description of the converted source ``state_dict``'s tensors came from."""
    if not isinstance(state_dict, dict):
        return None
    for tensor in state_dict.values():
        entry = _PROVENANCE.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
    return None


def _mapped(checkpoint: dict, map_location: Any) -> dict:
    """Freshly converted (CPU) tensors moved as ``torch.load(map_location=...)`` would
    (a device or device name; other forms leave them on the CPU)."""
    if isinstance(map_location, (str, torch.device)) and str(map_location) != 'cpu':
        checkpoint['state_dict'] = type(checkpoint['state_dict'])(
            (k, v.to(map_location)) for k, v in checkpoint['state_dict'].items())
    return checkpoint


def _label(path: str, url: Optional[str]) -> str:
    return f'{url} (cached as {path})' if url else path


def _convert(path: str, kind: str, url: Optional[str], cache_dir: Optional[str],
             map_location: Any, loaded: Any = None) -> dict:
    """Convert ``path`` (``kind`` ``'deepmind'`` or ``'timm'``; ``loaded``: the timm
    checkpoint if already loaded), through the cache when ``cache_dir`` is given."""
    cached = sha256 = None
    if cache_dir is not None:
        sha256 = _sha256(path)
        cached = _cache_path(path, cache_dir, sha256)
        if osp.isfile(cached):
            try:
                return _remember(safe_load(cached, map_location=map_location),
                                 _label(path, url))
            except CorruptCheckpointError:
                os.remove(cached)  # our own cache file, damaged: convert again
    if kind == 'deepmind':
        try:
            state_dict, meta = deepmind.convert_file(path)
        except UnsafePickleError as err:
            raise UnsafePickleError(f'Refusing to load checkpoint {_label(path, url)}: '
                                    f'{err}') from None
        except deepmind.UnreadableSourceError as err:
            advice = (f'Delete the cached file {path} and load again to download it anew.'
                      if url else 'Download or copy it again.')
            raise CorruptCheckpointError(f'Cannot load checkpoint {_label(path, url)}: '
                                         f'{err} {advice}') from None
        except (ValueError, TypeError) as err:
            raise type(err)(f'Cannot load {_label(path, url)} as DeepMind NFNet weights: '
                            f'{err}') from None
    else:
        if loaded is None:
            loaded = load_with_allowlist(
                path, lambda: torch.load(path, map_location='cpu', weights_only=True),
                url=url)
        try:
            state_dict, meta = timm.convert_state_dict(timm.unwrap_state_dict(loaded, path))
        except ConversionError as err:
            raise ConversionError(f'Cannot load {_label(path, url)} as timm NF weights: '
                                  f'{err}') from None
        meta['source'] = osp.basename(path)
    if url:
        meta['source_url'] = url
    checkpoint = dict(state_dict=state_dict, meta=meta)
    if cached is not None:
        meta['source_sha256'] = sha256
        try:
            save_checkpoint_atomic(state_dict, meta, cached)
            print_log(f'Converted {_label(path, url)} ({meta["converted_from"]}) into '
                      f'{cached}', logger='current')
        except FileExistsError:
            pass  # another process converted it meanwhile: same content
    return _remember(_mapped(checkpoint, map_location), _label(path, url))


def load_checkpoint_file(path: str, map_location: Any = None, url: Optional[str] = None,
                         cache_dir: Optional[str] = None) -> Any:
    """Load the checkpoint file ``path`` safely, converting DeepMind and timm weights.

    Args:
        path (str): A local file (for a URL: its download).
        map_location: As for :func:`torch.load`.
        url (str, optional): Where ``path`` was downloaded from (for the messages and,
            with ``cache_dir``, the cache).
        cache_dir (str, optional): Folder of converted checkpoints; ``None``: the
            default :func:`converted_cache_dir` for DeepMind files, no cache for timm
            ones.

    Returns:
        The checkpoint; for converted weights ``{'state_dict', 'meta'}``.

    Raises:
        UnsafeCheckpointError: The file holds a global outside the allowlist (a plain
            pickle: :class:`~nfnets_mm.utils.safe_checkpoint.UnsafePickleError`).
        CorruptCheckpointError: An empty, truncated or foreign PyTorch file.
        ValueError, TypeError: A DeepMind file that is not NFNet weights.
    """
    if source_format(path) == 'deepmind':
        return _convert(path, 'deepmind', url, cache_dir or converted_cache_dir(),
                        map_location)
    if url is not None and cache_dir is not None and _has_cached_conversion(path, cache_dir):
        if osp.isfile(_cache_path(path, cache_dir, _sha256(path))):  # a converted timm file
            return _convert(path, 'timm', url, cache_dir, map_location)
    checkpoint = load_with_allowlist(
        path, lambda: torch.load(path, map_location=map_location, weights_only=True), url=url)
    if timm.is_timm_state_dict(checkpoint):
        return _convert(path, 'timm', url, cache_dir if url else None, map_location,
                        loaded=checkpoint)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict) and \
            isinstance(checkpoint.get('state_dict'), dict) and \
            isinstance(checkpoint['meta'].get('model'), dict) and \
            str(checkpoint['meta'].get('converted_from', '')).startswith(
                ('deepmind', 'timm')):
        _remember(checkpoint, _label(path, url))  # written by a converter command
    return checkpoint


# ----------------------------------------------------------------------------
# the architecture check
# ----------------------------------------------------------------------------
_STAGE_KEY = re.compile(r'stages\.(\d+)\.(\d+)\.(.*)$')


def _structure(shapes: Dict[str, Tuple[int, ...]], prefix: str
               ) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """``(blocks per stage, stage widths)`` of the ``prefix + 'stages.*'`` keys, or
    ``None`` when there are none."""
    blocks: Dict[int, int] = {}
    widths: Dict[int, int] = {}
    for key, shape in shapes.items():
        if not key.startswith(prefix):
            continue
        match = _STAGE_KEY.match(key[len(prefix):])
        if match is None:
            continue
        stage, block = int(match.group(1)), int(match.group(2))
        blocks[stage] = max(blocks.get(stage, 0), block + 1)
        if block == 0 and match.group(3) == 'conv3.weight' and shape:
            widths[stage] = shape[0]
    if not blocks:
        return None
    stages = sorted(blocks)
    return (tuple(blocks[s] for s in stages), tuple(widths.get(s, 0) for s in stages))


def _name_structure(kind: str, depths: Tuple[int, ...], widths: Tuple[int, ...]) -> str:
    """``'NFNet-F1'``, ``'NFResNet-50'``, or the depths and widths of a custom arch."""
    if kind == 'NFNet':
        name = match_nfnet_variant(dict(_nfnet_defaults(), depths=depths, widths=widths))
        if name:
            return f'NFNet-{name} (depths {depths}, widths {widths})'
    if kind == 'NFResNet':
        from nfnets_mm.models import NFResNet
        depth = next((d for d, v in NFResNet.arch_settings.items() if tuple(v) == depths),
                     None)
        if depth is not None:
            return f'NFResNet-{depth} (widths {widths})'
    return f'{kind} with depths {depths}, widths {widths}'


def _nfnet_defaults() -> dict:
    from nfnets_mm.models import NFNet
    return dict(NFNet.arch_defaults)


def _find_backbone(module: Any) -> Tuple[Any, Optional[str]]:
    """``(NF backbone, its key prefix)`` of ``module`` (the backbone itself or a model
    with ``.backbone``), or ``(None, None)``."""
    from mmengine.model import is_model_wrapper

    from nfnets_mm.models.backbones.nf_base import NFBackboneBase
    if is_model_wrapper(module):
        module = module.module
    if isinstance(module, NFBackboneBase):
        return module, ''
    backbone = getattr(module, 'backbone', None)
    if isinstance(backbone, NFBackboneBase):
        return backbone, 'backbone.'
    return None, None


def check_arch(module: Any, state_dict: Dict[str, Any], info: dict) -> None:
    """Refuse loading converted weights (described by ``info``) into ``module`` when its
    NF backbone has another architecture; see the module docstring."""
    backbone, prefix = _find_backbone(module)
    if backbone is None:
        return
    shapes = {k: tuple(getattr(v, 'shape', ())) for k, v in state_dict.items()}
    ours = _structure(shapes, prefix)
    if ours is None:
        if prefix == '' and _structure(shapes, 'backbone.') is not None:
            raise PretrainedArchMismatchError(
                f'{info["source"]} holds a whole ImageClassifier (keys "backbone.*", '
                f'"head.fc.*") but is loaded into the backbone {type(backbone).__name__}: '
                "add prefix='backbone.' to init_cfg=dict(type='Pretrained', ...).")
        return
    theirs_kind = info['backbone'].get('type', 'NFNet')
    model_shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    model = _structure(model_shapes, '')
    model_kind = type(backbone).__name__
    if model is not None and (ours != model or theirs_kind != model_kind):
        theirs_name = _name_structure(theirs_kind, *ours)
        model_name = _name_structure(model_kind, *model)
        variant = match_nfnet_variant(dict(_nfnet_defaults(), depths=model[0],
                                           widths=model[1])) if model_kind == 'NFNet' else None
        example = (f"checkpoint='{DM_SCHEME}{variant}'" if variant in _released()
                   else f"'{DM_SCHEME}F0' ... '{DM_SCHEME}F6' for NFNet-F0 ... F6")
        raise PretrainedArchMismatchError(
            f'{info["source"]} holds {theirs_name} weights, but the model being loaded is '
            f'{model_name}. Load weights of the model\'s architecture (e.g. {example}) or '
            "build the model with the checkpoint's arch.")


def _model_settings(backbone: Any) -> Dict[str, Any]:
    """The numerics options of ``backbone`` that converted weights depend on: padding,
    WS epsilon and its mode (first WS conv), activation and its GELU approximation
    (first gamma activation)."""
    from nfnets_mm.models.layers import GammaAct, ScaledStdConv2d
    settings: Dict[str, Any] = {}
    conv = next((m for m in backbone.modules() if isinstance(m, ScaledStdConv2d)), None)
    if conv is not None:
        settings.update(padding=conv.padding_mode_name, ws_eps=conv.eps,
                        ws_eps_mode=conv.eps_mode)
    act = next((m for m in backbone.modules() if isinstance(m, GammaAct)), None)
    if act is not None:
        settings['act'] = type(act.act).__name__
        settings['approximate'] = getattr(act.act, 'approximate', 'none')
    return settings


def _source_settings(backbone_cfg: dict) -> Dict[str, Any]:
    """:func:`_model_settings` of the model a converted checkpoint was made for."""
    act_cfg = backbone_cfg.get('act_cfg', dict(type='GELU'))
    return dict(padding=backbone_cfg.get('padding', 'symmetric'),
                ws_eps=backbone_cfg.get('ws_eps', 1e-4),
                ws_eps_mode=backbone_cfg.get('ws_eps_mode', 'max'), act=act_cfg['type'],
                approximate=act_cfg.get('approximate', 'none'))


def check_settings(module: Any, info: dict) -> None:
    """Warn when the NF backbone of ``module`` computes with other numerics options
    (padding, activation, WS epsilon) than the converted weights described by ``info``
    were made for: they load, but the outputs differ from the source model's (fine for
    deliberate fine-tuning, a silent accuracy loss otherwise)."""
    backbone, _ = _find_backbone(module)
    if backbone is None or 'type' not in info['backbone']:
        return
    ours, theirs = _model_settings(backbone), _source_settings(info['backbone'])
    differ = {k: (theirs[k], ours[k]) for k in ours if k in theirs and ours[k] != theirs[k]}
    if differ:
        print_log(
            f'{info["source"]} was converted for {info["backbone"]["type"]}('
            + ', '.join(f'{k}={v!r}' for k, v in sorted(info['backbone'].items())
                        if k in ('padding', 'act_cfg', 'ws_eps', 'ws_eps_mode'))
            + ') but the model being loaded has '
            + ', '.join(f'{k}={o!r} (not {t!r})' for k, (t, o) in differ.items())
            + '; its outputs will differ from the source model\'s. Set those backbone '
            'options unless the difference is deliberate.', logger='current',
            level=logging.WARNING)


def install_arch_check() -> None:
    """Wrap ``mmengine.runner.checkpoint.load_state_dict`` (looked up at call time by
    ``load_checkpoint``, ``Runner.load_checkpoint`` and ``PretrainedInit``) with
    :func:`check_arch` and :func:`check_settings` for converted weights.  Idempotent."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    original = mmengine_checkpoint.load_state_dict
    if getattr(original, '_nfnets_mm_arch_check', False):
        return

    def load_state_dict(module, state_dict, strict=False, logger=None):
        info = _provenance(state_dict)
        if info is not None:
            check_arch(module, state_dict, info)
            check_settings(module, info)
        return original(module, state_dict, strict, logger)

    load_state_dict._nfnets_mm_arch_check = True
    load_state_dict.__doc__ = original.__doc__
    mmengine_checkpoint.load_state_dict = load_state_dict
