"""TensorFlow's bicubic resize without antialiasing, in NumPy (DeepMind's train and eval resize).

DeepMind's NFNet data pipeline (``nfnets/dataset.py``) resizes with
``tf.image.resize(image, size, tf.image.ResizeMethod.BICUBIC)``: TF 2's ``ResizeBicubic``
kernel with ``half_pixel_centers=True`` and no antialiasing.  Per axis, output pixel ``o``
of an ``in_size -> out_size`` resize samples the input at

    x = (o + 0.5) * in_size / out_size - 0.5                                   (1)

from the four taps ``floor(x) - 1 .. floor(x) + 2`` with Keys' cubic convolution kernel
(R. G. Keys, 1981) at ``a = -0.5``:

    W(t) = (a + 2)|t|^3 - (a + 3)|t|^2 + 1           for |t| <= 1
    W(t) = a|t|^3 - 5a|t|^2 + 8a|t| - 4a             for 1 < |t| < 2           (2)

The fractional part ``d = x - floor(x)`` is quantised to ``round(d * 1024) / 1024`` (TF
reads the weights from a 1025-entry table), a tap outside ``[0, in_size)`` gets weight 0
and the four weights are renormalised to sum to 1 (TF's ``half_pixel_centers`` border rule).
The two axes are separable; TF interpolates along the width first, then the height.

Unlike Pillow's bicubic (what MMPretrain's stock pipelines use), there is no antialiasing
filter when shrinking (the kernel is not widened by the scale), and the output is float32
and *not* clamped: overshoots such as ``-51.1`` or ``336.6`` are kept, as in DeepMind's
pipeline (its RandAugment clips to ``[0, 255]`` itself).
"""
from typing import Tuple

import numpy as np

#: Keys' cubic-convolution parameter used by TF's ``half_pixel_centers`` bicubic.
KEYS_A = -0.5
#: TF reads the kernel weights from a table of this many steps per pixel.
TABLE_SIZE = 1024


def keys_cubic(t: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel ``W(t)`` (eq. 2), elementwise, float32."""
    t = np.abs(np.asarray(t, np.float32))
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0)).astype(np.float32)


def _axis_taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``(out_size, 4)`` (clamped into range) and weights ``(out_size, 4)`` float32
    of the four taps of every output pixel along one axis (eqs. 1, 2 and TF's border rule)."""
    scale = np.float32(in_size) / np.float32(out_size)  # float32, as TF
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(pos).astype(np.int64)
    frac = np.rint((pos - base) * TABLE_SIZE) / TABLE_SIZE  # TF's table lookup (eq. 1)
    offsets = np.arange(-1, 3)
    taps = base[:, None] + offsets[None]
    weights = keys_cubic(frac[:, None] - offsets[None])
    inside = (taps >= 0) & (taps < in_size)
    weights = np.where(inside, weights, np.float32(0))
    weights = weights / weights.sum(1, keepdims=True)
    return np.clip(taps, 0, in_size - 1), weights.astype(np.float32)


def _resize_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    taps, weights = _axis_taps(img.shape[axis], out_size)
    out = 0
    for k in range(4):
        w_shape = [1] * img.ndim
        w_shape[axis] = out_size
        out = out + np.take(img, taps[:, k], axis=axis) * weights[:, k].reshape(w_shape)
    return out.astype(np.float32)


def tf_bicubic_resize(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize like ``tf.image.resize(img, size, 'bicubic')`` (no antialiasing, not clamped).

    Args:
        img (np.ndarray): ``H x W`` or ``H x W x C`` image of any real dtype (uint8,
            float16/32/64, ...); it is read as float32, as TF casts it.
        size (tuple[int, int]): Output ``(height, width)``, each >= 1.

    Returns:
        np.ndarray: float32 ``height x width (x C)`` image; values may lie outside the
        input's range (bicubic overshoot).
    """
    if not (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and s >= 1 for s in size)):
        raise ValueError(f'size must be (height, width) of positive ints, got {size!r}')
    img = np.asarray(img)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        raise ValueError(f'img must be an H x W or H x W x C image, got shape {img.shape}')
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f'img must have an integer or floating dtype, got {img.dtype}')
    img = img.astype(np.float32, copy=False)
    out = _resize_axis(img, int(size[1]), axis=1)  # width first, as TF
    return _resize_axis(out, int(size[0]), axis=0)


__all__ = ['tf_bicubic_resize', 'keys_cubic', 'KEYS_A', 'TABLE_SIZE']
