"""``NFNetRandomResizedCrop``: DeepMind's training crop (TF's distorted bounding box) + resize.

DeepMind's NFNet pipeline (``nfnets/dataset.py``, ``_decode_and_random_crop``) crops with
``tf.image.sample_distorted_bounding_box(min_object_covered=0.1, aspect_ratio_range=(3/4,
4/3), area_range=(0.08, 1), max_attempts=10, use_image_if_no_bounding_boxes=True)``, falls
back to a centre crop when the sampled window is the whole image, flips, and resizes with
TF's bicubic (no antialiasing).  :func:`sample_distorted_box` re-implements TF's sampler.
"""
import math
from typing import Optional, Tuple

import mmcv
import numpy as np
from mmcv.transforms.utils import cache_randomness
from mmengine.registry import TRANSFORMS
from mmpretrain.datasets.transforms import EfficientNetRandomCrop, RandomResizedCrop

from .tf_resize import tf_bicubic_resize

#: ``backend`` values: TF's bicubic (DeepMind) or one of mmcv's ``imresize`` backends.
RESIZE_BACKENDS = ('tf', 'pillow', 'cv2')
#: ``sampler`` values of :class:`NFNetRandomResizedCrop`.
CROP_SAMPLERS = ('deepmind', 'inception')


def _lrint(x: float) -> int:
    """C's ``lrintf``: round half to even (Python's ``round``)."""
    return int(round(x))


def sample_distorted_box(height: int, width: int, rng=np.random,
                         area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                         min_object_covered: float = 0.1,
                         max_attempts: int = 10) -> Optional[Tuple[int, int, int, int]]:
    """TF's ``sample_distorted_bounding_box`` for one whole-image box.

    Each attempt draws an aspect ratio ``r = w / h`` uniformly in ``aspect_ratio_range``
    (not log-uniformly), then a height *uniformly over the integers*
    ``[round(sqrt(A_min / r)), round(sqrt(A_max / r))]`` (so the area is not uniform),
    clipped so that ``round(h * r) <= width`` and ``h <= height``; ``w = round(h * r)``.
    A box whose area ``w * h`` misses ``[A_min, A_max]`` by rounding is grown (or shrunk)
    by one row and re-checked.  Offsets are uniform over ``[0, H - h)`` and ``[0, W - w)``
    (TF never picks the last offset).  A box is accepted when it covers at least
    ``min_object_covered`` of the image, which with area ``0.08 .. 1`` and
    ``min_object_covered=0.1`` raises the effective minimum area to 0.1.

    Returns:
        ``(top, left, h, w)`` of the first accepted box, or ``None`` after
        ``max_attempts`` rejections (TF then returns the whole image).
    """
    area = height * width
    min_area, max_area = area_range[0] * area, area_range[1] * area
    for _ in range(max_attempts):
        ratio = rng.uniform(*aspect_ratio_range)
        h = _lrint(math.sqrt(min_area / ratio))
        max_h = _lrint(math.sqrt(max_area / ratio))
        if _lrint(max_h * ratio) > width:
            max_h = int((width + 0.5 - 1e-7) / ratio)
            if _lrint(max_h * ratio) > width:
                max_h -= 1
        max_h = min(max_h, height)
        h = min(h, max_h)
        if h < max_h:
            h += int(rng.randint(0, max_h - h + 1))
        w = _lrint(h * ratio)
        box_area = w * h
        if box_area < min_area:
            h += 1
            w = _lrint(h * ratio)
            box_area = w * h
        if box_area > max_area:
            h -= 1
            w = _lrint(h * ratio)
            box_area = w * h
        if (box_area < min_area or box_area > max_area or w > width or h > height
                or w <= 0 or h <= 0):
            continue
        if box_area / area < min_object_covered:
            continue
        top = int(rng.randint(0, height - h)) if h < height else 0
        left = int(rng.randint(0, width - w)) if w < width else 0
        return top, left, h, w
    return None


def padded_center_box(height: int, width: int, size: int,
                      pad: int = 32) -> Tuple[int, int, int, int]:
    """DeepMind's fallback ``_decode_and_center_crop``: the centre square covering
    ``size / (size + pad)`` of the short side, offsets ``((H - h) + 1) // 2``."""
    scale = min(np.float32(height) / np.float32(size + pad),
                np.float32(width) / np.float32(size + pad))  # float32, as TF
    # at least 1 px (an image under (size + pad) / size px would give an empty crop)
    side = max(1, int(scale * np.float32(size)))
    return ((height - side) + 1) // 2, ((width - side) + 1) // 2, side, side


def resize_image(img: np.ndarray, size: int, backend: str, interpolation: str) -> np.ndarray:
    """``size x size`` with TF's bicubic (``backend='tf'``) or mmcv's ``imresize``."""
    if backend == 'tf':
        return tf_bicubic_resize(img, (size, size))
    return mmcv.imresize(img, (size, size), interpolation=interpolation, backend=backend)


