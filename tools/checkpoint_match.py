"""Refuse test checkpoints that do not fit the model, for ``tools/test.py`` (not a
public API).

MMEngine loads test checkpoints non-strictly: weights of another shape or missing from
the checkpoint are skipped with a warning and the model is evaluated with its random
initialisation.  :class:`CheckpointMatchHook` compares the checkpoint the runner has just
read with the model in ``after_load_checkpoint`` (``Runner.load_checkpoint`` calls it
after reading the file and before loading the weights into the model), so the file is
read once, and raises :class:`CheckpointMismatchError`.
"""
import re
from typing import List, Tuple

from mmengine.hooks import Hook


class CheckpointMismatchError(RuntimeError):
    """A checkpoint lacks weights of the model or has them in other shapes."""


def checkpoint_state_dict(checkpoint, filename: str = 'the checkpoint') -> dict:
    """The weights MMEngine's ``Runner.load_checkpoint`` loads from ``checkpoint``.

    Its ``state_dict`` (or the checkpoint itself when it is a bare state dict), with the
    ``module.`` prefix of wrapped / averaged models removed.  Checkpoints written with
    an ``EMAHook`` (``WarmupEMAHook``) keep the averaged weights under ``state_dict`` and
    the raw ones under ``ema_state_dict``; the former are what is evaluated.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f'{filename} holds a {type(checkpoint).__name__}, not a dict (an MMEngine '
            'checkpoint or a state dict).')
    state = checkpoint.get('state_dict', checkpoint)
    return {re.sub(r'^module\.', '', key): value for key, value in state.items()}


def compare_state_dicts(model_state: dict, ckpt_state: dict
                        ) -> Tuple[List[str], List[str]]:
    """``(missing, mismatched)``: model weights absent from the checkpoint, and
    ``key: checkpoint shape vs model shape`` lines for those of another shape.
    BatchNorm's ``num_batches_tracked`` counters may be missing (as MMEngine allows)."""
    missing, mismatched = [], []
    for key, value in model_state.items():
        if key not in ckpt_state:
            if 'num_batches_tracked' not in key:
                missing.append(key)
            continue
        theirs = getattr(ckpt_state[key], 'shape', None)
        if theirs is not None and tuple(theirs) != tuple(value.shape):
            mismatched.append(f'{key}: {tuple(theirs)} in the checkpoint, '
                              f'{tuple(value.shape)} in the model')
    return missing, mismatched


def check_checkpoint_matches(model, checkpoint, filename: str, max_keys: int = 5) -> None:
    """Refuse a loaded ``checkpoint`` (read from ``filename``) that would load only
    partially into ``model``.

    Extra checkpoint keys (e.g. ``ema_state_dict``'s step counter, heads the config does
    not build) are allowed.  The message names the file, the number of mismatching /
    missing weights and the first ``max_keys`` of each.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    missing, mismatched = compare_state_dicts(model.state_dict(),
                                              checkpoint_state_dict(checkpoint, filename))
    if not missing and not mismatched:
        return
    problems = []
    if mismatched:
        problems.append(f'{len(mismatched)} weight(s) of another shape, first: '
                        + '; '.join(mismatched[:max_keys]))
    if missing:
        problems.append(f'{len(missing)} weight(s) of the model missing from it, first: '
                        + ', '.join(missing[:max_keys]))
    raise CheckpointMismatchError(
        f'Checkpoint {filename} does not fit the model of the config: '
        + '. '.join(problems) + '. It was probably saved for another architecture or '
        'config; pass --allow-mismatch to load the matching weights anyway (the others '
        'keep their initialisation).')


class CheckpointMatchHook(Hook):
    """Raise :class:`CheckpointMismatchError` when the checkpoint the runner loads does
    not fit its model (see :func:`check_checkpoint_matches`).

    Its priority, ``HIGHEST``, puts it before the other hooks' ``after_load_checkpoint``
    (registered last, it follows only other ``HIGHEST`` ones), so a mismatch is reported
    with this clear error before e.g. an ``EMAHook(strict_load=True)`` fails loading the
    same weights into its averaged model.  Running first checks what is loaded into the
    model: ``tools/test.py`` does not resume, and MMEngine's ``EMAHook`` (and nfnets_mm's
    ``WarmupEMAHook``) swap the checkpoint's ``state_dict`` only when resuming; for a
    test they copy it, unchanged, into the averaged model.  ``filename`` only names the
    file in the message.
    """

    priority = 'HIGHEST'

    def __init__(self, filename: str) -> None:
        self.filename = filename

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        check_checkpoint_matches(runner.model, checkpoint, self.filename)
