"""Weights-only checkpoint loading for MMEngine under ``torch >= 2.6``.

Since PyTorch 2.6 ``torch.load`` defaults to ``weights_only=True``, which refuses any
pickled global outside a small allowlist.  MMEngine 0.10.7 calls
``torch.load(filename, map_location)`` and its checkpoints hold more than tensors: the
message hub's :class:`~mmengine.logging.HistoryBuffer` objects (NumPy arrays inside,
plus the buffer's statistics methods pickled as ``getattr(HistoryBuffer, 'mean')``),
NumPy scalars (e.g. ``eta``) and arrays in ``dataset_meta``.  So resuming or loading an
MMEngine checkpoint fails by default.

This module loads checkpoints with ``weights_only=True`` inside
``torch.serialization.safe_globals(ALLOWLIST)``: exactly the globals MMEngine,
MMPretrain and MMDetection checkpoints need (found by saving real runs, including
EMA and AMP ones, and reading the refusals), nothing more, and only for the duration
of one load.  ``builtins.getattr`` is *not* allowed; a stand-in that only returns
``HistoryBuffer``'s own ``min``/``max``/``mean``/``current`` takes its name.
Anything else (``os.system``, arbitrary classes ...) is refused with
:class:`UnsafeCheckpointError` before it runs.  A file that is empty, truncated or not
a PyTorch checkpoint at all raises :class:`CorruptCheckpointError` naming the file, its
size and what to do.

Importing this module (``import nfnets_mm`` does) installs it into MMEngine's
``CheckpointLoader``, which ``Runner(load_from=...)``, ``Runner(resume=True)``,
``mmengine.runner.load_checkpoint`` and ``init_cfg=dict(type='Pretrained', ...)`` all
use:

* local paths (prefix ``''``): :func:`load_from_local_safe`, i.e. :func:`safe_load`.
* ``http://``, ``https://``: :func:`load_from_http_safe`.  It downloads like MMEngine
  (``torch.hub.load_state_dict_from_url``) does, into the same cache file
  ``<torch.hub.get_dir()>/checkpoints/<basename of the URL path>`` with
  ``torch.hub.download_url_to_file`` (atomic: a partial download is never left in the
  cache), rank 0 first, the other ranks after a barrier; then it loads the cached file
  with :func:`safe_load`.  Unlike MMEngine (which calls torch.hub with
  ``weights_only=False``, so the allowlist never applied) nothing is ever unpickled
  outside the allowlist.  When the file name ends in ``-<8 to 64 hex digits>.<ext>``
  (the OpenMMLab and torchvision convention for a SHA256 prefix, as torch.hub's
  ``check_hash``) a fresh download must match it or it is discarded; files already in
  the cache are not re-hashed.  torch.hub's deprecated single-file zip archives are
  not unpacked.
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
  overrides even an explicit ``weights_only=False``) and sees the allowlist.  The
  wrapping happens when ``CheckpointLoader`` looks a loader up, so registration order
  does not matter.  A loader that unpickles without ``torch.load`` is not covered.

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot switch any of this off: PyTorch applies it
only to ``torch.load`` calls that do not pass ``weights_only``, :func:`safe_load` passes
``weights_only=True`` and :func:`make_safe_loader` lifts the variable for the duration
of its load.

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
import pickle
import re
import tarfile
import threading
import zipfile
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mmengine_checkpoint

__all__ = ['ALLOWLIST', 'UnsafeCheckpointError', 'CorruptCheckpointError', 'safe_load',
           'load_from_local_safe', 'load_from_http_safe', 'load_from_openmmlab_safe',
           'load_from_mmcls_safe', 'load_from_torchvision_safe', 'allowlisted_names',
           'make_safe_loader', 'secure_registered_schemes']

SafeGlobal = Union[Callable, Tuple[Callable, str]]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a pickled global that weights-only loading refuses."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is empty, truncated or not a PyTorch checkpoint at all.

    The message names the file (and the URL it was downloaded from), its size, the
    likely cause and what to do.
    """


