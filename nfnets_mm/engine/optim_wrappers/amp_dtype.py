"""Autocast dtype of the AMP wrappers: ``'auto'`` = bf16 where the GPU has it, else fp16.

DeepMind trains NFNets in bfloat16 with float32 master weights (``bfloat16=True`` in
``experiment_nfnets.py``: parameters cast to bf16 for the forward / backward pass, gradients
cast back and applied in fp32, logits cast to fp32 for the loss, no loss scaling).  On a GPU
the closest equivalent is autocast to bf16 (parameters stay fp32, matmuls and convolutions run
in bf16, losses in fp32).  bf16 has fp32's exponent range, so it needs no loss scaling;
fp16 does (a dynamic ``GradScaler``).
"""
import logging
from typing import Optional, Union

import torch
from mmengine.logging import print_log

#: Accepted ``dtype`` strings (MMEngine's ``AmpOptimWrapper.valid_dtypes`` plus ``'auto'``).
VALID_DTYPES = ('auto', 'float16', 'bfloat16', 'float32', 'float64')
#: ``loss_scale='auto'`` resolves to this for fp16 (and for MMEngine's default ``None``).
FP16_LOSS_SCALE = 'dynamic'
#: ``loss_scale='auto'`` for every other dtype: a static scale of 1, i.e. no scaling (the
#: ``GradScaler`` still skips updates whose gradients overflow).
NO_LOSS_SCALE = 1.0


def native_bf16_supported() -> bool:
    """Whether the current CUDA device computes in bf16 natively (Ampere and newer).

    Pre-Ampere GPUs only emulate bf16 (slowly); ``including_emulation=False`` rules them
    out where the installed torch knows the argument.
    """
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the argument: no emulation to rule out
        return bool(torch.cuda.is_bf16_supported())


def _describe(value) -> str:
    return f'{value!r} ({type(value).__name__})'


def resolve_amp_dtype(dtype: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    """Turn an AMP wrapper's ``dtype`` argument into a ``torch.dtype`` (or ``None``).

    Args:
        dtype: ``'auto'`` (bf16 if :func:`native_bf16_supported`, else fp16 with a logged
            message), one of ``'float16'``, ``'bfloat16'``, ``'float32'``, ``'float64'`` or
            the matching ``torch.dtype``, or ``None`` (MMEngine's default: autocast's own,
            fp16 on CUDA).

    Returns:
        torch.dtype or None: the autocast dtype.

    Raises:
        ValueError: any other value, naming the valid choices.
    """
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        name = str(dtype).replace('torch.', '')
        if name not in VALID_DTYPES:
            raise ValueError(f'AMP dtype {_describe(dtype)} is not supported; valid choices: '
                             f'{", ".join(VALID_DTYPES)} (strings or torch dtypes) or None.')
        return dtype
    if not isinstance(dtype, str) or dtype not in VALID_DTYPES:
        raise ValueError(f'AMP dtype {_describe(dtype)} is not supported; valid choices: '
                         f'{", ".join(VALID_DTYPES)} (strings or torch dtypes) or None.')
    if dtype != 'auto':
        if dtype == 'bfloat16' and torch.cuda.is_available() and not native_bf16_supported():
            print_log(f'AMP dtype "bfloat16": {torch.cuda.get_device_name()} only emulates '
                      'bfloat16 (slow); dtype="auto" would pick float16.', logger='current',
                      level=logging.WARNING)
        return getattr(torch, dtype)
    if native_bf16_supported():
        return torch.bfloat16
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device'
    print_log(f'AMP dtype "auto": {device} has no native bfloat16, so training uses float16 '
              'autocast with dynamic loss scaling (DeepMind trains NFNets in bfloat16).',
              logger='current', level=logging.WARNING)
    return torch.float16


def resolve_loss_scale(loss_scale, dtype: Optional[torch.dtype]):
    """``loss_scale='auto'``: dynamic for fp16 (or ``dtype=None``), none (1.0) otherwise.

    Any other value (``'dynamic'``, a float, a ``GradScaler`` kwargs dict) is returned
    unchanged for MMEngine's ``AmpOptimWrapper`` to check.
    """
    if not isinstance(loss_scale, str) or loss_scale != 'auto':
        return loss_scale
    return FP16_LOSS_SCALE if dtype in (None, torch.float16) else NO_LOSS_SCALE
