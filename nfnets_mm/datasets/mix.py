"""Mix two raw training images, MixUp or CutMix, the way DeepMind's NFNet recipe does.

DeepMind's NFNet data pipeline (``deepmind-research/nfnets/dataset.py`` with
``augment_name='cutmix_mixup_randaugment_*'`` and ``augment_before_mix=False``) draws, for
*every* example, its own MixUp ratio and its own CutMix box, mixes raw (cropped, flipped,
resized) images with an independent second set of images, and only then runs RandAugment on
the mixed image.  This module holds the per-pair part: sample the ratio or the box, mix two
``H x W x C`` images, build the soft label.  :class:`~nfnets_mm.datasets.NFNetMixDataset`
draws the partners and runs RandAugment afterwards.

MixUp (Zhang et al. 2018): ``r ~ Beta(alpha, alpha)`` (DeepMind: alpha 0.2),
``x = r * x_a + (1 - r) * x_b``, label ``r * y_a + (1 - r) * y_b``.

CutMix (Yun et al. 2019), DeepMind's box: a centre ``(c_y, c_x)`` uniform over the integer
pixel grid, an area share ``p ~ Beta(alpha, alpha)`` (DeepMind: uniform, i.e. alpha 1),
half-sides ``int(sqrt(1 - p) * H) // 2`` and ``int(sqrt(1 - p) * W) // 2``, the box clipped
to the image.  The box keeps the *primary* image ``x_a``, the partner ``x_b`` fills the rest
(DeepMind's ``mask * x_a + (1 - mask) * x_b``), and the label weight ``r`` of ``y_a`` is the
share of pixels that come from ``x_a``: the clipped box area over ``H * W``.

Randomness comes from NumPy's global generator (or the ``rng`` passed in), the generator
every MMPretrain transform uses: MMEngine's ``worker_init_fn`` seeds it per rank and
data-loader worker, so the draws are reproducible with ``randomness=dict(seed=...)`` and
differ between ranks and workers.
"""
from typing import Optional, Tuple

import numpy as np

#: How :class:`PairMixer` picks the mode of each example.
MODE_CHOICES = ('alternate', 'random')


