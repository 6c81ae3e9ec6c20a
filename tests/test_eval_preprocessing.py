"""The ImageNet configs evaluate with DeepMind's ``eval_preproc='resize_crop_32'``.

DeepMind (deepmind-research ``nfnets/dataset.py``, ``_decode_and_resize_then_crop``) resizes
the whole image to ``(S + 32) x (S + 32)`` -- the aspect ratio is not kept -- and cuts out
the centre ``S x S`` (offset ``(32 + 1) // 2 = 16``), resizing with TF's bicubic (no
antialiasing, float output).  A 400 x 300 (W x H) image with a known pattern goes through
the configs' test pipelines and must equal a reference computed here (the TF-bicubic
formula reference of ``test_tf_resize.py``); the documented switches must give MMPretrain's
stock steps instead: ``mode='short_side'`` its short-side resize + centre crop,
``backend='pillow'`` Pillow's bicubic.
"""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image
from test_tf_resize import tf_bicubic_reference

import nfnets_mm  # noqa: F401
from nfnets_mm.datasets import NFNetEvalResizeCrop

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
W, H = 400, 300


def pattern() -> np.ndarray:
    """H x W x 3 uint8 RGB: x ramp, y ramp, 10 px checkerboard (every column distinct)."""
    y, x = np.mgrid[:H, :W]
    r = (x * 255 // (W - 1)).astype(np.uint8)
    g = (y * 255 // (H - 1)).astype(np.uint8)
    b = np.where((x // 10 + y // 10) % 2 == 0, 230, 20).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def resize(rgb: np.ndarray, w: int, h: int, backend: str) -> np.ndarray:
    if backend == 'tf':
        return tf_bicubic_reference(rgb, h, w)
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


def squash_reference(rgb: np.ndarray, s: int, pad: int = 32, backend='tf') -> np.ndarray:
    """DeepMind's geometry: whole image to (s + pad)^2, centre s x s at offset (pad+1)//2."""
    big = resize(rgb, s + pad, s + pad, backend)
    off = (pad + 1) // 2
    return big[off:off + s, off:off + s]


def short_side_reference(rgb: np.ndarray, s: int, pad: int = 32, backend='tf') -> np.ndarray:
    """Stock path: short side to s + pad keeping the aspect ratio, centre s x s."""
    h, w = rgb.shape[:2]
    short = s + pad
    size = (short, int(short * h / w)) if w < h else (int(short * w / h), short)
    big = resize(rgb, *size, backend)
    top, left = (big.shape[0] - s) // 2, (big.shape[1] - s) // 2
    return big[top:top + s, left:left + s]


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('eval') / 'pattern_400x300.png'
    Image.fromarray(pattern()).save(path)  # lossless
    return str(path)


def run_pipeline(pipeline_cfg, image_file) -> np.ndarray:
    """The config's pipeline on ``image_file``; returns the packed image as H x W x RGB."""
    from mmpretrain.registry import TRANSFORMS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        steps = [TRANSFORMS.build(t) for t in pipeline_cfg]
    results = dict(img_path=image_file, gt_label=0)
    for step in steps:
        results = step(results)
    chw = results['inputs'].numpy()  # LoadImageFromFile decodes BGR; PackInputs keeps it
    return chw.transpose(1, 2, 0)[..., ::-1]


def assert_close(out: np.ndarray, ref: np.ndarray, s: int):
    """TF bicubic: float32 vs the float64 formula; Pillow: uint8, off by at most 1."""
    assert out.shape == ref.shape == (s, s, 3)
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    tol = 1e-2 if out.dtype == np.float32 else 1
    assert diff.max() <= tol, f'max |diff| {diff.max()}'


CASES = [('configs/nfnet/f0_imagenet.py', 256, ('val_dataloader', 'test_dataloader')),
         ('configs/nfnet/f3_imagenet.py', 416, ('val_dataloader', 'test_dataloader')),
         ('configs/nfnet/f0_finetune-320px_imagenet.py', 320, ('test_dataloader',)),
         ('configs/nfnet/dm_weights/f2_imagenet.py', 352, ('test_dataloader',))]


@pytest.mark.parametrize('path,s,loaders', CASES)
def test_config_eval_is_deepmind_squash_crop(path, s, loaders, image_file):
    cfg = Config.fromfile(osp.join(REPO, path))
    ref = squash_reference(pattern(), s)
    # The reference and the stock crop really differ on this image (DeepMind sees
    # s / (s + 32) of the width, the stock path s / (4 / 3 * (s + 32))), and so do the
    # TF and Pillow kernels (Pillow antialiases the 10 px checkerboard's edges).
    assert np.abs(ref - short_side_reference(pattern(), s)).mean() > 10
    assert np.abs(ref - squash_reference(pattern(), s, backend='pillow')).max() > 5
    for loader in loaders:
        assert_close(run_pipeline(cfg[loader].dataset.pipeline, image_file), ref, s)


@pytest.mark.parametrize('path,s,loaders', CASES[1:2] + CASES[3:])
def test_short_side_switch(path, s, loaders, image_file):
    cfg = Config.fromfile(osp.join(REPO, path))
    # The documented command-line switch (tools/*.py --cfg-options ...).
    cfg.merge_from_dict({f'{loader}.dataset.pipeline.1.mode': 'short_side'
                         for loader in loaders})
    ref = short_side_reference(pattern(), s)
    for loader in loaders:
        assert_close(run_pipeline(cfg[loader].dataset.pipeline, image_file), ref, s)


@pytest.mark.parametrize('path,s,loaders', CASES[:1] + CASES[2:3])
def test_pillow_backend_switch(path, s, loaders, image_file):
    cfg = Config.fromfile(osp.join(REPO, path))
    cfg.merge_from_dict({f'{loader}.dataset.pipeline.1.backend': 'pillow'
                         for loader in loaders})
    ref = squash_reference(pattern(), s, backend='pillow')
    for loader in loaders:
        out = run_pipeline(cfg[loader].dataset.pipeline, image_file)
        assert out.dtype == np.uint8
        assert_close(out, ref, s)


@pytest.mark.parametrize('mode', ['deepmind', 'short_side'])
@pytest.mark.parametrize('hw', [(300, 400), (400, 300), (50, 70)])
def test_transform_shapes(mode, hw):
    img = np.random.RandomState(0).randint(0, 256, (*hw, 3), dtype=np.uint8)
    out = NFNetEvalResizeCrop(crop_size=64, mode=mode)(dict(img=img))
    assert out['img'].shape == (64, 64, 3) and tuple(out['img_shape']) == (64, 64)


def test_transform_rejects_unknown_mode():
    with pytest.raises(ValueError, match='mode'):
        NFNetEvalResizeCrop(crop_size=64, mode='resize_crop')
    with pytest.raises(ValueError, match="'tf', 'pillow', 'cv2'"):
        NFNetEvalResizeCrop(crop_size=64, backend='torch')
    with pytest.raises(ValueError, match='bicubic'):
        NFNetEvalResizeCrop(crop_size=64, backend='tf', interpolation='bilinear')
