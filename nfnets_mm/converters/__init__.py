"""Checkpoint converters: DeepMind's released Haiku parameters and timm state dicts to
MMPretrain state dicts, and loading them as pretrained weights in one config line.

* :mod:`.deepmind`: ``F*_haiku.npz`` (restricted unpickler, architecture inferred from
  the shapes, Haiku -> PyTorch layouts).
* :mod:`.timm`: ``dm_nfnet_*``, ``nfnet_*``, ``nfnet_l0``, ``nf_resnet*`` state dicts.
* :mod:`.pretrained`: format detection by content, conversion in memory, the
  SHA-256-keyed cache of converted downloads, the ``dm-nfnets://F0`` alias resolution
  and the architecture check, used by the ``CheckpointLoader`` schemes of
  :mod:`nfnets_mm.utils.checkpoint_schemes`.

``tools/model_converters/*.py`` are command lines over :func:`deepmind.convert` and
:func:`timm.convert`.
"""
from . import deepmind, timm  # noqa: F401
from ._common import ConversionError
from .pretrained import (DM_SCHEME, PRETRAINED_LOAD_ERRORS, CheckpointDownloadError,
                         CheckpointNotFoundError, PretrainedArchMismatchError,
                         dm_weights_url, load_checkpoint_file, source_format)

__all__ = ['deepmind', 'timm', 'ConversionError', 'DM_SCHEME', 'PRETRAINED_LOAD_ERRORS',
           'CheckpointDownloadError', 'CheckpointNotFoundError', 'PretrainedArchMismatchError',
           'dm_weights_url', 'load_checkpoint_file', 'source_format']