def check_alpha(name: str, value) -> float:
    """Return ``value`` as a float if it is a positive number, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f'{name} must be a positive number (the Beta(alpha, alpha) '
                         f'parameter), got {value!r}.')
    return float(value)


def check_pair(image: np.ndarray, partner: np.ndarray) -> None:
    """Refuse two images that cannot be mixed pixel by pixel."""
    for name, img in (('image', image), ('partner image', partner)):
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise TypeError(f'The {name} to mix must be an (H, W) or (H, W, C) numpy array '
                            f'(before PackInputs), got {type(img).__name__}'
                            f'{getattr(img, "shape", "")}.')
    if image.dtype != partner.dtype:
        raise ValueError(f'Cannot mix a {image.dtype} image with a {partner.dtype} one: the '
                         'pipeline that runs before mixing must give every image one dtype.')
    if image.shape != partner.shape:
        raise ValueError(
            f'Cannot mix images of shapes {image.shape} and {partner.shape}: the pipeline '
            'that runs before mixing must end with a fixed-size crop or resize (e.g. '
            'RandomResizedCrop(scale=S)).')


def sample_mixup_ratio(alpha: float, rng=np.random) -> float:
    """``r ~ Beta(alpha, alpha)``, the weight of the primary image (MixUp)."""
    return float(rng.beta(alpha, alpha))


def mixup_images(image: np.ndarray, partner: np.ndarray, ratio: float) -> np.ndarray:
    """``ratio * image + (1 - ratio) * partner``.

    Shapes: ``image`` and ``partner`` ``(H, W[, C])`` -> ``(H, W[, C])``.

    The blend is computed in float32 (float64 for float64 images).  Integer images come
    back in their dtype, clipped to its range and truncated toward zero -- what DeepMind
    does before RandAugment (``tf.clip_by_value(image, 0, 255)`` then
    ``tf.cast(image, tf.uint8)``); float images (fp16 / fp32 / fp64, e.g. the float32
    output of a TF-style bicubic resize, which DeepMind mixes unclamped) come back as the
    unrounded blend in their own dtype.
    """
    check_pair(image, partner)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f'MixUp needs an integer or floating image, got {image.dtype}.')
    work = np.promote_types(image.dtype, np.float32)  # float32, or float64 for 64-bit input
    mixed = work.type(ratio) * image.astype(work)
    mixed += work.type(1. - ratio) * partner.astype(work)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(mixed, info.min, info.max).astype(image.dtype)
    return mixed.astype(image.dtype, copy=False)


def sample_cutmix_box(height: int, width: int, alpha: float = 1.,
                      rng=np.random) -> Tuple[int, int, int, int]:
    """DeepMind's CutMix box ``(top, bottom, left, right)`` (end-exclusive, clipped).

    Centre uniform over the integer grid, area share ``p ~ Beta(alpha, alpha)`` (uniform for
    alpha 1), sides ``2 * (int(sqrt(1 - p) * size) // 2)`` before clipping to the image.
    """
    centre_x = int(rng.randint(0, width))
    centre_y = int(rng.randint(0, height))
    share = rng.beta(alpha, alpha)
    side = np.sqrt(1. - share)
    half_w = int(side * width) // 2
    half_h = int(side * height) // 2
    left, right = np.clip([centre_x - half_w, centre_x + half_w], 0, width)
    top, bottom = np.clip([centre_y - half_h, centre_y + half_h], 0, height)
    return int(top), int(bottom), int(left), int(right)


def cutmix_images(image: np.ndarray, partner: np.ndarray,
                  box: Tuple[int, int, int, int]) -> Tuple[np.ndarray, float]:
    """Keep ``image`` inside ``box``, ``partner`` outside; return it and the box's share.

    Shapes: ``image`` and ``partner`` ``(H, W[, C])`` -> ``(H, W[, C])``, float in [0, 1]:
    the fraction of pixels taken from ``image`` (the label weight of its class).
    """
    check_pair(image, partner)
    top, bottom, left, right = box
    mixed = partner.copy()
    mixed[top:bottom, left:right] = image[top:bottom, left:right]
    height, width = image.shape[:2]
    return mixed, (bottom - top) * (right - left) / float(height * width)


def mixed_score(label: int, partner_label: int, ratio: float,
                num_classes: int) -> np.ndarray:
    """Soft label ``ratio * onehot(label) + (1 - ratio) * onehot(partner_label)``.

    Shape: ``(num_classes,)`` float32, summing to 1.  Label smoothing is *not* applied here:
    as DeepMind, the loss (``LabelSmoothLoss``) smooths the mixed label,
    ``(1 - eps) * y + eps / K``.
    """
    score = np.zeros(num_classes, dtype=np.float32)
    score[label] += ratio
    score[partner_label] += 1. - ratio
    return score


class PairMixer:
    """Mix one primary result dict with one partner: MixUp or CutMix, chosen per example.

    Args:
        num_classes (int): Length of the soft label.
        mixup_alpha (float): MixUp's Beta(alpha, alpha). Defaults to 0.2 (DeepMind).
        cutmix_alpha (float): Beta(alpha, alpha) of CutMix's area share. Defaults to 1.0
            (DeepMind's uniform).
        mode_choice (str): How each example's mode is picked.  ``'alternate'`` (default):
            MixUp, CutMix, MixUp, ... in call order.  A PyTorch data-loader batch is built
            by one process calling the dataset once per example, so every even-sized batch
            is then exactly half MixUp and half CutMix, as DeepMind splits each batch (its
            rows are shuffled images, so which image gets which mode is still random).
            ``'random'``: CutMix with probability ``cutmix_prob``, independently per example.
        cutmix_prob (float): CutMix's probability under ``mode_choice='random'`` (0 = MixUp
            only, 1 = CutMix only). Defaults to 0.5; ``'alternate'`` needs 0.5.

    ``__call__(results, partner, rng=np.random)`` takes two MMCV result dicts holding
    ``img`` (``H x W [x C]``) and an integer ``gt_label`` and returns a copy of ``results``
    with the mixed ``img``, ``gt_score`` (``(num_classes,)`` float32) and the draw:
    ``mix_mode`` (``'mixup'`` / ``'cutmix'``), ``mix_ratio`` (the primary label's weight)
    and ``mix_box`` (``(top, bottom, left, right)``; ``None`` for MixUp).  ``gt_label``
    stays the primary image's label.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.2, cutmix_alpha: float = 1.,
                 mode_choice: str = 'alternate', cutmix_prob: float = 0.5) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}.')
        if (isinstance(cutmix_prob, bool) or not isinstance(cutmix_prob, (int, float))
                or not 0. <= cutmix_prob <= 1.):
            raise ValueError('cutmix_prob must be a number in [0, 1] (the share of examples '
                             f'mixed with CutMix; 0.5 = DeepMind), got {cutmix_prob!r}.')
        if mode_choice not in MODE_CHOICES:
            raise ValueError(f'mode_choice must be one of {MODE_CHOICES}, got {mode_choice!r}.')
        if mode_choice == 'alternate' and cutmix_prob != 0.5:
            raise ValueError(f"cutmix_prob={cutmix_prob} needs mode_choice='random' "
                             "('alternate' mixes exactly half of the examples with CutMix).")
        self.mode_choice = mode_choice
        self._calls = 0
        self.num_classes = num_classes
        self.mixup_alpha = check_alpha('mixup_alpha', mixup_alpha)
        self.cutmix_alpha = check_alpha('cutmix_alpha', cutmix_alpha)
        self.cutmix_prob = float(cutmix_prob)

    def label_of(self, results: dict) -> int:
        """The single class index of a result dict, checked against ``num_classes``."""
        label = results.get('gt_label', None)
        if label is None:
            raise KeyError('Mixing needs a gt_label in every sample; got keys '
                           f'{sorted(results)}.')
        values = np.asarray(label).reshape(-1)
        if values.size != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ValueError('MixUp / CutMix here mix single-label classification samples; '
                             f'got gt_label={label!r}.')
        index = int(values[0])
        if not 0 <= index < self.num_classes:
            raise ValueError(f'gt_label {index} is outside [0, num_classes={self.num_classes});'
                             ' set num_classes to the classifier\'s number of classes.')
        return index

    def __call__(self, results: dict, partner: dict, rng=np.random) -> dict:
        label, partner_label = self.label_of(results), self.label_of(partner)
        image, partner_image = results['img'], partner['img']
        check_pair(image, partner_image)
        out = dict(results)
        if self.mode_choice == 'alternate':
            use_cutmix = self._calls % 2 == 1
        else:
            use_cutmix = rng.random_sample() < self.cutmix_prob
        self._calls += 1
        if use_cutmix:
            box = sample_cutmix_box(image.shape[0], image.shape[1], self.cutmix_alpha, rng)
            out['img'], ratio = cutmix_images(image, partner_image, box)
            out['mix_mode'], out['mix_box'] = 'cutmix', box
        else:
            ratio = sample_mixup_ratio(self.mixup_alpha, rng)
            out['img'] = mixup_images(image, partner_image, ratio)
            out['mix_mode'], out['mix_box'] = 'mixup', None
        out['mix_ratio'] = float(ratio)
        out['gt_score'] = mixed_score(label, partner_label, ratio, self.num_classes)
        out['img_shape'] = out['img'].shape[:2]
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, '
                f'mode_choice={self.mode_choice!r}, cutmix_prob={self.cutmix_prob})')
