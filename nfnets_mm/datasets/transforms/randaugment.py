"""``NFNetRandAugment``: DeepMind's RandAugment for the NFNets (``nfnets/autoaugment.py``).

``distort_image_with_randaugment(image, num_layers, magnitude)``: ``num_layers`` times,
one of the 16 ops of :data:`DEEPMIND_OPS` is drawn uniformly and applied (always: the
probability the TF code draws per op is discarded for image ops) at the fixed level
``m = magnitude`` on a scale whose maximum level is 10 (``_MAX_LEVEL``).  The level maps
(:func:`op_argument`):

==============================  =====================================================
AutoContrast, Equalize, Invert  no argument
Rotate                          ``m / 10 * 30`` degrees, random sign
Posterize                       keep ``int(m / 10 * 4)`` bits
Solarize                        threshold ``int(m / 10 * 256)`` (see below)
SolarizeAdd                     add ``int(m / 10 * 110)`` to values below 128
Color, Contrast, Brightness,    factor ``m / 10 * 1.8 + 0.1`` (no random sign;
Sharpness                       factor 1 = identity, F0's m = 5)
ShearX, ShearY                  ``m / 10 * 0.3``, random sign
TranslateX, TranslateY          ``m / 10 * translate_const`` px (100), random sign
Cutout                          square of side ``2 * int(m / 10 * cutout_const)`` (40)
==============================  =====================================================

Rotate, Shear, Translate and Cutout fill grey (128, 128, 128); the geometric ops resample
with nearest neighbour (:mod:`.dm_image_ops`).  The translation is in *pixels*, the same
100 px at every image size, as DeepMind's (MMPretrain's ``Translate`` takes a fraction of
the image size instead).
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS

from . import dm_image_ops as dm_ops

#: DeepMind's ``available_ops``, in its order (the draw picks an index into this list).
DEEPMIND_OPS: Tuple[str, ...] = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
    'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
    'Cutout', 'SolarizeAdd')
#: DeepMind's ``_MAX_LEVEL``.
MAX_LEVEL = 10.
_SIGNED = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def op_argument(name: str, magnitude: float, translate_const: float = 100.,
                cutout_const: float = 40., solarize_threshold_wraps: bool = True):
    """The argument DeepMind's ``level_to_arg`` gives op ``name`` at level ``magnitude``,
    before the random sign of Rotate / Shear / Translate; ``None`` for argument-free ops.

    Solarize's threshold ``int(m / 10 * 256)`` exceeds uint8 from m = 10 on; DeepMind's TF
    graph converts the Python int to the image's uint8 dtype through NumPy (< 1.24 in its
    TF 2.3-2.4 / NumPy 1.18+ requirements), which wraps it modulo 256: 256 (m = 10) becomes
    0, so Solarize inverts *every* pixel, and 384 (m = 15) becomes 128 (the same wrap is
    reported for TF's ``uint8 < 256`` in google-research/big_vision issue 110).  With
    ``solarize_threshold_wraps=False`` the threshold is compared unwrapped (256 and 384:
    Solarize is the identity), what the formula intends.
    """
    level = magnitude / MAX_LEVEL
    if name in ('AutoContrast', 'Equalize', 'Invert'):
        return None
    if name == 'Rotate':
        return level * 30.
    if name == 'Posterize':
        return int(level * 4)
    if name == 'Solarize':
        threshold = int(level * 256)
        return threshold % 256 if solarize_threshold_wraps else threshold
    if name == 'SolarizeAdd':
        return int(level * 110)
    if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
        return level * 1.8 + 0.1
    if name in ('ShearX', 'ShearY'):
        return level * 0.3
    if name in ('TranslateX', 'TranslateY'):
        return level * float(translate_const)
    if name == 'Cutout':
        return int(level * cutout_const)
    raise ValueError(f'unknown op {name!r}; valid ops: {", ".join(DEEPMIND_OPS)}')


@TRANSFORMS.register_module()
class NFNetRandAugment(BaseTransform):
    """DeepMind's RandAugment policy of the NFNet experiments (16 ops, fixed magnitude).

    Registered in MMEngine's root ``TRANSFORMS`` registry (``type='NFNetRandAugment'``
    builds under ``default_scope='mmpretrain'``).  Draws from NumPy's global generator, as
    MMPretrain's transforms (seeded per worker by MMEngine).

    Input: ``results['img']``, ``H x W x 3``.  A uint8 image is augmented as it is; any
    other integer or floating image (e.g. the float32 output of the TF-bicubic resize, or a
    MixUp of two images) is clipped to [0, 255] and truncated to uint8 first --
    DeepMind's ``_augment_image``.  The output is uint8 (``keep_dtype=False``): DeepMind
    casts it back to float32 before normalizing, but every value is an integer in
    [0, 255], so the data preprocessor's ``float()`` gives the same input while the
    loader's batches take a quarter of the host memory (F7 at batch 512: 0.35 instead of
    1.4 GB per batch).

    Args:
        magnitude (float): Level ``m`` (DeepMind's ``RA_level`` '4mm'; 5, 10 or 15 for
            F0..F7, ``get_variant(name).ra_magnitude``), >= 0.
        image_size (int, optional): Side of the square images this op must receive (the
            train crop, ``get_variant(name).train_size``): the ops run after the crop and
            resize, as DeepMind's, and an image of another size raises a ``ValueError``
            naming both.  ``None`` accepts any size.  Defaults to None.
        num_layers (int): Ops applied per image. Defaults to 4.
        ops (sequence[str]): The op list the draw picks from (a subset of
            :data:`DEEPMIND_OPS`, for ablations). Defaults to all 16, in DeepMind's order.
        translate_const (float): TranslateX/Y shift in pixels at level 10. Defaults to 100.
        cutout_const (float): Cutout half-side in pixels at level 10. Defaults to 40.
        fill (tuple[int, int, int]): Fill of Rotate, Shear, Translate and Cutout.
            Defaults to (128, 128, 128).
        channel_order (str): ``'bgr'`` (MMPretrain's ``LoadImageFromFile`` default) or
            ``'rgb'``; only Color's grey weights depend on it. Defaults to ``'bgr'``.
        solarize_threshold_wraps (bool): Solarize's threshold modulo 256, as DeepMind's TF
            graph ran it (see :func:`op_argument`). Defaults to True.
        interpolation (str): Resampling of Rotate, Shear and Translate: ``'nearest'``
            (DeepMind's, ``tensorflow_addons``' default) or OpenCV's ``'bilinear'`` /
            ``'bicubic'`` (MMPretrain's stock ``Rotate`` / ``Shear`` / ``Translate`` are
            bicubic). Defaults to ``'nearest'``.
        contrast_reference (str): What Contrast blends toward: ``'size'`` (DeepMind's
            constant ``min(H * W / 256, 255)``, :func:`~.dm_image_ops.contrast_constant`)
            or ``'mean'`` (the image's mean grey, as PIL / mmcv / MMPretrain's
            ``Contrast``). Defaults to ``'size'``.
        keep_dtype (bool): Cast the result back to the input dtype (float32 after the
            TF resize) instead of returning uint8; the values are the same.
            Defaults to False.
    """

    def __init__(self,
                 magnitude: float,
                 image_size: Optional[int] = None,
                 num_layers: int = 4,
                 ops: Sequence[str] = DEEPMIND_OPS,
                 translate_const: float = 100.,
                 cutout_const: float = 40.,
                 fill: Sequence[int] = dm_ops.GREY,
                 channel_order: str = 'bgr',
                 solarize_threshold_wraps: bool = True,
                 contrast_reference: str = 'size',
                 interpolation: str = 'nearest',
                 keep_dtype: bool = False) -> None:
        if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) \
                or not magnitude >= 0:
            raise ValueError(f'magnitude must be a number >= 0, got {magnitude!r}')
        if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
            raise ValueError(f'image_size must be a positive int or None, got {image_size!r}')
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f'num_layers must be an int >= 0, got {num_layers!r}')
        unknown = [name for name in ops if name not in DEEPMIND_OPS]
        if unknown or not len(ops):
            raise ValueError(f'ops must be a non-empty subset of {list(DEEPMIND_OPS)}; '
                             f'got {list(ops)} (unknown: {unknown})')
        if channel_order not in dm_ops.CHANNEL_ORDERS:
            raise ValueError(f'channel_order must be one of {dm_ops.CHANNEL_ORDERS}, got '
                             f'{channel_order!r}')
        if contrast_reference not in dm_ops.CONTRAST_REFERENCES:
            raise ValueError(f'contrast_reference must be one of '
                             f'{dm_ops.CONTRAST_REFERENCES}, got {contrast_reference!r}')
        if interpolation not in dm_ops.INTERPOLATIONS:
            raise ValueError(f'interpolation must be one of {dm_ops.INTERPOLATIONS}, got '
                             f'{interpolation!r}')
        fill = tuple(int(v) for v in fill)
        if len(fill) != 3 or not all(0 <= v <= 255 for v in fill):
            raise ValueError(f'fill must be three values in [0, 255], got {fill!r}')
        self.magnitude = magnitude
        self.image_size = image_size
        self.num_layers = num_layers
        self.ops = tuple(ops)
        self.translate_const = translate_const
        self.cutout_const = cutout_const
        self.fill = fill
        self.channel_order = channel_order
        self.solarize_threshold_wraps = solarize_threshold_wraps
        self.contrast_reference = contrast_reference
        self.interpolation = interpolation
        self.keep_dtype = bool(keep_dtype)
        self.arguments: Dict[str, object] = {
            name: op_argument(name, magnitude, translate_const, cutout_const,
                              solarize_threshold_wraps) for name in self.ops}

    def apply_op(self, name: str, img: np.ndarray) -> np.ndarray:
        """Apply op ``name`` at this transform's magnitude to a uint8 ``H x W x 3`` image
        (drawing the random sign or Cutout centre from NumPy's global generator)."""
        arg = self.arguments[name]
        if name in _SIGNED and np.random.uniform() < 0.5:
            arg = -arg  # DeepMind: floor(U + 0.5) decides the sign, 50 / 50
        if name == 'AutoContrast':
            return dm_ops.autocontrast(img)
        if name == 'Equalize':
            return dm_ops.equalize(img)
        if name == 'Invert':
            return dm_ops.invert(img)
        if name == 'Rotate':
            return dm_ops.rotate(img, arg, self.fill, self.interpolation)
        if name == 'Posterize':
            return dm_ops.posterize(img, arg)
        if name == 'Solarize':
            return dm_ops.solarize(img, arg)
        if name == 'SolarizeAdd':
            return dm_ops.solarize_add(img, arg)
        if name == 'Color':
            return dm_ops.color(img, arg, self.channel_order)
        if name == 'Contrast':
            return dm_ops.contrast(img, arg, self.contrast_reference, self.channel_order)
        if name == 'Brightness':
            return dm_ops.brightness(img, arg)
        if name == 'Sharpness':
            return dm_ops.sharpness(img, arg)
        if name == 'ShearX':
            return dm_ops.shear_x(img, arg, self.fill, self.interpolation)
        if name == 'ShearY':
            return dm_ops.shear_y(img, arg, self.fill, self.interpolation)
        if name == 'TranslateX':
            return dm_ops.translate_x(img, arg, self.fill, self.interpolation)
        if name == 'TranslateY':
            return dm_ops.translate_y(img, arg, self.fill, self.interpolation)
        # Cutout: the centre row, then the centre column, uniform over the image.
        h, w = img.shape[:2]
        center_y, center_x = np.random.randint(0, h), np.random.randint(0, w)
        return dm_ops.cutout(img, arg, center_y, center_x, self.fill)

    def _check(self, img: np.ndarray) -> None:
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError('NFNetRandAugment needs an H x W x 3 image, got '
                             f'{getattr(img, "shape", type(img))}')
        if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
            raise TypeError(f'NFNetRandAugment needs an integer or floating image (uint8, '
                            f'float16/32/64, ...), got {img.dtype}')
        if self.image_size is not None and img.shape[:2] != (self.image_size,) * 2:
            raise ValueError(
                f'NFNetRandAugment(image_size={self.image_size}) got a {img.shape[0]} x '
                f'{img.shape[1]} image: place it after the crop / resize to '
                f'{self.image_size} px (or set image_size=None)')

    def transform(self, results: Dict) -> Dict:
        img = results['img']
        self._check(img)
        dtype = img.dtype
        if dtype != np.uint8:  # DeepMind: clip to [0, 255], cast to uint8 (truncates)
            img = np.clip(np.nan_to_num(img.astype(np.float64)), 0, 255).astype(np.uint8)
        for _ in range(self.num_layers):
            name = self.ops[np.random.randint(0, len(self.ops))]
            img = self.apply_op(name, img)
        results['img'] = img.astype(dtype) if self.keep_dtype else img
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(magnitude={self.magnitude}, '
                f'image_size={self.image_size}, num_layers={self.num_layers}, '
                f'ops={list(self.ops)}, translate_const={self.translate_const}, '
                f'cutout_const={self.cutout_const}, fill={self.fill}, '
                f'channel_order={self.channel_order!r}, '
                f'solarize_threshold_wraps={self.solarize_threshold_wraps}, '
                f'contrast_reference={self.contrast_reference!r}, '
                f'interpolation={self.interpolation!r}, keep_dtype={self.keep_dtype})')
