"""The 16 image ops of DeepMind's RandAugment (``nfnets/autoaugment.py``), in NumPy.

Every op takes and returns an ``H x W x 3`` uint8 image and reproduces the TF op's
arithmetic, including where it differs from PIL / mmcv (which MMPretrain's ops follow):

* ``blend`` (Color, Contrast, Brightness, Sharpness) works in float32 and *truncates* to
  uint8 (mmcv's ``cv2.addWeighted`` rounds); factors 0 and 1 return an input unchanged.
* Contrast blends toward a constant that depends on the image *size*, not on its pixels
  (see :func:`contrast`).
* Color's grey is TF's ``rgb_to_grayscale``: weights (0.2989, 0.5870, 0.1140) on the
  image scaled by 1/255, then ``x * 255.5`` truncated (mmcv: (0.299, 0.587, 0.114), rounded).
* Sharpness smooths with ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` and truncates.
* Cutout's box is centred on a uniform pixel and *clipped* at the borders (mmcv shifts a
  box that would cross the top / left border back inside, keeping its full size).
* Rotate, Shear and Translate are ``tensorflow_addons`` projective transforms: output pixel
  ``(x, y)`` reads input ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` (float32) at the nearest
  pixel (round half away from zero); reads outside the image give the fill, grey 128 on
  every channel (DeepMind's ``wrap`` / ``unwrap`` with ``replace = [128] * 3``).

Colour-dependent ops take ``channel_order`` (``'bgr'``, MMPretrain's ``LoadImageFromFile``
default, or ``'rgb'``); only Color's grey weights depend on it.
"""
from typing import Sequence

import cv2
import mmcv
import numpy as np

#: DeepMind's ``replace_value`` for the geometric ops and Cutout.
GREY = (128, 128, 128)
#: TF's ``rgb_to_grayscale`` weights, in R, G, B order.
TF_GREY_WEIGHTS_RGB = (0.2989, 0.5870, 0.1140)
CHANNEL_ORDERS = ('bgr', 'rgb')
_F32 = np.float32


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    """``image1 + factor * (image2 - image1)`` in float32: truncated to uint8 when
    ``0 < factor < 1`` (interpolation), clipped to [0, 255] then truncated otherwise."""
    if factor == 0.0:
        return image1
    if factor == 1.0:
        return image2
    img1 = image1.astype(_F32)
    temp = img1 + _F32(factor) * (image2.astype(_F32) - img1)
    if 0.0 < factor < 1.0:
        return temp.astype(np.uint8)
    return np.clip(temp, 0.0, 255.0).astype(np.uint8)


def tf_grayscale(image: np.ndarray, channel_order: str = 'bgr') -> np.ndarray:
    """TF's ``rgb_to_grayscale`` of a uint8 image, ``H x W`` uint8."""
    weights = np.array(TF_GREY_WEIGHTS_RGB, _F32)
    if channel_order == 'bgr':
        weights = weights[::-1]
    scaled = image.astype(_F32) * _F32(1.0 / 255)  # convert_image_dtype(uint8 -> float32)
    grey = scaled[..., 0] * weights[0] + scaled[..., 1] * weights[1] + scaled[..., 2] * weights[2]
    return (grey * _F32(255.5)).astype(np.uint8)  # convert_image_dtype(float32 -> uint8)


def color(image: np.ndarray, factor: float, channel_order: str = 'bgr') -> np.ndarray:
    """Blend from the image's TF grey version (factor 0) to the image (factor 1)."""
    grey = tf_grayscale(image, channel_order)
    return blend(np.repeat(grey[..., None], 3, axis=-1), image, factor)


def contrast_constant(height: int, width: int) -> int:
    """The grey level DeepMind's Contrast blends toward: ``min(H * W / 256, 255)``, truncated.

    DeepMind's (and TF EfficientNet's) ``contrast`` means to blend toward the mean grey
    level, but it takes ``sum(histogram) / 256``: the sum of a 256-bin histogram is the
    *number of pixels*, so the "mean" is ``H * W / 256`` whatever the pixels are.  At
    192 px (F0) it is 144, at 224 px 196, and from 256 px (F2 and larger) it saturates at
    255: with factor 1.9 (m10) or 2.8 (m15), ``255 + f * (x - 255)`` darkens the image
    strongly.  mmcv's / PIL's contrast blends toward the true mean grey instead.
    """
    return int(np.clip(_F32(height * width) / _F32(256.0), 0.0, 255.0).astype(np.uint8))