# ----------------------------------------------------------------------------
# the allowlist
# ----------------------------------------------------------------------------
#: ``HistoryBuffer`` statistics methods a checkpoint may reference through ``getattr``.
HISTORY_BUFFER_METHODS = ('min', 'max', 'mean', 'current')


def _history_buffer_getattr(obj: Any, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` while unpickling.

    Python pickles ``HistoryBuffer.mean`` (a function with a dotted ``__qualname__``)
    as ``getattr(HistoryBuffer, 'mean')``.  Only those four lookups are allowed; a
    general ``getattr`` would let a checkpoint reach arbitrary attributes.
    """
    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr({obj!r}, {name!r}); only '
        f'getattr(HistoryBuffer, name) for name in {HISTORY_BUFFER_METHODS} is allowed.')


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _numpy_globals() -> List[SafeGlobal]:
    """NumPy arrays, scalars and dtypes (not object arrays), under numpy 1.x and 2.x names.

    A pickle names ``_reconstruct``/``scalar`` by the module of the numpy that wrote it
    (``numpy.core.multiarray`` for 1.x, ``numpy._core.multiarray`` for 2.x), so both
    names map to the installed functions.  Dtype instances are checked by their class
    (``numpy.dtypes.Float64DType`` ...) when the unpickler restores their state.
    """
    multiarray = _numpy_multiarray()
    out: List[SafeGlobal] = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out.append((multiarray._reconstruct, f'{module}._reconstruct'))
        out.append((multiarray.scalar, f'{module}.scalar'))
    codes = ['?', 'b', 'B', 'h', 'H', 'i', 'I', 'l', 'L', 'q', 'Q', 'e', 'f', 'd', 'g',
             'F', 'D', 'G', 'S1', 'U1', 'M8[ns]', 'm8[ns]']
    dtype_classes = []
    for code in codes:
        cls = type(np.dtype(code))
        if cls is not np.dtype and cls not in dtype_classes:
            dtype_classes.append(cls)
    return out + dtype_classes


def _build_allowlist() -> Tuple[SafeGlobal, ...]:
    allow: List[SafeGlobal] = [
        # MessageHub log_scalars: {'train/loss': HistoryBuffer, ...}
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
    ]
    allow += _numpy_globals()
    return tuple(allow)


#: Globals (or ``(object, pickled name)`` pairs) allowed while loading a checkpoint.
#: Found empirically from MMEngine ``Runner`` checkpoints of MMPretrain / MMDetection
#: models, plain, with ``EMAHook`` and with ``AmpOptimWrapper`` (whose ``loss_scaler``
#: state holds only Python numbers): the message hub's ``HistoryBuffer`` (+ its
#: statistics methods via ``getattr``), NumPy ``_reconstruct``/``ndarray``/``dtype`` and
#: dtype classes (arrays in ``HistoryBuffer`` and ``dataset_meta``) and NumPy ``scalar``
#: (``runtime_info['eta']`` ...).  Tensors, ``OrderedDict``, ``torch.device`` ... are
#: allowed by PyTorch itself.
ALLOWLIST: Tuple[SafeGlobal, ...] = _build_allowlist()


def allowlisted_names() -> List[str]:
    """The pickled names :data:`ALLOWLIST` admits, e.g. ``'numpy.ndarray'``."""
    names = []
    for item in ALLOWLIST:
        if isinstance(item, tuple):
            names.append(item[1])
        else:
            names.append(f'{item.__module__}.{item.__qualname__}')
    return names


# ----------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------
_OFFENDER_PATTERNS = (
    re.compile(r'Unsupported global: GLOBAL (\S+?(?:\([^)]*\))?)(?: was|;|\s|$)'),
    re.compile(r'Trying to load unsupported GLOBAL (\S+)'),
    re.compile(r'but got (<[^>]+>)'),
    re.compile(r'unrecognized function (.+?)(?: which belongs|$)', re.M),
)

#: Messages of ``RuntimeError``s PyTorch raises for damaged files.
_DAMAGE_HINT = re.compile(r'unexpected EOF|failed reading zip archive|central directory|'
                          r'file might be corrupted|checkpoint file is corrupted')


def _match_offender(message: str) -> Optional[Tuple[str, str]]:
    """``(offending global, the line of PyTorch's message naming it)`` or ``None``."""
    for pattern in _OFFENDER_PATTERNS:
        match = pattern.search(message)
        if match:
            start = message.rfind('\n', 0, match.start()) + 1
            end = message.find('\n', match.end())
            line = message[start:end if end >= 0 else len(message)]
            return match.group(1), line.strip()
    return None


def _describe(f: Any) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, 'name', None) or repr(f)


def _label(f: Any, url: Optional[str]) -> str:
    """How messages name a checkpoint: the file, or ``URL (cached as file)``."""
    return f'{url} (cached as {_describe(f)})' if url else _describe(f)


def _unsafe_error(f: Any, message: str, url: Optional[str] = None) -> UnsafeCheckpointError:
    name = _describe(f)
    offender, detail = _match_offender(message) or (
        'an object that weights-only unpickling does not support', message.strip())
    return UnsafeCheckpointError(
        f'Refusing to load checkpoint {_label(f, url)}: it contains the pickled global '
        f'{offender}, which is not on the nfnets_mm allowlist for weights-only loading '
        '(unpickling it could run arbitrary code). If this file is from a source you '
        'trust, re-save it as a plain checkpoint once and load that instead, e.g. '
        f'`ckpt = torch.load({name!r}, weights_only=False); '
        "torch.save({'state_dict': ckpt['state_dict']}, 'converted.pth')`, or, if the "
        'global is a harmless data type, allow it for one load with '
        '`with torch.serialization.safe_globals([...]):`. Never disable weights-only '
        f'loading globally. (PyTorch: {detail[:400]})')