def check_backend(backend: str, interpolation: str) -> None:
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f'backend must be one of {RESIZE_BACKENDS}, got {backend!r}')
    if backend == 'tf' and interpolation != 'bicubic':
        raise ValueError("backend='tf' is TF's bicubic resize: interpolation must be "
                         f"'bicubic', got {interpolation!r}")


@TRANSFORMS.register_module()
class NFNetRandomResizedCrop(EfficientNetRandomCrop):
    """DeepMind's NFNet training crop: TF's distorted-bounding-box sampler, centre-crop
    fallback, resize to ``scale x scale``.

    MMPretrain's :class:`EfficientNetRandomCrop` ports the same TF sampler but differs from
    it in ways that change the crop distribution; this subclass keeps its arguments and
    replaces :meth:`rand_crop_params` with TF's exact rules (:func:`sample_distorted_box`):

    * the height is drawn uniformly over the *integers* ``[h_min, h_max]`` (MMPretrain
      rounds a continuous draw, halving the end points' chances);
    * a box whose rounded area leaves ``crop_ratio_range`` is grown / shrunk by one row
      before it is rejected (MMPretrain rejects it);
    * ``h_max`` is clipped with the *rounded* width ``round(h_max * r) <= W``;
    * offsets are drawn in ``[0, H - h)`` (TF excludes the last one);
    * the fallback also applies when the sampled box is the whole image (DeepMind compares
      the crop's shape with the image's), and its square side is
      ``int(min(H, W) / (scale + crop_padding) * scale)`` at offset ``((H - side) + 1) // 2``
      (MMPretrain passes a float side).

    ``sampler='inception'`` switches to MMPretrain's stock ``RandomResizedCrop`` sampler
    (torchvision's: area uniform in ``crop_ratio_range``, log-uniform aspect ratio, centre
    fallback keeping an in-range aspect ratio; ``min_covered`` and ``crop_padding`` unused).

    The resize is ``backend='tf'`` (default): TF's bicubic without antialiasing
    (:func:`tf_bicubic_resize`; float32 output, not clamped, as DeepMind's), or ``'pillow'``
    / ``'cv2'`` with ``interpolation`` for mmcv's ``imresize`` (MMPretrain's stock resize;
    Pillow's bicubic antialiases).

    Args:
        scale (int): Output side ``S`` (the variant's train size).
        min_covered (float): TF's ``min_object_covered``. Defaults to 0.1.
        crop_padding (int): Fallback centre crop covers ``S / (S + crop_padding)``.
            Defaults to 32.
        crop_ratio_range (tuple): Area range. Defaults to (0.08, 1.0).
        aspect_ratio_range (tuple): ``w / h`` range, drawn uniformly. Defaults to (3/4, 4/3).
        max_attempts (int): Defaults to 10.
        interpolation (str): mmcv interpolation for the ``'pillow'`` / ``'cv2'`` backends;
            must be ``'bicubic'`` with ``'tf'``. Defaults to ``'bicubic'``.
        backend (str): ``'tf'``, ``'pillow'`` or ``'cv2'``. Defaults to ``'tf'``.
        sampler (str): ``'deepmind'`` or ``'inception'``. Defaults to ``'deepmind'``.
    """

    def __init__(self, scale: int, min_covered: float = 0.1, crop_padding: int = 32,
                 interpolation: str = 'bicubic', backend: str = 'tf',
                 sampler: str = 'deepmind', **kwargs) -> None:
        if sampler not in CROP_SAMPLERS:
            raise ValueError(f'sampler must be one of {CROP_SAMPLERS}, got {sampler!r}')
        if not isinstance(scale, int) or scale <= 0:
            raise ValueError(f'scale must be a positive int (square crop side), got {scale!r}')
        check_backend(backend, interpolation)
        # mmcv's check only knows its own backends; the resize is ours.
        super().__init__(scale, min_covered=min_covered, crop_padding=crop_padding,
                         interpolation=interpolation,
                         backend='cv2' if backend == 'tf' else backend, **kwargs)
        self.backend = backend
        self.sampler = sampler

    @cache_randomness
    def rand_crop_params(self, img: np.ndarray) -> Tuple[int, int, int, int]:
        """``(top, left, h, w)`` of the crop (TF's sampler, DeepMind's fallback)."""
        if self.sampler == 'inception':
            return RandomResizedCrop.__dict__['rand_crop_params'].func(self, img)
        height, width = img.shape[:2]
        box = sample_distorted_box(
            height, width, np.random, area_range=self.crop_ratio_range,
            aspect_ratio_range=self.aspect_ratio_range, min_object_covered=self.min_covered,
            max_attempts=self.max_attempts)
        if box is None or box[2:] == (height, width):
            return padded_center_box(height, width, self.scale[0], self.crop_padding)
        return box

    def transform(self, results: dict) -> dict:
        img = results['img']
        top, left, h, w = self.rand_crop_params(img)
        img = resize_image(img[top:top + h, left:left + w], self.scale[0], self.backend,
                           self.interpolation)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', sampler={self.sampler!r})'
