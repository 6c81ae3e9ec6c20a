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

    The resize kernel is ``interpolation`` with ``backend`` (mmcv's ``imresize``; the
    recipe uses Pillow bicubic, which *antialiases* when it shrinks).  DeepMind resizes with
    TF's ``tf.image.resize(..., BICUBIC)``, which does not antialias and does not clamp, so
    the ``'deepmind'`` mode reproduces DeepMind's geometry (what part of the image is seen,
    at what size) but not yet its resampling kernel.

    Args:
        crop_size (int): Side ``S`` of the square output.
        pad (int): Pixels added to ``S`` before the resize (DeepMind: 32). Defaults to 32.
        mode (str): ``'deepmind'`` or ``'short_side'``. Defaults to ``'deepmind'``.
        interpolation (str): mmcv ``imresize`` interpolation. Defaults to ``'bicubic'``.
        backend (str): ``'pillow'`` or ``'cv2'``. Defaults to ``'pillow'``.
    """

    def __init__(self,
                 crop_size: int,
                 pad: int = 32,
                 mode: str = 'deepmind',
                 interpolation: str = 'bicubic',
                 backend: str = 'pillow') -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if not isinstance(crop_size, int) or crop_size <= 0:
            raise ValueError(f'crop_size must be a positive int, got {crop_size!r}')
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f'pad must be a non-negative int, got {pad!r}')
        self.crop_size = crop_size
        self.pad = pad
        self.mode = mode
        self.interpolation = interpolation
        self.backend = backend
        # MMPretrain's own stock steps, for mode='short_side'.
        self._short_side_steps = (
            ResizeEdge(scale=crop_size + pad, edge='short', backend=backend,
                       interpolation=interpolation),
            CenterCrop(crop_size=crop_size))

    def _stock(self, results: Dict) -> Dict:
        for step in self._short_side_steps:
            results = step(results)
        return results

    def transform(self, results: Dict) -> Dict:
        if self.mode == 'short_side':
            return self._stock(results)
        side = self.crop_size + self.pad
        img, w_scale, h_scale = mmcv.imresize(
            results['img'], (side, side), interpolation=self.interpolation,
            return_scale=True, backend=self.backend)
        off = (self.pad + 1) // 2
        img = img[off:off + self.crop_size, off:off + self.crop_size]
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale'] = (side, side)
        results['scale_factor'] = (w_scale, h_scale)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(crop_size={self.crop_size}, pad={self.pad}, '
                f'mode={self.mode!r}, interpolation={self.interpolation!r}, '
                f'backend={self.backend!r})')