_TRUNCATED = 'it was cut short, e.g. by an interrupted save, copy or download'
_WRONG_FILE = ('the path or URL points at something else, e.g. an HTML error page '
               'saved in place of the checkpoint')


def _damage(f: Any) -> Optional[Tuple[str, str]]:
    """``(what is wrong, likely cause)`` when the local file ``f`` cannot be a complete
    PyTorch checkpoint; ``None`` when it looks whole (or is not a local file).

    Only the framing is checked: the zip end record of the current format, the pickle
    or tar start of the legacy formats.  Called only after a load has failed.
    """
    if not isinstance(f, (str, os.PathLike)) or not osp.isfile(f):
        return None
    if osp.getsize(f) == 0:
        return 'the file is empty', _TRUNCATED
    with open(f, 'rb') as fh:
        head = fh.read(8)
    if head.startswith(b'PK\x03\x04'):  # torch.save's zip format (torch >= 1.6)
        if not zipfile.is_zipfile(f):
            return 'the zip archive has no end record, so the file is truncated', _TRUNCATED
        with zipfile.ZipFile(f) as zf:
            names = zf.namelist()
        if not any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
            return ('it is a zip archive without data.pkl, not a PyTorch checkpoint '
                    "(torch.hub's deprecated single-file zip archives are not unpacked)",
                    _WRONG_FILE)
        return None
    if head.startswith(b'\x80') or tarfile.is_tarfile(f):  # legacy formats
        return None
    return f'it is not a PyTorch checkpoint (it starts with {head!r})', _WRONG_FILE


def _corrupt_error(f: Any, what: str, cause: str,
                   url: Optional[str] = None) -> CorruptCheckpointError:
    details = [f'cached as {_describe(f)}'] if url else []
    if isinstance(f, (str, os.PathLike)) and osp.isfile(f):
        details.append(f'{osp.getsize(f)} bytes')
    where = url or _describe(f)
    if details:
        where += f' ({", ".join(details)})'
    if url:
        advice = (f'Delete the cached file {_describe(f)} and load again to download it '
                  'anew, or check the URL.')
    elif cause is _WRONG_FILE:
        advice = 'Check that the path names the checkpoint you mean.'
    else:
        advice = ('Use an earlier checkpoint (e.g. the previous one of the run) or save, '
                  'copy or download this one again.')
    return CorruptCheckpointError(
        f'Cannot load checkpoint {where}: {what}. Likely cause: {cause}. {advice}')


