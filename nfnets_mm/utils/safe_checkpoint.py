"""Weights-only checkpoint loading with the allowlist MMEngine checkpoints need.

Since PyTorch 2.6 ``torch.load`` defaults to ``weights_only=True``, which refuses any
pickled global outside a small allowlist.  MMEngine 0.10.7 calls
``torch.load(filename, map_location)`` and its checkpoints hold more than tensors: the
message hub's :class:`~mmengine.logging.HistoryBuffer` objects (NumPy arrays inside,
plus the buffer's statistics methods pickled as ``getattr(HistoryBuffer, 'mean')``),
NumPy scalars (e.g. ``eta``) and arrays in ``dataset_meta``.  So resuming or loading an
MMEngine checkpoint fails by default.

:func:`safe_load` loads checkpoints with ``weights_only=True`` inside
``torch.serialization.safe_globals(ALLOWLIST)``: exactly the globals MMEngine,
MMPretrain and MMDetection checkpoints need (found by saving real runs, including
EMA and AMP ones, and reading the refusals), nothing more, and only for the duration
of one load.  ``builtins.getattr`` is *not* allowed; a stand-in that only returns
``HistoryBuffer``'s own ``min``/``max``/``mean``/``current`` takes its name, and
statistics methods a checkpoint merges into ``HistoryBuffer``'s class-wide registry
are checked after the load (each must be unchanged or ``HistoryBuffer``'s own method
of that name) and undone whenever the load is refused or fails.  Anything else
(``os.system``, arbitrary classes ...) is refused with :class:`UnsafeCheckpointError`
before it runs.  A file that is empty, truncated or not a PyTorch checkpoint at all
raises :class:`CorruptCheckpointError` naming the file, its size and what to do.

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot switch this off: PyTorch applies it only
to ``torch.load`` calls that do not pass ``weights_only``, and :func:`safe_load` passes
``weights_only=True``.  :func:`load_with_allowlist` runs any loading function this way
(optionally forcing every ``torch.load`` in it to be weights-only);
:mod:`nfnets_mm.utils.checkpoint_schemes` uses it to secure every MMEngine
``CheckpointLoader`` scheme (local files, ``http(s)://``, the model zoos ...) at
``import nfnets_mm``.

Plain pickles that are not PyTorch checkpoints (DeepMind's ``F*_haiku.npz``: dicts of
NumPy arrays) are read by :class:`RestrictedUnpickler` (:func:`restricted_load`), the
package's one unpickler for them: it admits the NumPy part of :data:`ALLOWLIST` and
builtin containers and refuses every other global with :class:`UnsafePickleError` (an
``UnsafeCheckpointError``) before it is imported.

Threads: PyTorch's safe-globals set, ``HistoryBuffer``'s statistics registry and the
environment are process-wide, so loads through this module run one at a time (an
``RLock``, per thread: a loader may call another one safely in the same thread).
While one runs, a plain ``torch.load(..., weights_only=True)`` in another thread also
admits :data:`ALLOWLIST` (only harmless data types) and, during a forced load, every
``torch.load`` of the process is weights-only.
"""
import os
import os.path as osp
import pickle
import re
import tarfile
import threading
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['ALLOWLIST', 'HISTORY_BUFFER_METHODS', 'UnsafeCheckpointError',
           'UnsafePickleError', 'CorruptCheckpointError', 'RestrictedUnpickler',
           'restricted_load', 'safe_load', 'load_with_allowlist', 'allowlisted_names']

SafeGlobal = Union[Callable, Tuple[Callable, str]]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a pickled global that weights-only loading refuses."""


class UnsafePickleError(UnsafeCheckpointError, pickle.UnpicklingError):
    """A plain pickle (not a PyTorch checkpoint) references a global that
    :class:`RestrictedUnpickler` refuses; nothing from it was executed.  Both an
    :class:`UnsafeCheckpointError` and a ``pickle.UnpicklingError``."""


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


def _numpy_numeric():
    try:
        from numpy._core import numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import numeric
    return numeric


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
# plain pickles (DeepMind's F*_haiku.npz): the package's one restricted unpickler
# ----------------------------------------------------------------------------
def _latin1_encode(text: str, encoding: str = 'latin1') -> bytes:
    """``_codecs.encode`` as protocol <= 2 pickles of ``bytes`` use it, nothing else."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise UnsafePickleError('refusing _codecs.encode with anything but (str, "latin1").')
    return text.encode('latin1')


