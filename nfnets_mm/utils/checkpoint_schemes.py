"""Installing the weights-only loading of :mod:`~nfnets_mm.utils.safe_checkpoint` into
MMEngine's ``CheckpointLoader`` for every scheme.

``Runner(load_from=...)``, ``Runner(resume=True)``, ``mmengine.runner.load_checkpoint``
and ``init_cfg=dict(type='Pretrained', ...)`` all load through ``CheckpointLoader``.
Importing this module (``import nfnets_mm`` does, before anything can load) registers:

* local paths (prefix ``''``): :func:`load_from_local_safe`, i.e. ``safe_load``; DeepMind
  ``F*_haiku.npz`` files and timm NF state dicts are converted on load
  (:func:`nfnets_mm.converters.pretrained.load_checkpoint_file`, which tells formats
  apart by content).  A missing file raises ``CheckpointNotFoundError`` saying how to
  get pretrained weights.
* ``http://``, ``https://``: :func:`load_from_http_safe`.  It downloads like MMEngine
  (``torch.hub.load_state_dict_from_url``) does, into the same cache file
  ``<torch.hub.get_dir()>/checkpoints/<basename of the URL path>`` with
  ``torch.hub.download_url_to_file`` (atomic: a partial download is never left in the
  cache), then loads the cached file with the allowlist.  Unlike MMEngine (which calls
  torch.hub with ``weights_only=False``, so the allowlist never applied) nothing is
  ever unpickled outside the allowlist.  In distributed runs rank 0 downloads and
  loads first and sends the outcome to the other ranks: on success they load from the
  cache, on failure every rank raises the same error (prefixed with
  ``rank 0 failed to load <url>: `` on the others).  After every rank has loaded, the
  ranks exchange their outcomes once more and, if any rank failed (e.g. its own
  download without a shared cache, or a damaged cache copy), every rank raises,
  naming the failing rank; so no rank is left waiting for the process group to time
  out.  A SHA256 prefix in the file name is checked: ``-<8 to 64 hex digits>`` before
  the extension, after ``_<8 digits>`` (the OpenMMLab convention
  ``<name>_<YYYYMMDD>-<hash>.pth``, e.g. ``..._20210831-ea4938fc.pth``, whatever the
  hash's digits) or, elsewhere, with at least one letter a-f (torchvision's
  ``resnet50-0676ba61.pth``; a bare ``-20230101`` is a name).  A fresh download must
  match it or it is discarded; files already in the cache are not re-hashed.
  torch.hub's deprecated single-file zip archives are not unpacked.  A failed download
  (offline, HTTP error) raises ``CheckpointDownloadError`` saying where to place a copy
  downloaded elsewhere.  DeepMind and timm weights are converted as for local files,
  and the conversion is cached next to the download, keyed by the file's SHA-256.
* ``dm-nfnets://F0`` ... ``dm-nfnets://F6``: :func:`load_from_dm_nfnets_safe`, DeepMind's
  released weights (``nfnets_mm.variants.get_variant(name).dm_weights_url``) through
  :func:`load_from_http_safe`.
* ``open-mmlab://``, ``openmmlab://``, ``mmcls://``, ``torchvision://``,
  ``modelzoo://``: :func:`load_from_openmmlab_safe`, :func:`load_from_mmcls_safe`,
  :func:`load_from_torchvision_safe`.  Names are resolved through MMEngine's own
  tables (``get_external_models``, ``get_deprecated_model_names``,
  ``get_mmcls_models``, ``get_torchvision_models``, looked up in
  ``mmengine.runner.checkpoint`` at call time) and loaded through
  :func:`load_from_http_safe` or, for OpenMMLab entries that name a file under the
  MMEngine home, :func:`load_from_local_safe`.
* every other scheme (``pavi://``, ``s3://``/``petrel://`` and any scheme registered
  later, even one registered over ours): MMEngine's own loader, wrapped by
  :func:`make_safe_loader` so that every ``torch.load`` it makes is forced to
  ``weights_only=True`` (through PyTorch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, which
  overrides even an explicit ``weights_only=False``; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
  is lifted meanwhile) and sees the allowlist.  The wrapping happens when
  ``CheckpointLoader`` looks a loader up, so registration order does not matter.  A
  loader that unpickles without ``torch.load`` is not covered.  The environment is
  process-wide: while such a load runs (downloads included), every ``torch.load`` of
  the process is weights-only and other loads of ``nfnets_mm`` wait.

The module functions ``load_from_local``, ``load_from_http``, ``load_from_openmmlab``,
``load_from_mmcls``, ``load_from_torchvision``, ``load_from_pavi`` and
``load_from_ceph`` of ``mmengine.runner.checkpoint`` are replaced by these safe loaders
too, so code that calls them directly (MMEngine's own loaders call
``load_from_http`` that way) is covered; a reference taken with ``from ... import``
before ``nfnets_mm`` was imported is not.
"""
import functools
import logging
import os
import os.path as osp
import re
import socket
import urllib.error
from typing import Any, Callable, List, Optional, Tuple, Type
from urllib.parse import urlparse

