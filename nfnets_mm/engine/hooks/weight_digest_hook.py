"""Check that every rank ends training with the same weights."""
import hashlib
from typing import Dict, List, Optional

import torch
from mmengine.dist import all_gather_object, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from nfnets_mm.registry import HOOKS


def state_dict_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict, in its order.

    Tensors are hashed from CPU copies, so a model and the ``state_dict`` of a
    checkpoint saved from it give the same digest.
    """
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f'{name}|{tensor.dtype}|{tuple(state_dict[name].shape)}|'.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b'')
    return digest.hexdigest()


@HOOKS.register_module(name='NFWeightDigestHook')  # NF prefix: see nfnets_mm/registry.py
class WeightDigestHook(Hook):
    """Log a digest of the model weights of every rank and fail if they differ.

    DDP keeps replicas identical by broadcasting the initial weights and averaging the
    gradients; anything that breaks this (rank-dependent clipping, an unsynchronised
    parameter, a custom step) makes the replicas drift silently.  This hook hashes each
    rank's ``state_dict`` (:func:`state_dict_digest`), gathers the digests on every rank,
    logs them, and raises ``RuntimeError`` naming the ranks that disagree.

    Args:
        interval (int): Also check every ``interval`` training iterations; 0 (default)
            checks only at the end of training.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 0) -> None:
        if interval < 0:
            raise ValueError(f'interval must be >= 0, got {interval}.')
        self.interval = interval
        #: Digests of all ranks at the last check (rank order).
        self.last_digests: Optional[List[str]] = None

    def _check(self, runner, when: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        mine = state_dict_digest(model.state_dict())
        digests = all_gather_object(mine)
        self.last_digests = digests
        world = get_world_size()
        if len(set(digests)) != 1:
            lines = ', '.join(f'rank{r}={d[:16]}' for r, d in enumerate(digests))
            raise RuntimeError(f'WeightDigestHook: model weights differ across ranks {when}: '
                               f'{lines}.')
        runner.logger.info(f'WeightDigestHook: weights identical across {world} rank(s) '
                           f'{when}; sha256 {", ".join(f"rank{r}={d}" for r, d in enumerate(digests))}')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval and self.every_n_train_iters(runner, self.interval):
            self._check(runner, f'at iteration {runner.iter + 1}')

    def after_train(self, runner) -> None:
        self._check(runner, 'after training')