# ----------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------
def _missing_safe_globals() -> List[SafeGlobal]:
    """The part of :data:`ALLOWLIST` not yet allowed (so the context removes only ours)."""
    present = torch.serialization.get_safe_globals()
    return [g for g in ALLOWLIST if g not in present]


def safe_load(f: Union[str, os.PathLike, Any], map_location: Any = None) -> Any:
    """``torch.load(f, map_location, weights_only=True)`` with :data:`ALLOWLIST`.

    ``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    does not apply.

    Args:
        f (str | PathLike | file-like): The checkpoint.
        map_location: As for :func:`torch.load`.

    Returns:
        The loaded object (usually a dict with ``state_dict``, ``meta`` ...).

    Raises:
        UnsafeCheckpointError: The file holds a global outside the allowlist.  Nothing
            from it is executed.
        CorruptCheckpointError: The file is empty, truncated or not a checkpoint.
    """
    return _safe_load(f, map_location)


def _safe_load(f: Any, map_location: Any, url: Optional[str] = None) -> Any:
    """:func:`safe_load`; ``url``, if given, is where ``f`` was downloaded from."""
    return _load_with_allowlist(
        f, lambda: torch.load(f, map_location=map_location, weights_only=True), url)


def _load_with_allowlist(f: Any, load: Callable[[], Any], url: Optional[str] = None) -> Any:
    """Run ``load`` (which must unpickle only through weights-only ``torch.load``) with
    :data:`ALLOWLIST` active, turning refusals into :class:`UnsafeCheckpointError` and
    failures on damaged files into :class:`CorruptCheckpointError`."""
    stats_before = dict(HistoryBuffer._statistics_methods)
    try:
        with torch.serialization.safe_globals(_missing_safe_globals()):
            checkpoint = load()
    except (UnsafeCheckpointError, CorruptCheckpointError):
        raise  # from a safe loader called inside ``load``
    except pickle.UnpicklingError as e:
        damage = None if _match_offender(str(e)) else _damage(f)
        if damage:
            raise _corrupt_error(f, *damage, url=url) from e
        raise _unsafe_error(f, str(e), url) from None
    except Exception as e:  # garbage can fail the unpickler anywhere (IndexError ...)
        damage = _damage(f)
        if damage is None and (isinstance(e, EOFError) or _DAMAGE_HINT.search(str(e))):
            damage = 'the data ends before the checkpoint does', _TRUNCATED
        if damage:
            raise _corrupt_error(f, *damage, url=url) from e
        raise
    _check_history_buffer_methods(f, stats_before, url)
    return checkpoint