import torch
from mmengine.dist import all_gather_object, broadcast_object_list, get_dist_info
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mmengine_checkpoint

from nfnets_mm.converters import pretrained
from nfnets_mm.converters.pretrained import (CheckpointDownloadError,
                                             CheckpointNotFoundError, load_checkpoint_file)
from .safe_checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                              load_with_allowlist)

__all__ = ['load_from_local_safe', 'load_from_http_safe', 'load_from_openmmlab_safe',
           'load_from_mmcls_safe', 'load_from_torchvision_safe', 'load_from_dm_nfnets_safe',
           'make_safe_loader', 'secure_registered_schemes']


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """MMEngine ``CheckpointLoader`` backend for local files: ``safe_load`` for PyTorch
    checkpoints, DeepMind and timm weights converted
    (:func:`~nfnets_mm.converters.pretrained.load_checkpoint_file`).

    Registered for the empty prefix (every path no other scheme claims), replacing
    MMEngine's ``load_from_local``.  In distributed runs a DeepMind file is converted by
    rank 0 first (the other ranks then read its cached conversion, or raise its error,
    as for ``http(s)://``).

    Raises:
        CheckpointNotFoundError: ``filename`` does not exist (a ``FileNotFoundError``
            whose message says how to get pretrained weights).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointNotFoundError(
            f'Checkpoint {filename} does not exist (can not be found). '
            + pretrained.how_to_get(filename))
    if pretrained.source_format(filename) == 'deepmind':
        # converted once, by rank 0, into the shared cache the other ranks then read
        return _rank_zero_first(
            lambda: load_checkpoint_file(filename, map_location=map_location), filename)
    return load_checkpoint_file(filename, map_location=map_location)


# ----------------------------------------------------------------------------
# http(s)://
# ----------------------------------------------------------------------------
#: ``name-<sha256 prefix>.ext``: 8 to 64 lowercase hex digits before the extension,
#: either after ``_<8 digits>`` (OpenMMLab's ``<name>_<YYYYMMDD>-<hash>``, whatever the
#: hash's digits) or with at least one letter a-f (so that a bare ``-20230101`` is a
#: date, not a hash).
_HASH_IN_NAME = re.compile(
    r'(?:_[0-9]{8}-(?P<dated>[0-9a-f]{8,64})'
    r'|-(?P<hex>(?=[0-9]*[a-f])[0-9a-f]{8,64}))\.[^-]*$')


def _hash_prefix(file_name: str) -> Optional[str]:
    """The SHA256 prefix ``file_name`` carries (see :data:`_HASH_IN_NAME`), or None."""
    match = _HASH_IN_NAME.search(file_name)
    return (match.group('dated') or match.group('hex')) if match else None


def _cache_file(url: str, model_dir: Optional[str] = None) -> str:
    """``<model_dir or torch.hub.get_dir()/checkpoints>/<basename of the URL path>``,
    the file torch.hub (and so MMEngine) caches ``url`` in; creates the folder."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    name = osp.basename(urlparse(url).path)
    if not name:
        raise ValueError(f'Cannot name a cache file after {url}: its path has no file '
                         'name.')
    os.makedirs(model_dir, exist_ok=True)
    return osp.join(model_dir, name)


