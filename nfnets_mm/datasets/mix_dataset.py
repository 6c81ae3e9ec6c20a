"""``NFNetMixDataset``: MixUp / CutMix on raw images in the data loader, before RandAugment."""
import copy
from typing import List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import Compose
from mmpretrain.registry import DATASETS, TRANSFORMS
from mmpretrain.structures import DataSample

from .mix import PairMixer

#: Result keys describing the draw; copied into each packed ``DataSample``'s metainfo.
MIX_META_KEYS = ('mix_mode', 'mix_ratio', 'mix_box', 'mix_partner_idx')


@DATASETS.register_module()
class NFNetMixDataset:
    """Mix every training example with an independent partner, then augment the mix.

    DeepMind's NFNet protocol (``augment_before_mix=False`` in ``experiment_nfnets.py``):

    1. crop -> flip -> resize each image (the wrapped ``dataset``'s own pipeline);
    2. mix it with an independent second image, MixUp (``r ~ Beta(0.2, 0.2)``) or CutMix
       (uniform area share), with a ratio / box drawn *per example*
       (:class:`~nfnets_mm.datasets.mix.PairMixer`); the soft label is
       ``r * onehot(y_a) + (1 - r) * onehot(y_b)``, ``r`` the primary's pixel share;
    3. RandAugment on the *mixed* image, then pack (this wrapper's ``pipeline``);
    4. normalize (the model's data preprocessor, which no longer mixes).

    Label smoothing stays in the loss: ``LabelSmoothLoss(mode='original')`` turns the mixed
    label into ``(1 - eps) * y + eps / K``, which is DeepMind's order (mix, then smooth).

    MMDetection's ``MultiImageMixDataset`` is the model of this wrapper; it differs in
    that the partner is drawn here (not by a transform) and the mixing is a fixed, first
    step: an NFNet recipe has exactly one mixing stage.  DeepMind splits each batch in
    halves (MixUp / CutMix); a dataset sees single examples, so by default
    (``mode_choice='alternate'``) each loader process alternates MixUp and CutMix, which
    makes every even-sized batch (built by one process) exactly half and half.

    The partner index is drawn uniformly from the whole dataset with NumPy's global
    generator -- the one MMPretrain's transforms use -- which MMEngine's ``worker_init_fn``
    seeds with ``seed + num_workers * rank + worker_id``: draws are reproducible with
    ``randomness=dict(seed=...)`` and differ between ranks and workers.  Keep
    ``persistent_workers=True`` (the repository's tools default) so the generator carries on
    across epochs instead of restarting from the same seed.

    Each output (one mixed example) reads two images; ``len()`` is the wrapped dataset's,
    so one epoch is as many mixed examples as images, as DeepMind counts steps.

    Args:
        dataset (dict | Dataset): The wrapped dataset (config or object).  Its pipeline must
            produce same-size raw images with an integer ``gt_label`` and stop before
            ``PackInputs`` (e.g. ``LoadImageFromFile``, ``RandomResizedCrop``,
            ``RandomFlip``).
        pipeline (list[dict | callable]): Runs on the mixed result, e.g.
            ``[RandAugment(...), PackInputs()]``.
        num_classes (int, optional): Length of the soft labels; must equal the
            classifier's.  Defaults to the number of ``classes`` in the dataset's metainfo.
        mixup_alpha (float): MixUp's Beta(alpha, alpha). Defaults to 0.2.
        cutmix_alpha (float): CutMix's Beta(alpha, alpha) area share. Defaults to 1.0.
        mode_choice (str): ``'alternate'`` (default; exact halves per even-sized batch)
            or ``'random'`` (CutMix with probability ``cutmix_prob`` per example).
        cutmix_prob (float): CutMix's probability for ``mode_choice='random'``.
            Defaults to 0.5.
        mix (bool): ``False`` skips step 2: both pipelines run back to back on unmixed
            images and no ``gt_score`` is packed.  This is the stock MMPretrain path's
            loader, for use with the model's batch-level mixing
            (``model.train_cfg.augments=dict(type='NFHalfMixupHalfCutMix')``).
            Defaults to True.
        max_refetch (int): Tries with another random index when ``pipeline`` returns
            ``None`` (a transform dropping a sample). Defaults to 15.
        lazy_init (bool): Defer the wrapped dataset's ``full_init``. Defaults to False.

    The packed ``DataSample`` carries ``gt_label`` (the primary's class), ``gt_score``
    (``(num_classes,)`` float32, rows summing to 1) and, in its metainfo, ``mix_mode``,
    ``mix_ratio``, ``mix_box`` and ``mix_partner_idx``.
    """

    def __init__(self,
                 dataset: Union[dict, object],
                 pipeline: Sequence[Union[dict, callable]],
                 num_classes: Optional[int] = None,
                 mixup_alpha: float = 0.2,
                 cutmix_alpha: float = 1.,
                 mode_choice: str = 'alternate',
                 cutmix_prob: float = 0.5,
                 mix: bool = True,
                 max_refetch: int = 15,
                 lazy_init: bool = False) -> None:
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        if not hasattr(dataset, '__getitem__') or not hasattr(dataset, '__len__'):
            raise TypeError('NFNetMixDataset wraps a dataset config dict or a dataset object, '
                            f'got {type(dataset).__name__}.')
        self.dataset = dataset
        self._metainfo = copy.deepcopy(getattr(dataset, 'metainfo', {}) or {})
        if num_classes is None:
            classes = self._metainfo.get('classes', None)
            if not classes:
                raise ValueError('NFNetMixDataset needs num_classes (the classifier\'s number '
                                 'of classes): the wrapped dataset has no metainfo classes.')
            num_classes = len(classes)
        if not isinstance(mix, bool):
            raise TypeError(f'mix must be True or False, got {mix!r}.')
        if isinstance(max_refetch, bool) or not isinstance(max_refetch, int) or max_refetch < 0:
            raise ValueError(f'max_refetch must be an int >= 0, got {max_refetch!r}.')
        self.mixer = PairMixer(num_classes, mixup_alpha=mixup_alpha,
                               cutmix_alpha=cutmix_alpha, mode_choice=mode_choice,
                               cutmix_prob=cutmix_prob)
        self.pipeline = Compose([TRANSFORMS.build(t) if isinstance(t, dict) else t
                                 for t in pipeline])
        loaders = [type(t).__name__ for t in self.pipeline.transforms
                   if type(t).__name__.startswith('Load')]
        if loaders:
            # It would re-read the primary image from img_path, silently undoing the mix.
            raise ValueError(
                f'NFNetMixDataset.pipeline runs on the mixed image and must not load images '
                f'(got {loaders}): loading, cropping and flipping belong in the wrapped '
                "dataset's pipeline (train_dataloader.dataset.dataset.pipeline), RandAugment "
                'and PackInputs in NFNetMixDataset.pipeline.')
        self.mix = mix
        self.max_refetch = max_refetch
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's metainfo (a copy)."""
        return copy.deepcopy(self._metainfo)

    @property
    def num_classes(self) -> int:
        return self.mixer.num_classes

    def full_init(self) -> None:
        """Fully initialize the wrapped dataset."""
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        self._fully_initialized = True

    def get_data_info(self, idx: int) -> dict:
        """The wrapped dataset's annotation of sample ``idx``."""
        return self.dataset.get_data_info(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def raw_sample(self, idx: int) -> dict:
        """Sample ``idx`` after the wrapped dataset's pipeline, checked to be mixable."""
        results = self.dataset[idx]
        if not isinstance(results, dict) or 'img' not in results or 'inputs' in results:
            raise ValueError(
                'The dataset wrapped by NFNetMixDataset must return raw results with an '
                '"img" (its pipeline stops before PackInputs: load, crop, flip); RandAugment '
                f'and PackInputs belong in NFNetMixDataset.pipeline. Got '
                f'{sorted(results) if isinstance(results, dict) else type(results).__name__}.')
        return results

    def prepare(self, idx: int) -> Optional[dict]:
        """One example: mix sample ``idx`` with a random partner, run the pipeline."""
        results = self.raw_sample(idx)
        if self.mix:
            partner_idx = int(np.random.randint(len(self.dataset)))
            results = self.mixer(results, self.raw_sample(partner_idx))
            results['mix_partner_idx'] = partner_idx
        packed = self.pipeline(results)
        if self.mix and isinstance(packed, dict) and isinstance(packed.get('data_samples'),
                                                                DataSample):
            packed['data_samples'].set_metainfo({k: results[k] for k in MIX_META_KEYS})
        return packed

    def __getitem__(self, idx: int) -> dict:
        if not self._fully_initialized:
            self.full_init()
        for _ in range(self.max_refetch + 1):
            packed = self.prepare(idx)
            if packed is not None:
                return packed
            idx = int(np.random.randint(len(self.dataset)))
        raise RuntimeError(f'NFNetMixDataset: the pipeline returned None {self.max_refetch + 1}'
                           ' times in a row; check the transforms that drop samples.')

    def __repr__(self) -> str:
        lines: List[str] = [f'{self.__class__.__name__}(', f'    dataset={self.dataset!r},',
                            f'    mixer={self.mixer!r}, mix={self.mix},',
                            f'    pipeline={self.pipeline!r})']
        return '\n'.join(lines)