def _restricted_globals() -> Dict[Tuple[str, str], Any]:
    """``(module, name) -> object`` that :class:`RestrictedUnpickler` may rebuild: the
    NumPy part of :data:`ALLOWLIST` (arrays, dtypes, scalars, under numpy 1.x and 2.x
    names), ``_frombuffer`` (protocol-5 arrays), builtin containers and the latin-1
    ``bytes`` helper.  No ``HistoryBuffer``: plain pickles are parameter dicts."""
    allowed: Dict[Tuple[str, str], Any] = {}
    for item in _numpy_globals():
        obj, name = item if isinstance(item, tuple) else (item, None)
        if name is None:
            name = f'{obj.__module__}.{obj.__qualname__}'
        module, _, attr = name.rpartition('.')
        allowed[(module, attr)] = obj
    for module in ('numpy.core.numeric', 'numpy._core.numeric'):
        allowed[(module, '_frombuffer')] = _numpy_numeric()._frombuffer
    for container in (dict, list, tuple, set, frozenset, bytearray):
        allowed[('builtins', container.__name__)] = container
    allowed[('collections', 'OrderedDict')] = OrderedDict
    allowed[('_codecs', 'encode')] = _latin1_encode
    # Haiku's immutable parameter dict pickles as ``frozendict(storage_dict)``; it is
    # rebuilt as a plain dict (nothing of Haiku is imported or run).  Haiku's later
    # ``FlatMapping`` (jaxlib tree structures) and JAX arrays are not rebuilt: refused.
    allowed[('haiku._src.data_structures', 'frozendict')] = _plain_dict
    return allowed


def _plain_dict(mapping: Any = ()) -> dict:
    """Stand-in for Haiku's ``frozendict``: a plain ``dict`` of the same items."""
    if not isinstance(mapping, (dict, list, tuple)):
        raise UnsafePickleError('refusing a Haiku frozendict built from '
                                f'{type(mapping).__name__}, not a dict.')
    try:
        return dict(mapping)
    except (TypeError, ValueError) as error:
        raise UnsafePickleError(f'refusing a malformed Haiku frozendict: {error}') from None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for plain pickles of parameters: it rebuilds only NumPy arrays,
    dtypes and scalars and builtin containers (:func:`_restricted_globals`).

    Any other global (``os.system``, ``builtins.eval``, a Haiku or JAX class ...) is
    refused with :class:`UnsafePickleError` before it is imported, so loading an
    untrusted file cannot execute code.  PyTorch checkpoints go through
    :func:`safe_load` instead (their tensors need PyTorch's own weights-only
    unpickler); both admit the same NumPy globals.
    """

    _ALLOWED: Optional[Dict[Tuple[str, str], Any]] = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _restricted_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f'refusing to load global {module}.{name} from the pickle: only a (nested) '
                'dict of numpy arrays is accepted (allowed globals: numpy array/dtype/scalar '
                'reconstruction and builtin containers).') from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError('refusing a pickle with persistent ids.')


def restricted_load(stream: Any) -> Any:
    """Unpickle one object from the binary file ``stream`` with
    :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(stream).load()


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
#: Held around every load of this module (see the module docstring).
_LOAD_LOCK = threading.RLock()

_FORCE_WEIGHTS_ONLY = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_FORCE_NO_WEIGHTS_ONLY = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


def _missing_safe_globals() -> List[SafeGlobal]:
    """The part of :data:`ALLOWLIST` not allowed already (e.g. by the user's
    ``torch.serialization.add_safe_globals``), so that leaving the context removes
    only what it added."""
    present = torch.serialization.get_safe_globals()
    return [g for g in ALLOWLIST if g not in present]