def _download(url: str, cached_file: str, progress: bool) -> None:
    """Download ``url`` to ``cached_file`` atomically, checking the SHA256 prefix the
    file name carries, if any (see the module docstring)."""
    hash_prefix = _hash_prefix(osp.basename(cached_file))
    print_log(f'Downloading "{url}" to {cached_file}', logger='current')
    try:
        torch.hub.download_url_to_file(url, cached_file, hash_prefix, progress=progress)
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
        reason = getattr(e, 'reason', None) if not isinstance(
            e, urllib.error.HTTPError) else None
        raise CheckpointDownloadError(
            f'Cannot download {url}: {reason or e}. Nothing was kept. '
            + pretrained.how_to_get(url, cached_file)) from None
    except RuntimeError as e:
        if hash_prefix is None or 'hash' not in str(e):
            raise
        raise RuntimeError(
            f'The download of {url} does not match the SHA256 prefix {hash_prefix} in its '
            f'file name ({e}); it was not kept. The download was corrupted or the file '
            'on the server is not the one the name promises. If you trust the file '
            'anyway, download it yourself and load the local path, or place it at '
            f'{cached_file} (files in the download cache are not re-hashed); it is '
            'still loaded weights-only.') from None


def _load_url(url: str, model_dir: Optional[str], map_location: Any,
              progress: bool) -> Any:
    """Load ``url`` from the download cache, downloading it first if it is not there."""
    cached_file = _cache_file(url, model_dir)
    if not osp.exists(cached_file):
        _download(url, cached_file, progress)
    return load_checkpoint_file(
        cached_file, map_location, url=url,
        cache_dir=pretrained.converted_cache_dir(osp.dirname(cached_file)))


#: Errors the other ranks re-raise when rank 0 fails, most specific first: rank 0's
#: error is sent as the first of these it is an instance of.
_SHARED_ERRORS: Tuple[Type[Exception], ...] = (
    UnsafeCheckpointError, CorruptCheckpointError, CheckpointDownloadError,
    FileNotFoundError, OSError, ValueError, TypeError, RuntimeError)


def _shareable(error: Exception) -> List[str]:
    """``[class name, message]`` of rank 0's ``error``, for the other ranks.

    Only strings are sent, so the other ranks unpickle nothing else.  An error of
    another class (e.g. ``urllib.error.HTTPError``) is sent as the nearest class of
    :data:`_SHARED_ERRORS` (else ``RuntimeError``) with its own class name in front
    of the message.
    """
    shared = next((cls for cls in _SHARED_ERRORS if isinstance(error, cls)),
                  RuntimeError)
    message = str(error) if type(error) is shared else f'{type(error).__name__}: {error}'
    return [shared.__name__, message]


def _raise_shared(outcome: List[str], rank: int, url: str) -> None:
    """Raise ``rank``'s error, as :func:`_shareable` sent it, on this rank, its message
    prefixed with ``rank <rank> failed to load <url>: ``."""
    name, message = outcome
    cls = next((c for c in _SHARED_ERRORS if c.__name__ == name), RuntimeError)
    raise cls(f'rank {rank} failed to load {url}: {message}')


def load_from_http_safe(filename: str, map_location: Any = None,
                        model_dir: Optional[str] = None,
                        progress: bool = os.isatty(0)) -> Any:
    """MMEngine ``CheckpointLoader`` backend for ``http://`` and ``https://`` URLs.

    Same arguments and download cache as MMEngine's ``load_from_http``: rank 0
    downloads (unless cached) and loads first; in distributed runs the other ranks
    then receive its outcome: on success they load from the cache, on failure they
    raise the same error class and message as rank 0, prefixed with
    ``rank 0 failed to load <url>: `` (an error class outside :data:`_SHARED_ERRORS`
    arrives as the nearest one of them, e.g. ``OSError`` for ``HTTPError``, its name
    in front of the message).  Then every rank shares its own outcome: if another
    rank failed to load (its own download, a damaged cache copy ...), this rank
    raises that rank's error the same way, naming it; a rank that failed raises its
    own error.  The cached file is loaded with the allowlist, so refusals name the URL
    and the cache file.

    Args:
        filename (str): The URL.
        map_location: As for :func:`torch.load`.
        model_dir (str, optional): Cache folder.  Defaults to
            ``<torch.hub.get_dir()>/checkpoints``.
        progress (bool): Show a download progress bar.

    Raises:
        UnsafeCheckpointError: As ``safe_load``.
        CorruptCheckpointError: As ``safe_load``; the message names the cache file to
            delete.
        RuntimeError: A fresh download does not match the SHA256 prefix in its name.
    """
    return _rank_zero_first(lambda: _load_url(filename, model_dir, map_location, progress),
                            filename)


