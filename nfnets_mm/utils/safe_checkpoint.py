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
:class:`UnsafeCheckpointError`.

Importing this module registers :func:`load_from_local_safe` as MMEngine's loader for
local paths (``CheckpointLoader`` prefix ``''``), so ``Runner(load_from=...)``,
``Runner(resume=True)``, ``mmengine.runner.load_checkpoint`` and ``init_cfg=dict(
type='Pretrained', checkpoint=<local file>)`` all load safely.  MMEngine's remote
schemes (``http(s)://``, ``open-mmlab://`` ...) keep their download logic, wrapped so
that their ``torch.load`` sees the same allowlist (:func:`secure_registered_schemes`).
"""
import os
import os.path as osp
import pickle
import re
from typing import Any, Callable, Dict, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

__all__ = ['ALLOWLIST', 'UnsafeCheckpointError', 'safe_load', 'load_from_local_safe',
           'allowlisted_names', 'make_safe_loader', 'secure_registered_schemes']

SafeGlobal = Union[Callable, Tuple[Callable, str]]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a pickled global that weights-only loading refuses."""


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
# loading
# ----------------------------------------------------------------------------
_OFFENDER_PATTERNS = (
    re.compile(r'Unsupported global: GLOBAL (\S+?(?:\([^)]*\))?)(?: was|;|\s|$)'),
    re.compile(r'Trying to load unsupported GLOBAL (\S+)'),
    re.compile(r'but got (<[^>]+>)'),
    re.compile(r'unrecognized function (.+?)(?: which belongs|$)', re.M),
)


def _offending_global(message: str) -> Tuple[str, str]:
    """``(offending global, the line of PyTorch's message naming it)``."""
    for pattern in _OFFENDER_PATTERNS:
        match = pattern.search(message)
        if match:
            start = message.rfind('\n', 0, match.start()) + 1
            end = message.find('\n', match.end())
            line = message[start:end if end >= 0 else len(message)]
            return match.group(1), line.strip()
    return 'an object that weights-only unpickling does not support', message.strip()


def _describe(f: Any) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, 'name', None) or repr(f)


def _unsafe_error(f: Any, message: str) -> UnsafeCheckpointError:
    name = _describe(f)
    offender, detail = _offending_global(message)
    return UnsafeCheckpointError(
        f'Refusing to load checkpoint {name}: it contains the pickled global {offender}, '
        'which is not on the nfnets_mm allowlist for weights-only loading (unpickling '
        'it could run arbitrary code). If this file is from a source you trust, '
        're-save it as a plain checkpoint once and load that instead, e.g. '
        f'`ckpt = torch.load({name!r}, weights_only=False); '
        "torch.save({'state_dict': ckpt['state_dict']}, 'converted.pth')`, or, if the "
        'global is a harmless data type, allow it for one load with '
        '`with torch.serialization.safe_globals([...]):`. Never disable weights-only '
        f'loading globally. (PyTorch: {detail[:400]})')


def _missing_safe_globals() -> List[SafeGlobal]:
    """The part of :data:`ALLOWLIST` not yet allowed (so the context removes only ours)."""
    present = torch.serialization.get_safe_globals()
    return [g for g in ALLOWLIST if g not in present]


def safe_load(f: Union[str, os.PathLike, Any], map_location: Any = None) -> Any:
    """``torch.load(f, map_location, weights_only=True)`` with :data:`ALLOWLIST`.

    Args:
        f (str | PathLike | file-like): The checkpoint.
        map_location: As for :func:`torch.load`.

    Returns:
        The loaded object (usually a dict with ``state_dict``, ``meta`` ...).

    Raises:
        UnsafeCheckpointError: The file holds a global outside the allowlist.  Nothing
            from it is executed.
    """
    return _load_with_allowlist(
        f, lambda: torch.load(f, map_location=map_location, weights_only=True))


def _load_with_allowlist(f: Any, load: Callable[[], Any]) -> Any:
    """Run ``load`` (which calls ``torch.load`` with ``weights_only=True``, explicitly
    or by torch's default) with :data:`ALLOWLIST` active, turning refusals into
    :class:`UnsafeCheckpointError`."""
    stats_before = dict(HistoryBuffer._statistics_methods)
    try:
        with torch.serialization.safe_globals(_missing_safe_globals()):
            checkpoint = load()
    except pickle.UnpicklingError as e:
        raise _unsafe_error(f, str(e)) from None
    _check_history_buffer_methods(f, stats_before)
    return checkpoint


def _check_history_buffer_methods(f: Any, before: Dict[str, Callable]) -> None:
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
            'is not one of HistoryBuffer\'s own statistics methods.')


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """MMEngine ``CheckpointLoader`` backend for local files using :func:`safe_load`.

    Registered for the empty prefix (every path no other scheme claims), replacing
    MMEngine's ``load_from_local``.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load(filename, map_location=map_location)


def make_safe_loader(loader: Callable) -> Callable:
    """Wrap an MMEngine scheme loader (``http://``, ``open-mmlab://`` ...) so that the
    ``torch.load`` inside it (weights-only by torch's default) sees :data:`ALLOWLIST`
    and refusals become :class:`UnsafeCheckpointError`."""
    if getattr(loader, '_nfnets_mm_safe', False):
        return loader

    def safe_scheme_loader(filename: str, map_location: Any = None) -> Any:
        return _load_with_allowlist(filename, lambda: loader(filename, map_location))

    safe_scheme_loader._nfnets_mm_safe = True
    safe_scheme_loader.__doc__ = f'{getattr(loader, "__name__", loader)} with the allowlist.'
    return safe_scheme_loader


def secure_registered_schemes() -> None:
    """Make every MMEngine checkpoint scheme load with the allowlist: local files through
    :func:`load_from_local_safe`, remote schemes through their own loader wrapped by
    :func:`make_safe_loader`.  Idempotent; called at import."""
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if prefix and not getattr(loader, '_nfnets_mm_safe', False):
            CheckpointLoader.register_scheme(prefixes=prefix, loader=make_safe_loader(loader),
                                             force=True)
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safe, force=True)


load_from_local_safe._nfnets_mm_safe = True
secure_registered_schemes()