@contextmanager
def _weights_only_forced() -> Iterator[None]:
    """Every ``torch.load`` in this block runs with ``weights_only=True``, even one that
    passes ``weights_only=False`` or ``pickle_module`` (PyTorch then refuses to load).

    Sets PyTorch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` and lifts
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` for the block, then restores both.  The
    environment is process-wide: ``torch.load`` in other threads (and processes
    started meanwhile) is forced too while the block runs.  Call with
    ``_LOAD_LOCK`` held.
    """
    saved = {k: os.environ.get(k) for k in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
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


def safe_load(f: Union[str, os.PathLike, Any], map_location: Any = None) -> Any:
    """``torch.load(f, map_location, weights_only=True)`` with :data:`ALLOWLIST`.

    ``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    does not apply.  Thread-safe (loads run one at a time).

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
    return load_with_allowlist(
        f, lambda: torch.load(f, map_location=map_location, weights_only=True))


def load_with_allowlist(f: Any, load: Callable[[], Any], url: Optional[str] = None,
                        force_weights_only: bool = False) -> Any:
    """Run ``load`` (which must unpickle only through weights-only ``torch.load``) with
    :data:`ALLOWLIST` active, turning refusals into :class:`UnsafeCheckpointError` and
    failures on damaged files into :class:`CorruptCheckpointError`.

    Args:
        f: The checkpoint ``load`` reads, as messages name it (and, if a local file,
            checked for damage after a failure).
        load: Loads and returns the checkpoint.
        url (str, optional): Where ``f`` was downloaded from, for the messages.
        force_weights_only (bool): Force every ``torch.load`` that ``load`` makes to be
            weights-only, even one passing ``weights_only=False`` (see
            :func:`_weights_only_forced`).

    The whole call holds the module's lock, so the allowlist, the
    ``HistoryBuffer`` registry check and the forced environment of concurrent loads
    cannot interfere.
    """
    with _LOAD_LOCK:
        if force_weights_only:
            with _weights_only_forced():
                return _load_checked(f, load, url)
        return _load_checked(f, load, url)


def _load_checked(f: Any, load: Callable[[], Any], url: Optional[str]) -> Any:
    """:func:`load_with_allowlist` without the lock (the caller holds it).

    ``HistoryBuffer``'s statistics registry is restored from a snapshot whenever the
    load does not complete: ``HistoryBuffer.__setstate__`` merges a checkpoint's
    methods while unpickling, before a later global of the same file may be refused.
    """
    stats_before = dict(HistoryBuffer._statistics_methods)
    completed = False
    try:
        checkpoint = _load_unchecked(f, load, url)
        _check_history_buffer_methods(f, stats_before, url)
        completed = True
        return checkpoint
    finally:
        if not completed:
            _restore_history_buffer_methods(stats_before)


def _load_unchecked(f: Any, load: Callable[[], Any], url: Optional[str]) -> Any:
    """Run ``load`` with the allowlist, turning failures into our errors."""
    try:
        with torch.serialization.safe_globals(_missing_safe_globals()):
            return load()
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


def _restore_history_buffer_methods(before: Dict[str, Callable]) -> None:
    """Put ``HistoryBuffer``'s statistics registry back to ``before`` (in place)."""
    methods = HistoryBuffer._statistics_methods
    if methods != before or any(methods[k] is not v for k, v in before.items()):
        methods.clear()
        methods.update(before)


def _check_history_buffer_methods(f: Any, before: Dict[str, Callable],
                                  url: Optional[str] = None) -> None:
    """``HistoryBuffer.__setstate__`` merges the pickled statistics methods into the
    class-wide registry; refuse any entry that is neither unchanged nor one of
    HistoryBuffer's own methods under its own name (``max`` may only be
    ``HistoryBuffer.max``: a renamed method would silently corrupt logged statistics).
    The caller undoes the registry on refusal."""
    methods = HistoryBuffer._statistics_methods
    bad = {k: v for k, v in methods.items()
           if v is not before.get(k) and not (
               k in HISTORY_BUFFER_METHODS and v is getattr(HistoryBuffer, k))}
    if bad:
        names = ', '.join(f'{k}={getattr(v, "__qualname__", v)!s}' for k, v in bad.items())
        raise _unsafe_error(
            f, f'Unsupported global: GLOBAL HistoryBuffer.statistics_methods[{names}] '
            'is not HistoryBuffer\'s own statistics method of that name.', url)


#: Names that moved to :mod:`nfnets_mm.utils.checkpoint_schemes`.
_MOVED = frozenset([
    'load_from_local_safe', 'load_from_http_safe', 'load_from_openmmlab_safe',
    'load_from_mmcls_safe', 'load_from_torchvision_safe', 'load_from_dm_nfnets_safe',
    'make_safe_loader', 'secure_registered_schemes'])


def __getattr__(name: str) -> Any:
    """``from nfnets_mm.utils.safe_checkpoint import load_from_http_safe`` (and the
    other scheme loaders) keeps working; they live in ``checkpoint_schemes``, which
    imports this module, so they are looked up when asked for."""
    if name in _MOVED:
        from . import checkpoint_schemes
        return getattr(checkpoint_schemes, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