#: ``reference`` values of :func:`contrast`.
CONTRAST_REFERENCES = ('size', 'mean')


def contrast(image: np.ndarray, factor: float, reference: str = 'size',
             channel_order: str = 'bgr') -> np.ndarray:
    """Blend from a uniform grey (factor 0) to the image.

    ``reference='size'`` (DeepMind's): the grey is :func:`contrast_constant`, set by the
    image size only.  ``reference='mean'`` (PIL's ``ImageEnhance.Contrast``, mmcv's): the
    image's mean grey level, rounded (TF's grey, :func:`tf_grayscale`).
    """
    if reference == 'size':
        level = contrast_constant(*image.shape[:2])
    elif reference == 'mean':
        level = int(tf_grayscale(image, channel_order).mean() + 0.5)
    else:
        raise ValueError(f'reference must be one of {CONTRAST_REFERENCES}, got {reference!r}')
    return blend(np.full_like(image, level), image, factor)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend from black (factor 0) to the image."""
    return blend(np.zeros_like(image), image, factor)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend from a smoothed image (PIL's SMOOTH kernel, ``[[1,1,1],[1,5,1],[1,1,1]] / 13``,
    'VALID' 3 x 3, truncated to uint8; the 1-pixel border keeps the original) to the image."""
    img = image.astype(_F32)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], _F32) / _F32(13.)
    h, w = image.shape[:2]
    smooth = np.zeros((h - 2, w - 2, image.shape[2]), _F32)
    for dy in range(3):
        for dx in range(3):
            smooth += img[dy:dy + h - 2, dx:dx + w - 2] * kernel[dy, dx]
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = np.clip(smooth, 0.0, 255.0).astype(np.uint8)
    return blend(degenerate, image, factor)


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top ``bits`` bits of every value (``bits >= 8``: unchanged)."""
    shift = 8 - int(bits)
    if shift <= 0:
        return image
    return np.left_shift(np.right_shift(image, shift), shift).astype(np.uint8)


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    """Values ``>= threshold`` become ``255 - value``."""
    return np.where(image < threshold, image, 255 - image).astype(np.uint8)


def solarize_add(image: np.ndarray, addition: int, threshold: int = 128) -> np.ndarray:
    """Values ``< threshold`` get ``addition`` added, clipped to [0, 255]."""
    added = np.clip(image.astype(np.int64) + int(addition), 0, 255).astype(np.uint8)
    return np.where(image < threshold, added, image)


def autocontrast(image: np.ndarray) -> np.ndarray:
    """Per channel, stretch ``[lo, hi]`` to ``[0, 255]`` in float32, truncated (unchanged
    channels where ``hi == lo``)."""
    out = image.copy()
    for c in range(image.shape[2]):
        channel = image[..., c]
        lo, hi = _F32(channel.min()), _F32(channel.max())
        if hi > lo:
            scale = _F32(255.0) / (hi - lo)
            offset = -lo * scale
            out[..., c] = np.clip(channel.astype(_F32) * scale + offset, 0., 255.).astype(
                np.uint8)
    return out


def equalize(image: np.ndarray) -> np.ndarray:
    """PIL's per-channel histogram equalisation; mmcv's ``imequalize`` computes exactly
    DeepMind's lookup table (``(cumsum + step // 2) // step``, shifted by one)."""
    return mmcv.imequalize(image)


def invert(image: np.ndarray) -> np.ndarray:
    """``255 - image``."""
    return mmcv.iminvert(image)


#: ``interpolation`` values of the geometric ops: TF's nearest, or OpenCV's smooth kernels.
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic')


def _round_half_away(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)  # exact for float32 inputs
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def projective_nearest(image: np.ndarray, transform: Sequence[float],
                       fill: Sequence[int] = GREY) -> np.ndarray:
    """``tensorflow_addons.image.transform`` with nearest interpolation and a constant fill.

    Output pixel ``(x, y)`` reads input ``((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k)``
    with ``k = c0 x + c1 y + 1`` (``transform = [a0, a1, a2, b0, b1, b2, c0, c1]``, float32)
    at the nearest pixel; reads outside the image take ``fill``.
    """
    a0, a1, a2, b0, b1, b2, c0, c1 = (_F32(t) for t in transform)
    h, w = image.shape[:2]
    y, x = np.meshgrid(np.arange(h, dtype=_F32), np.arange(w, dtype=_F32), indexing='ij')
    k = c0 * x + c1 * y + _F32(1)
    src_x = _round_half_away((a0 * x + a1 * y + a2) / k)
    src_y = _round_half_away((b0 * x + b1 * y + b2) / k)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    out = np.empty_like(image)
    out[...] = np.asarray(fill, image.dtype)
    out[inside] = image[src_y[inside], src_x[inside]]
    return out