def _rank_zero_first(load: Callable[[], Any], name: str) -> Any:
    """Run ``load`` on rank 0, then (if it succeeded) on the other ranks, sharing every
    rank's failure as :func:`load_from_http_safe` describes; ``name`` (the URL or
    path) is named in the shared errors.  One process: just ``load()``."""
    rank, world_size = get_dist_info()
    if world_size == 1:
        return load()
    outcome: List[Optional[List[str]]] = [None]
    if rank == 0:
        try:
            checkpoint = load()
        except Exception as e:
            outcome = [_shareable(e)]
            broadcast_object_list(outcome, src=0)
            raise
    broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        _raise_shared(outcome[0], 0, name)
    error: Optional[Exception] = None
    if rank > 0:
        try:
            checkpoint = load()
        except Exception as e:
            error = e
    # every rank has loaded (or failed): one more collective, so that a rank failing
    # alone does not leave the others waiting for it at their next collective
    outcomes = all_gather_object(None if error is None else _shareable(error))
    if error is not None:
        raise error
    failed = next(((r, o) for r, o in enumerate(outcomes) if o is not None), None)
    if failed is not None:
        _raise_shared(failed[1], failed[0], name)
    return checkpoint


# ----------------------------------------------------------------------------
# model-zoo names: open-mmlab://, mmcls://, torchvision://
# ----------------------------------------------------------------------------
def _strip_prefix(filename: str, prefixes: Tuple[str, ...]) -> Tuple[str, str]:
    """``(prefix, name)`` for the first of ``prefixes`` that ``filename`` starts with."""
    for prefix in prefixes:
        if filename.startswith(prefix):
            return prefix, filename[len(prefix):]
    raise ValueError(f'{filename} does not start with any of {prefixes}.')


def load_from_torchvision_safe(filename: str, map_location: Any = None) -> Any:
    """``torchvision://<name>`` (or the deprecated ``modelzoo://<name>``): the URL from
    MMEngine's ``get_torchvision_models()``, loaded by :func:`load_from_http_safe`."""
    prefix, model_name = _strip_prefix(filename, ('torchvision://', 'modelzoo://'))
    if prefix == 'modelzoo://':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use '
                  '"torchvision://" instead', logger='current', level=logging.WARNING)
    url = mmengine_checkpoint.get_torchvision_models()[model_name]
    return load_from_http_safe(url, map_location=map_location)


