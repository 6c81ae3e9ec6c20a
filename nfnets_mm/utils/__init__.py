"""Utilities: safe (weights-only) checkpoint loading.

Importing this package installs the weights-only loaders into MMEngine's
``CheckpointLoader`` for local files, ``http(s)://``, the model-zoo schemes and every
other scheme (:mod:`nfnets_mm.utils.checkpoint_schemes`, loading with the allowlist of
:mod:`nfnets_mm.utils.safe_checkpoint`), plus ``dm-nfnets://F0`` ... ``F6``; DeepMind and
timm weights are converted on load (:mod:`nfnets_mm.converters.pretrained`).
"""
from .safe_checkpoint import (ALLOWLIST, CorruptCheckpointError, RestrictedUnpickler,
                              UnsafeCheckpointError, UnsafePickleError, allowlisted_names,
                              restricted_load, safe_load)
# installs the safe loaders into MMEngine's CheckpointLoader (before any load)
from .checkpoint_schemes import load_from_http_safe, load_from_local_safe

__all__ = [
    'ALLOWLIST', 'CorruptCheckpointError', 'RestrictedUnpickler', 'UnsafeCheckpointError',
    'UnsafePickleError', 'allowlisted_names', 'load_from_http_safe', 'load_from_local_safe',
    'restricted_load', 'safe_load'
]
