"""``NFNetEvalResizeCrop``: the NFNet recipe's eval resize + centre crop, with a switch.

DeepMind's NFNet experiment (``deepmind-research/nfnets/experiment_nfnets.py``) evaluates
with ``eval_preproc='resize_crop_32'`` (``nfnets/dataset.py``): the *whole* image is resized
to ``(S + 32) x (S + 32)`` without keeping its aspect ratio, then the centre ``S x S`` is
cut out.  MMPretrain's stock eval (``ResizeEdge(edge='short')`` + ``CenterCrop``) keeps the
aspect ratio instead, and so sees less of a non-square image: for a 4:3 image DeepMind's
crop covers ``S / (S + 32)`` of the width (89% at S = 256), the stock one
``S / (4 / 3 * (S + 32))`` (67%).
"""
from typing import Dict

import mmcv
from mmengine.registry import TRANSFORMS
from mmcv.transforms import BaseTransform
from mmpretrain.datasets.transforms import CenterCrop, ResizeEdge

from .random_crop import check_backend
from .tf_resize import tf_bicubic_resize

#: The two modes of :class:`NFNetEvalResizeCrop`.
MODES = ('deepmind', 'short_side')


@TRANSFORMS.register_module()
class NFNetEvalResizeCrop(BaseTransform):
    """Resize, then centre-crop to ``crop_size x crop_size`` for evaluation.

    Registered in MMEngine's root ``TRANSFORMS`` registry, so ``type='NFNetEvalResizeCrop'``
    builds under ``default_scope='mmpretrain'`` (and any other downstream scope).

    Modes (``mode``, the one switch between the two protocols):

    * ``'deepmind'`` (default; DeepMind's ``eval_preproc='resize_crop_32'``): an
      ``H x W`` image is resized to ``(crop_size + pad) x (crop_size + pad)`` -- the aspect
      ratio is *not* kept -- and the ``crop_size x crop_size`` window at offset
      ``(pad + 1) // 2`` in both axes is cut out (DeepMind's ``((scaled - crop) + 1) // 2``;
      16 for ``pad=32``).  Every pixel column and row of the image contributes.
    * ``'short_side'`` (MMPretrain's stock path): exactly
      ``ResizeEdge(scale=crop_size + pad, edge='short')`` followed by
      ``CenterCrop(crop_size)``, i.e. the short side goes to ``crop_size + pad`` keeping the
      aspect ratio and the centre square is cut out.  A 300 x 400 (H x W) image becomes
      ``(S + 32) x int((S + 32) * 4 / 3)`` before the crop.

    Both modes output ``crop_size x crop_size x C`` (``img_shape == (crop_size, crop_size)``)
    from any ``H x W x C`` input.

    The resize (the other switch, ``backend``): ``'tf'`` (default) is DeepMind's
    ``tf.image.resize(..., BICUBIC)`` -- Keys bicubic, half-pixel centres, *no*
    antialiasing, float32 output not clamped (:func:`tf_bicubic_resize`); ``'pillow'`` or
    ``'cv2'`` resize with mmcv's ``imresize`` and ``interpolation`` (MMPretrain's stock
    Pillow bicubic antialiases when it shrinks, and returns uint8).  In ``'short_side'``
    mode with ``backend='tf'`` the target size is ``ResizeEdge``'s.

    Args:
        crop_size (int): Side ``S`` of the square output.
        pad (int): Pixels added to ``S`` before the resize (DeepMind: 32). Defaults to 32.
        mode (str): ``'deepmind'`` or ``'short_side'``. Defaults to ``'deepmind'``.
        interpolation (str): mmcv ``imresize`` interpolation for the ``'pillow'`` /
            ``'cv2'`` backends; must be ``'bicubic'`` with ``'tf'``. Defaults to ``'bicubic'``.
        backend (str): ``'tf'``, ``'pillow'`` or ``'cv2'``. Defaults to ``'tf'``.
    """

    def __init__(self,
                 crop_size: int,
                 pad: int = 32,
                 mode: str = 'deepmind',
                 interpolation: str = 'bicubic',
                 backend: str = 'tf') -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        check_backend(backend, interpolation)
        if not isinstance(crop_size, int) or crop_size <= 0:
            raise ValueError(f'crop_size must be a positive int, got {crop_size!r}')
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f'pad must be a non-negative int, got {pad!r}')
        self.crop_size = crop_size
        self.pad = pad
        self.mode = mode
        self.interpolation = interpolation
        self.backend = backend
        # MMPretrain's own stock steps, for mode='short_side' (mmcv's resize backends).
        self._short_side_steps = (
            ResizeEdge(scale=crop_size + pad, edge='short',
                       backend='cv2' if backend == 'tf' else backend,
                       interpolation=interpolation),
            CenterCrop(crop_size=crop_size))

    def _resize(self, results: Dict, size) -> Dict:
        """``results['img']`` resized to ``size = (width, height)`` with the backend."""
        img = results['img']
        h, w = img.shape[:2]
        if self.backend == 'tf':
            img = tf_bicubic_resize(img, (size[1], size[0]))
        else:
            img = mmcv.imresize(img, size, interpolation=self.interpolation,
                                backend=self.backend)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale'] = tuple(size)
        results['scale_factor'] = (size[0] / w, size[1] / h)
        return results

    def _stock(self, results: Dict) -> Dict:
        resize_edge, center_crop = self._short_side_steps
        if self.backend != 'tf':
            return center_crop(resize_edge(results))
        # ResizeEdge's target size, TF's resize.
        h, w = results['img'].shape[:2]
        side = self.crop_size + self.pad
        size = (side, int(side * h / w)) if w < h else (int(side * w / h), side)
        return center_crop(self._resize(results, size))

    def transform(self, results: Dict) -> Dict:
        if self.mode == 'short_side':
            return self._stock(results)
        side = self.crop_size + self.pad
        results = self._resize(results, (side, side))
        off = (self.pad + 1) // 2
        img = results['img'][off:off + self.crop_size, off:off + self.crop_size]
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(crop_size={self.crop_size}, pad={self.pad}, '
                f'mode={self.mode!r}, interpolation={self.interpolation!r}, '
                f'backend={self.backend!r})')