def _check_history_buffer_methods(f: Any, before: Dict[str, Callable],
                                  url: Optional[str] = None) -> None:
    """``HistoryBuffer.__setstate__`` merges the pickled statistics methods into the
    class-wide registry; refuse (and undo) anything but HistoryBuffer's own methods."""
    own = {getattr(HistoryBuffer, n) for n in HISTORY_BUFFER_METHODS}
    methods = HistoryBuffer._statistics_methods
    bad = {k: v for k, v in methods.items() if v is not before.get(k) and v not in own}
    if bad:
        methods.clear()
        methods.update(before)
        names = ', '.join(f'{k}={getattr(v, "__qualname__", v)!s}' for k, v in bad.items())
        raise _unsafe_error(
            f, f'Unsupported global: GLOBAL HistoryBuffer.statistics_methods[{names}] '
            'is not one of HistoryBuffer\'s own statistics methods.', url)


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """MMEngine ``CheckpointLoader`` backend for local files using :func:`safe_load`.

    Registered for the empty prefix (every path no other scheme claims), replacing
    MMEngine's ``load_from_local``.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load(filename, map_location=map_location)


# ----------------------------------------------------------------------------
# http(s)://
# ----------------------------------------------------------------------------
#: ``name-<sha256 prefix>.ext``: 8 to 64 lowercase hex digits before the extension.
_HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\.[^-]*$')


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
    match = _HASH_IN_NAME.search(osp.basename(cached_file))
    hash_prefix = match.group(1) if match else None
    print_log(f'Downloading "{url}" to {cached_file}', logger='current')
    try:
        torch.hub.download_url_to_file(url, cached_file, hash_prefix, progress=progress)
    except RuntimeError as e:
        if hash_prefix is None or 'hash' not in str(e):
            raise
        raise RuntimeError(
            f'The download of {url} does not match the SHA256 prefix {hash_prefix} in its '
            f'file name ({e}); it was not kept. The download was corrupted or the file '
            'on the server is not the one the name promises.') from None


def _load_url(url: str, model_dir: Optional[str], map_location: Any,
              progress: bool) -> Any:
    """Load ``url`` from the download cache, downloading it first if it is not there."""
    cached_file = _cache_file(url, model_dir)
    if not osp.exists(cached_file):
        _download(url, cached_file, progress)
    return _safe_load(cached_file, map_location, url=url)


def load_from_http_safe(filename: str, map_location: Any = None,
                        model_dir: Optional[str] = None,
                        progress: bool = os.isatty(0)) -> Any:
    """MMEngine ``CheckpointLoader`` backend for ``http://`` and ``https://`` URLs.

    Same arguments and download cache as MMEngine's ``load_from_http``: rank 0
    downloads (unless cached) and loads first; in distributed runs the other ranks wait
    at a barrier, then load from the cache.  The cached file is loaded with
    :func:`safe_load`, so refusals name the URL and the cache file.

    Args:
        filename (str): The URL.
        map_location: As for :func:`torch.load`.
        model_dir (str, optional): Cache folder.  Defaults to
            ``<torch.hub.get_dir()>/checkpoints``.
        progress (bool): Show a download progress bar.

    Raises:
        UnsafeCheckpointError: As :func:`safe_load`.
        CorruptCheckpointError: As :func:`safe_load`; the message names the cache file
            to delete.
        RuntimeError: A fresh download does not match the SHA256 prefix in its name.
    """
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = _load_url(filename, model_dir, map_location, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = _load_url(filename, model_dir, map_location, progress)
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


# ----------------------------------------------------------------------------
# every other scheme
# ----------------------------------------------------------------------------
_FORCE_WEIGHTS_ONLY = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_FORCE_NO_WEIGHTS_ONLY = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
_env_lock = threading.RLock()


@contextmanager
def _weights_only_forced() -> Iterator[None]:
    """Every ``torch.load`` in this block runs with ``weights_only=True``, even one that
    passes ``weights_only=False`` or ``pickle_module`` (PyTorch then refuses to load).

    Sets PyTorch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` and lifts
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` for the block, then restores both.  The
    environment is process-wide: ``torch.load`` in other threads is forced too while
    the block runs, and such blocks run one at a time.
    """
    with _env_lock:
        saved = {k: os.environ.get(k)
                 for k in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
        os.environ[_FORCE_WEIGHTS_ONLY] = '1'
        os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def make_safe_loader(loader: Callable) -> Callable:
    """Wrap a ``CheckpointLoader`` backend so that every ``torch.load`` it makes is
    weights-only (see :func:`_weights_only_forced`) and sees :data:`ALLOWLIST`;
    refusals become :class:`UnsafeCheckpointError` naming the path.  Loaders of this
    module (marked ``_nfnets_mm_safe``) are returned unchanged."""
    if getattr(loader, '_nfnets_mm_safe', False):
        return loader

    @functools.wraps(loader)
    def safe_scheme_loader(filename: str, map_location: Any = None, *args, **kwargs):
        with _weights_only_forced():
            return _load_with_allowlist(
                filename, lambda: loader(filename, map_location, *args, **kwargs))

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


secure_registered_schemes()
