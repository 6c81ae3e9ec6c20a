"""MMPretrain-style batch augment: MixUp on one half of a batch, CutMix on the other.

The NFNet configs mix in the data loader instead (:class:`~nfnets_mm.datasets.NFNetMixDataset`,
DeepMind's protocol); this batch augment is the stock MMPretrain path, kept as the switch
described in ``docs/training.md`` ("Mixing").
"""
import logging
from typing import List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmpretrain.models.utils.batch_augments import CutMix, Mixup
from mmpretrain.registry import BATCH_AUGMENTS


# Registered NF-prefixed, as every nfnets_mm name (nfnets_mm/registry.py).
@BATCH_AUGMENTS.register_module(name='NFHalfMixupHalfCutMix')
class HalfMixupHalfCutMix:
    """Apply MixUp to the first half of a batch and CutMix to the second half.

    The NFNet ImageNet recipe (paper Sec. 5, Table 2; DeepMind's release) splits every
    batch in two: the first ``N // 2`` samples are mixed with MixUp, the remaining
    ``N - N // 2`` with CutMix.  Each half draws its own mixing ratio and pairs samples
    only with samples of the same half, so the two operations never interact.

    This is the MMPretrain way, on the normalized (already RandAugment-ed) batch in the
    data preprocessor, with *one* ratio / box per half-batch.  DeepMind instead draws a
    ratio / box per example, mixes with an independent second set of raw images and runs
    RandAugment on the mixed image: :class:`~nfnets_mm.datasets.NFNetMixDataset`, the
    configs' default.  Use one of the two: given labels that are already soft (e.g. from
    ``NFNetMixDataset``), this augment logs a warning once.  The heavy lifting is
    MMPretrain's own :class:`~mmpretrain.models.Mixup` and
    :class:`~mmpretrain.models.CutMix` (random permutation partner, one ratio per call,
    CutMix's ratio corrected to the clipped box area).

    Use it through a classifier's ``train_cfg``::

        train_cfg=dict(augments=dict(type='NFHalfMixupHalfCutMix', mixup_alpha=0.2,
                                     cutmix_alpha=1.0))
        # with NFNetMixDataset in the train dataloader, switch its mixing off:
        train_dataloader = dict(dataset=dict(mix=False))

    Args:
        mixup_alpha (float): Beta(alpha, alpha) parameter of MixUp. Defaults to 0.2
            (the NFNet recipe).
        cutmix_alpha (float): Beta(alpha, alpha) parameter of CutMix. Defaults to 1.0
            (the CutMix paper's setting; the NFNet paper does not state it).
        cutmix_minmax (list[float], optional): Passed to :class:`CutMix`.
        correct_lam (bool): Passed to :class:`CutMix`. Defaults to True.

    Shapes:
        - batch_inputs: :math:`(N, C, H, W)`; batch_scores: :math:`(N, K)` one-hot (or
          soft) labels.
        - returns: mixed inputs :math:`(N, C, H, W)` and float scores :math:`(N, K)`
          whose rows still sum to the input rows' sums (1 for one-hot labels).
    """

    def __init__(self,
                 mixup_alpha: float = 0.2,
                 cutmix_alpha: float = 1.0,
                 cutmix_minmax: Optional[List[float]] = None,
                 correct_lam: bool = True) -> None:
        for name, value in (('mixup_alpha', mixup_alpha), ('cutmix_alpha', cutmix_alpha)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f'{name} must be a positive number, got {value!r}.')
        self.mixup = Mixup(alpha=float(mixup_alpha))
        self._warned_soft = False
        self.cutmix = CutMix(alpha=float(cutmix_alpha), cutmix_minmax=cutmix_minmax,
                             correct_lam=correct_lam)

    @staticmethod
    def split_point(batch_size: int) -> int:
        """Samples ``[0, k)`` get MixUp, ``[k, N)`` CutMix, with ``k = N // 2``."""
        return batch_size // 2

    def __call__(self, batch_inputs: torch.Tensor,
                 batch_scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if batch_inputs.dim() != 4:
            raise ValueError('HalfMixupHalfCutMix expects images of shape (N, C, H, W), '
                             f'got {tuple(batch_inputs.shape)}.')
        if batch_scores.dim() != 2 or batch_scores.size(0) != batch_inputs.size(0):
            raise ValueError('HalfMixupHalfCutMix expects one-hot scores of shape '
                             f'(N, num_classes) with N={batch_inputs.size(0)}, got '
                             f'{tuple(batch_scores.shape)}.')
        batch_scores = batch_scores.float()
        self._warn_if_already_mixed(batch_scores)
        half = self.split_point(batch_inputs.size(0))
        # ``clone`` keeps CutMix's in-place paste away from the caller's tensor.
        cut_inputs, cut_scores = self.cutmix(batch_inputs[half:].clone(), batch_scores[half:])
        if half == 0:
            return cut_inputs, cut_scores
        mix_inputs, mix_scores = self.mixup(batch_inputs[:half], batch_scores[:half])
        return torch.cat([mix_inputs, cut_inputs]), torch.cat([mix_scores, cut_scores])

    def _warn_if_already_mixed(self, batch_scores: torch.Tensor) -> None:
        if self._warned_soft or not ((batch_scores > 0).sum(1) > 1).any():
            return
        self._warned_soft = True
        print_log('NFHalfMixupHalfCutMix got soft labels. If the train dataloader mixes '
                  'already (NFNetMixDataset with mix=True), each sample is mixed twice: '
                  'set train_dataloader.dataset.mix=False or drop model.train_cfg.augments.',
                  logger='current', level=logging.WARNING)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(mixup_alpha={self.mixup.alpha}, '
                f'cutmix_alpha={self.cutmix.alpha})')