def load_from_openmmlab_safe(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://<name>`` or ``openmmlab://<name>``: resolved (deprecated names
    first) through MMEngine's ``get_deprecated_model_names()`` and
    ``get_external_models()``; a URL is loaded by :func:`load_from_http_safe`, any other
    entry as a file under the MMEngine home by :func:`load_from_local_safe`."""
    prefix, model_name = _strip_prefix(filename, ('open-mmlab://', 'openmmlab://'))
    deprecated = mmengine_checkpoint.get_deprecated_model_names()
    if model_name in deprecated:
        print_log(f'{prefix}{model_name} is deprecated in favor of '
                  f'{prefix}{deprecated[model_name]}', logger='current',
                  level=logging.WARNING)
        model_name = deprecated[model_name]
    model_url = mmengine_checkpoint.get_external_models()[model_name]
    if model_url.startswith(('http://', 'https://')):
        return load_from_http_safe(model_url, map_location=map_location)
    return load_from_local_safe(
        osp.join(mmengine_checkpoint._get_mmengine_home(), model_url), map_location)


def load_from_mmcls_safe(filename: str, map_location: Any = None) -> Any:
    """``mmcls://<name>``: the URL from MMEngine's ``get_mmcls_models()``, loaded by
    :func:`load_from_http_safe` and reduced to the backbone by MMEngine's
    ``_process_mmcls_checkpoint``."""
    _, model_name = _strip_prefix(filename, ('mmcls://', ))
    url = mmengine_checkpoint.get_mmcls_models()[model_name]
    checkpoint = load_from_http_safe(url, map_location=map_location)
    return mmengine_checkpoint._process_mmcls_checkpoint(checkpoint)


def load_from_dm_nfnets_safe(filename: str, map_location: Any = None) -> Any:
    """``dm-nfnets://F0`` ... ``dm-nfnets://F6``: DeepMind's released weights of that
    variant (the URL from :func:`~nfnets_mm.converters.pretrained.dm_weights_url`, i.e.
    ``get_variant(name).dm_weights_url``), loaded, converted and cached by
    :func:`load_from_http_safe`."""
    _, name = _strip_prefix(filename, (pretrained.DM_SCHEME, ))
    return load_from_http_safe(pretrained.dm_weights_url(name), map_location=map_location)


# ----------------------------------------------------------------------------
# every other scheme, and the installation
# ----------------------------------------------------------------------------
def make_safe_loader(loader: Callable) -> Callable:
    """Wrap a ``CheckpointLoader`` backend so that every ``torch.load`` it makes is
    weights-only and sees the allowlist (``load_with_allowlist`` with
    ``force_weights_only=True``); refusals become ``UnsafeCheckpointError`` naming the
    path.  Loaders of this module (marked ``_nfnets_mm_safe``) are returned unchanged."""
    if getattr(loader, '_nfnets_mm_safe', False):
        return loader

    @functools.wraps(loader)
    def safe_scheme_loader(filename: str, map_location: Any = None, *args, **kwargs):
        return load_with_allowlist(
            filename, lambda: loader(filename, map_location, *args, **kwargs),
            force_weights_only=True)

    safe_scheme_loader._nfnets_mm_safe = True
    return safe_scheme_loader


#: Our loaders, by the ``CheckpointLoader`` prefixes and the MMEngine function they replace.
_SAFE_LOADERS = (
    ('', 'load_from_local', load_from_local_safe),
    (('http://', 'https://'), 'load_from_http', load_from_http_safe),
    (('open-mmlab://', 'openmmlab://'), 'load_from_openmmlab', load_from_openmmlab_safe),
    ('mmcls://', 'load_from_mmcls', load_from_mmcls_safe),
    (('modelzoo://', 'torchvision://'), 'load_from_torchvision',
     load_from_torchvision_safe),
    (pretrained.DM_SCHEME, None, load_from_dm_nfnets_safe),
)


def _secure_loader_lookup() -> None:
    """Make ``CheckpointLoader._get_checkpoint_loader`` return every loader through
    :func:`make_safe_loader`, covering schemes registered after this import."""
    lookup = CheckpointLoader.__dict__['_get_checkpoint_loader'].__func__
    if getattr(lookup, '_nfnets_mm_safe', False):
        return

    def _get_checkpoint_loader(cls, path):
        loader = lookup(cls, path)
        return None if loader is None else make_safe_loader(loader)

    _get_checkpoint_loader._nfnets_mm_safe = True
    _get_checkpoint_loader.__doc__ = lookup.__doc__
    CheckpointLoader._get_checkpoint_loader = classmethod(_get_checkpoint_loader)


def secure_registered_schemes() -> None:
    """Install this module into MMEngine as the module docstring describes: our loaders
    for their prefixes and in place of MMEngine's module functions, every other
    registered loader wrapped by :func:`make_safe_loader`, and the wrapping of loaders
    registered later.  Idempotent; called at import."""
    for prefixes, mmengine_name, loader in _SAFE_LOADERS:
        loader._nfnets_mm_safe = True
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
        if mmengine_name is not None:
            setattr(mmengine_checkpoint, mmengine_name, loader)
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, '_nfnets_mm_safe', False):
            CheckpointLoader.register_scheme(
                prefixes=prefix, loader=make_safe_loader(loader), force=True)
    for name in ('load_from_pavi', 'load_from_ceph'):
        if hasattr(mmengine_checkpoint, name):
            setattr(mmengine_checkpoint, name,
                    make_safe_loader(getattr(mmengine_checkpoint, name)))
    _secure_loader_lookup()
    pretrained.install_arch_check()


secure_registered_schemes()