def projective(image: np.ndarray, transform: Sequence[float], fill: Sequence[int] = GREY,
               interpolation: str = 'nearest') -> np.ndarray:
    """:func:`projective_nearest` (DeepMind's), or the same affine map resampled with
    OpenCV's ``'bilinear'`` / ``'bicubic'`` kernel (``cv2.warpAffine`` with the inverse map;
    MMPretrain's stock geometric ops are bicubic).  ``transform``'s ``c0, c1`` must be 0."""
    if interpolation == 'nearest':
        return projective_nearest(image, transform, fill)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f'interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}')
    matrix = np.array([transform[:3], transform[3:6]], np.float64)
    flag = cv2.INTER_LINEAR if interpolation == 'bilinear' else cv2.INTER_CUBIC
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=flag | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(float(v) for v in fill))


def rotate(image: np.ndarray, degrees: float, fill: Sequence[int] = GREY,
           interpolation: str = 'nearest') -> np.ndarray:
    """``tfa.image.rotate`` by ``degrees`` (counter-clockwise for positive angles) about
    the centre ``((W - 1) / 2, (H - 1) / 2)``."""
    angle = _F32(degrees * (np.pi / 180.0))
    cos, sin = np.cos(angle), np.sin(angle)
    h, w = _F32(image.shape[0]), _F32(image.shape[1])
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / _F32(2.0)
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / _F32(2.0)
    return projective(image, [cos, -sin, x_off, sin, cos, y_off, 0., 0.], fill, interpolation)


def translate_x(image: np.ndarray, pixels: float, fill: Sequence[int] = GREY,
                interpolation: str = 'nearest') -> np.ndarray:
    """Output ``(x, y)`` reads input ``(x + pixels, y)``: the content moves left."""
    return projective(image, [1., 0., pixels, 0., 1., 0., 0., 0.], fill, interpolation)


def translate_y(image: np.ndarray, pixels: float, fill: Sequence[int] = GREY,
                interpolation: str = 'nearest') -> np.ndarray:
    """Output ``(x, y)`` reads input ``(x, y + pixels)``: the content moves up."""
    return projective(image, [1., 0., 0., 0., 1., pixels, 0., 0.], fill, interpolation)


def shear_x(image: np.ndarray, level: float, fill: Sequence[int] = GREY,
            interpolation: str = 'nearest') -> np.ndarray:
    """Output ``(x, y)`` reads input ``(x + level * y, y)`` (sheared about the top-left)."""
    return projective(image, [1., level, 0., 0., 1., 0., 0., 0.], fill, interpolation)


def shear_y(image: np.ndarray, level: float, fill: Sequence[int] = GREY,
            interpolation: str = 'nearest') -> np.ndarray:
    """Output ``(x, y)`` reads input ``(x, level * x + y)``."""
    return projective(image, [1., 0., 0., level, 1., 0., 0., 0.], fill, interpolation)


def cutout(image: np.ndarray, pad_size: int, center_y: int, center_x: int,
           fill: Sequence[int] = GREY) -> np.ndarray:
    """Fill rows ``[cy - pad, cy + pad)`` x columns ``[cx - pad, cx + pad)``, clipped to
    the image (a box of up to ``2 pad x 2 pad``; smaller at the borders)."""
    h, w = image.shape[:2]
    out = image.copy()
    top, bottom = max(0, center_y - pad_size), min(h, center_y + pad_size)
    left, right = max(0, center_x - pad_size), min(w, center_x + pad_size)
    out[top:bottom, left:right] = np.asarray(fill, image.dtype)
    return out


__all__ = ['GREY', 'TF_GREY_WEIGHTS_RGB', 'CHANNEL_ORDERS', 'blend', 'tf_grayscale', 'color',
           'contrast_constant', 'CONTRAST_REFERENCES', 'contrast', 'brightness', 'sharpness',
           'posterize', 'solarize', 'solarize_add', 'autocontrast', 'equalize', 'invert',
           'INTERPOLATIONS', 'projective_nearest', 'projective', 'rotate', 'translate_x',
           'translate_y', 'shear_x', 'shear_y', 'cutout']
