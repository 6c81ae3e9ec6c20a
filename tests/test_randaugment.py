"""``NFNetRandAugment`` is DeepMind's RandAugment (``nfnets/autoaugment.py``), op by op.

References are written here from DeepMind's TF code (the formulas, not the package's
functions): level maps, the float32-then-truncate ``blend``, the image-size Contrast
constant, TF's grey, the SMOOTH-kernel Sharpness, the ``tensorflow_addons`` projective
transforms with nearest resampling and a grey (128, 128, 128) fill, the clipped Cutout box.
"""
import glob
import os.path as osp

import numpy as np
import pytest
from conftest import REPO_ROOT
from mmengine.config import Config

import nfnets_mm  # noqa: F401
from nfnets_mm.datasets.transforms import DEEPMIND_OPS, NFNetRandAugment
from nfnets_mm.variants import get_variant

RECIPES = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'nfnet', 'f[0-7]_imagenet.py')))
GREY = (128, 128, 128)  # DeepMind's replace_value
MAGNITUDES = (5, 10, 15)
f32 = np.float32


def photo(size=(48, 40), seed=0):
    """A smooth-ish colour image with edges (like a photo crop), uint8 BGR."""
    rng = np.random.RandomState(seed)
    h, w = size
    y, x = np.mgrid[:h, :w]
    base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1)
    return np.clip(base + rng.randint(-40, 41, base.shape), 0, 255).astype(np.uint8)


def run_op(name, img, magnitude, seed=0, **kwargs):
    np.random.seed(seed)  # the sign / Cutout centre draws
    return NFNetRandAugment(magnitude, ops=[name], num_layers=1, **kwargs).apply_op(
        name, img.copy())


def sign_of(seed):
    """The random sign the op draws first with this seed (DeepMind: 50 / 50)."""
    np.random.seed(seed)
    return -1 if np.random.uniform() < 0.5 else 1


# ---------------------------------------------------------------- references (DeepMind's TF)
def ref_blend(img1, img2, factor):
    if factor == 0:
        return img1
    if factor == 1:
        return img2
    a, b = img1.astype(f32), img2.astype(f32)
    temp = a + f32(factor) * (b - a)
    if 0 < factor < 1:
        return temp.astype(np.uint8)
    return np.clip(temp, 0, 255).astype(np.uint8)


def enhance_factor(m):
    return (m / 10.) * 1.8 + 0.1


def ref_grey_bgr(img):
    """tf.image.rgb_to_grayscale on uint8 (image is BGR): to [0, 1], weights, x 255.5, cast."""
    b, g, r = (img[..., c].astype(f32) * f32(1. / 255) for c in range(3))
    return ((r * f32(0.2989) + g * f32(0.5870) + b * f32(0.1140)) * f32(255.5)).astype(np.uint8)


def ref_color(img, m):
    grey = np.repeat(ref_grey_bgr(img)[..., None], 3, -1)
    return ref_blend(grey, img, enhance_factor(m))


def ref_contrast(img, m):
    # hist = histogram_fixed_width(grey, [0, 255], 256); mean = sum(hist) / 256 = H * W / 256
    hist = np.histogram(ref_grey_bgr(img), bins=256, range=(0, 255))[0]
    mean = f32(hist.astype(f32).sum()) / f32(256.)
    degenerate = np.full(img.shape, np.clip(mean, 0, 255)).astype(np.uint8)
    return ref_blend(degenerate, img, enhance_factor(m))


def ref_brightness(img, m):
    return ref_blend(np.zeros_like(img), img, enhance_factor(m))


def ref_sharpness(img, m):
    h, w = img.shape[:2]
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], f32) / f32(13.)
    out = img.copy()
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            window = img[y - 1:y + 2, x - 1:x + 2].astype(f32)
            v = (window * kernel[..., None]).reshape(9, 3).sum(0)
            out[y, x] = np.clip(v, 0, 255).astype(np.uint8)
    return ref_blend(out, img, enhance_factor(m))


def ref_posterize(img, m):
    shift = 8 - int((m / 10.) * 4)
    return ((img >> shift) << shift).astype(np.uint8)


def ref_solarize(img, m, wraps=True):
    threshold = int((m / 10.) * 256)
    if wraps:  # Python int -> uint8 tensor through NumPy < 1.24 (DeepMind's TF graph)
        threshold = int(np.array(threshold).astype(np.uint8))
    return np.where(img < threshold, img, 255 - img).astype(np.uint8)


def ref_solarize_add(img, m):
    added = np.clip(img.astype(np.int64) + int((m / 10.) * 110), 0, 255).astype(np.uint8)
    return np.where(img < 128, added, img)


def ref_autocontrast(img):
    out = img.copy()
    for c in range(3):
        lo, hi = f32(img[..., c].min()), f32(img[..., c].max())
        if hi > lo:
            scale = f32(255.) / (hi - lo)
            out[..., c] = np.clip(img[..., c].astype(f32) * scale - lo * scale, 0, 255).astype(
                np.uint8)
    return out


def ref_equalize(img):
    out = img.copy()
    for c in range(3):
        histo = np.bincount(img[..., c].ravel(), minlength=256)
        nonzero = histo[histo > 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step:
            lut = np.concatenate([[0], ((np.cumsum(histo) + step // 2) // step)[:-1]])
            out[..., c] = np.clip(lut, 0, 255)[img[..., c]]
    return out


def tf_round(v):
    return int(np.sign(v) * np.floor(abs(v) + 0.5))  # std::round


def ref_projective(img, t):
    """tfa.image.transform, nearest, fill 0 -> DeepMind's unwrap -> 128 (one pixel at a time)."""
    h, w = img.shape[:2]
    out = np.empty_like(img)
    for y in range(h):
        for x in range(w):
            k = f32(t[6]) * f32(x) + f32(t[7]) * f32(y) + f32(1)
            sx = (f32(t[0]) * f32(x) + f32(t[1]) * f32(y) + f32(t[2])) / k
            sy = (f32(t[3]) * f32(x) + f32(t[4]) * f32(y) + f32(t[5])) / k
            sx, sy = tf_round(float(sx)), tf_round(float(sy))
            out[y, x] = img[sy, sx] if 0 <= sx < w and 0 <= sy < h else GREY
    return out


def ref_geometric(name, img, m, sign):
    h, w = img.shape[:2]
    if name == 'Rotate':
        a = f32(sign * (m / 10.) * 30. * np.pi / 180.)
        c, s = np.cos(a), np.sin(a)
        x_off = ((f32(w) - 1) - (c * (f32(w) - 1) - s * (f32(h) - 1))) / f32(2)
        y_off = ((f32(h) - 1) - (s * (f32(w) - 1) + c * (f32(h) - 1))) / f32(2)
        return ref_projective(img, [c, -s, x_off, s, c, y_off, 0, 0])
    if name.startswith('Shear'):
        level = sign * (m / 10.) * 0.3
        t = [1, level, 0, 0, 1, 0, 0, 0] if name == 'ShearX' else [1, 0, 0, level, 1, 0, 0, 0]
        return ref_projective(img, t)
    pixels = sign * (m / 10.) * 100.
    # tfa.translate(image, [-pixels, 0]) -> transform [1, 0, pixels, 0, 1, 0, 0, 0]
    t = [1, 0, pixels, 0, 1, 0, 0, 0] if name == 'TranslateX' else [1, 0, 0, 0, 1, pixels, 0, 0]
    return ref_projective(img, t)


def ref_cutout(img, m, seed):
    np.random.seed(seed)
    h, w = img.shape[:2]
    cy, cx = np.random.randint(0, h), np.random.randint(0, w)  # TF: height, then width
    pad = int((m / 10.) * 40)
    mask = np.ones((h, w), bool)
    lower, upper = max(0, cy - pad), max(0, h - cy - pad)
    left, right = max(0, cx - pad), max(0, w - cx - pad)
    mask[lower:h - upper, left:w - right] = False
    return np.where(mask[..., None], img, np.array(GREY, np.uint8)), ~mask


COLOUR_REFS = {'Contrast': ref_contrast, 'Posterize': ref_posterize,
               'Solarize': ref_solarize, 'SolarizeAdd': ref_solarize_add, 'Color': ref_color,
               'Brightness': ref_brightness, 'Sharpness': ref_sharpness}


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize('m', MAGNITUDES)
@pytest.mark.parametrize('name', sorted(COLOUR_REFS))
def test_colour_ops_match_deepmind(name, m):
    img = photo()
    out = run_op(name, img, m)
    ref = COLOUR_REFS[name](img, m)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize('name,ref', [('AutoContrast', ref_autocontrast),
                                      ('Equalize', ref_equalize),
                                      ('Invert', lambda img: 255 - img)])
def test_argument_free_ops_match_deepmind(name, ref):
    img = (photo() // 2 + 40).astype(np.uint8)  # a narrow range, so every op changes it
    np.testing.assert_array_equal(run_op(name, img, 10), ref(img))


def test_contrast_blends_toward_a_size_constant():
    """The quirk (issue 11 item 5): the target grey is H * W / 256 (saturating at 255), the
    same for any pixels; contrast_reference='mean' is the stock (PIL / mmcv) mean grey."""
    for side in (16, 20, 24):  # H * W / 256 = 1, 1.5625, 2.25 -> 1, 1, 2
        for img in (np.zeros((side, side, 3), np.uint8), np.full((side, side, 3), 200, np.uint8)):
            # factor 0.1 at magnitude 0: 0.9 x the constant + 0.1 x the image, truncated
            expected = (f32(side * side // 256) + f32(0.1) * (img.astype(f32) -
                        f32(side * side // 256))).astype(np.uint8)
            np.testing.assert_array_equal(run_op('Contrast', img, 0), expected)
    big = np.full((256, 256, 3), 100, np.uint8)  # constant 255 at F2's 256 px: darkens
    assert run_op('Contrast', big, 15).max() == 0  # 255 + 2.8 (100 - 255) < 0
    mean = run_op('Contrast', big, 15, contrast_reference='mean')
    assert (mean == 100).all()  # a uniform image is its own mean


def test_solarize_threshold_switch():
    img = photo()
    np.testing.assert_array_equal(run_op('Solarize', img, 10), 255 - img)  # 256 -> 0
    np.testing.assert_array_equal(
        run_op('Solarize', img, 10, solarize_threshold_wraps=False), img)  # 256: none
    np.testing.assert_array_equal(
        run_op('Solarize', img, 15, solarize_threshold_wraps=False),
        ref_solarize(img, 15, wraps=False))


GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


@pytest.mark.parametrize('m', MAGNITUDES)
@pytest.mark.parametrize('name', GEOMETRIC)
def test_geometric_ops_match_tfa_nearest_with_grey_fill(name, m):
    img = photo((36, 44))
    assert {sign_of(seed) for seed in range(6)} == {-1, 1}  # both directions checked
    for seed in range(6):
        out = run_op(name, img, m, seed)
        np.testing.assert_array_equal(out, ref_geometric(name, img, m, sign_of(seed)))


#: a few distinct colours, none with a channel at 128
PALETTE = np.array([[200, 30, 60], [20, 180, 90], [40, 70, 220], [230, 210, 20]], np.uint8)


def palette_image(size, block=7):
    i, j = np.indices((size, size)) // block
    return PALETTE[(i + 2 * j + i * j) % len(PALETTE)]


@pytest.mark.parametrize('name', GEOMETRIC + ('Cutout',))
def test_fill_is_grey_and_nearest_keeps_source_colours(name):
    """Every filled pixel is exactly (128, 128, 128) (an int pad_val once reached
    cv2.warpAffine as (128, 0, 0), navy blue), and the geometric ops resample with nearest
    neighbour: only source colours and the fill remain (bicubic blends across edges)."""
    size = get_variant('F0').train_size
    img = palette_image(size)
    colours = np.concatenate([PALETTE, np.array([GREY], np.uint8)])
    for seed in range(4):
        out = run_op(name, img, 9.55, seed)  # a fractional level: fractional shifts
        # the filled pixels: those an all-white image loses when the fill is black
        filled = (run_op(name, np.full_like(img, 255), 9.55, seed, fill=(0, 0, 0)) != 255).any(-1)
        assert filled.sum() >= 500
        assert (out[filled] == GREY).all()
        assert (out.reshape(-1, 1, 3) == colours[None]).all(-1).any(-1).all()


@pytest.mark.parametrize('name', GEOMETRIC)
def test_interpolation_switch(name):
    """interpolation='bicubic' (MMPretrain's stock kernel) resamples the same map smoothly:
    away from the edges of the palette blocks it agrees with DeepMind's nearest output,
    and it creates colours nearest never does."""
    img = palette_image(96, block=12)
    nearest = run_op(name, img, 3.05, seed=1)  # 30.5 px: a fractional shift
    bicubic = run_op(name, img, 3.05, seed=1, interpolation='bicubic')
    colours = np.concatenate([PALETTE, np.array([GREY], np.uint8)])
    new = ~(bicubic.reshape(-1, 1, 3) == colours[None]).all(-1).any(-1)
    assert new.mean() > 0.01
    assert (bicubic == nearest).all(-1).mean() > 0.5
    with pytest.raises(ValueError, match="'nearest', 'bilinear', 'bicubic'"):
        NFNetRandAugment(5, interpolation='area')


@pytest.mark.parametrize('m', MAGNITUDES)
def test_cutout_box_is_deepminds(m):
    """Centre uniform over the pixels, box [c - pad, c + pad) clipped at the borders (mmcv
    shifts a box crossing the top / left border inside instead)."""
    img = photo((50, 60))
    for seed in range(20):
        out = run_op('Cutout', img, m, seed)
        ref, box = ref_cutout(img, m, seed)
        np.testing.assert_array_equal(out, ref)
    assert box.sum() <= (2 * int(m / 10 * 40)) ** 2


def test_policy_draws_ops_uniformly_and_applies_num_layers():
    """4 layers, each one of the 16 ops with equal chance (DeepMind's uniform op index)."""
    ra = NFNetRandAugment(10, num_layers=4)
    seen = []
    ra.apply_op = lambda name, img: seen.append(name) or img
    np.random.seed(0)
    for _ in range(800):
        ra(dict(img=np.zeros((8, 8, 3), np.uint8)))
    assert len(seen) == 3200
    counts = np.array([seen.count(name) for name in DEEPMIND_OPS])
    assert counts.min() > 3200 / 16 * 0.75 and counts.max() < 3200 / 16 * 1.25


@pytest.mark.parametrize('keep_dtype', [False, True])
@pytest.mark.parametrize('dtype', [np.float32, np.float64, np.float16, np.int32])
def test_non_uint8_input_is_clipped_truncated_and_cast_back(dtype, keep_dtype):
    """DeepMind: clip to [0, 255], cast to uint8 (truncates), augment, (cast back): the
    same integer values as uint8 by default, in the input dtype with keep_dtype."""
    rng = np.random.RandomState(0)
    img = (rng.uniform(-60, 320, (24, 24, 3))).astype(dtype)
    ra = NFNetRandAugment(5, ops=['Invert'], num_layers=1, keep_dtype=keep_dtype)
    out = ra(dict(img=img.copy()))['img']
    assert out.dtype == (dtype if keep_dtype else np.uint8)
    as_uint8 = np.clip(img.astype(np.float64), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out.astype(np.float64), 255. - as_uint8)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match='magnitude'):
        NFNetRandAugment(-1)
    with pytest.raises(ValueError, match='AutoContrast'):
        NFNetRandAugment(5, ops=['Rotate', 'Zoom'])
    with pytest.raises(ValueError, match="'bgr', 'rgb'"):
        NFNetRandAugment(5, channel_order='yuv')
    with pytest.raises(ValueError, match="'size', 'mean'"):
        NFNetRandAugment(5, contrast_reference='median')
    with pytest.raises(ValueError, match='fill'):
        NFNetRandAugment(5, fill=(128, 128))
    with pytest.raises(ValueError, match='192 x 192'):
        NFNetRandAugment(5, image_size=224)(dict(img=np.zeros((192, 192, 3), np.uint8)))
    with pytest.raises(ValueError, match='H x W x 3'):
        NFNetRandAugment(5)(dict(img=np.zeros((8, 8), np.uint8)))
    with pytest.raises(TypeError, match='bool'):
        NFNetRandAugment(5)(dict(img=np.zeros((8, 8, 3), bool)))


@pytest.mark.parametrize('path', RECIPES, ids=[osp.basename(p) for p in RECIPES])
def test_recipe_randaugment_is_the_variants(path):
    from mmpretrain.registry import TRANSFORMS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    variant = get_variant(osp.basename(path).split('_')[0])
    mix = Config.fromfile(path).train_dataloader.dataset  # RandAugment runs after the mix
    steps = [TRANSFORMS.build(t) for t in mix.pipeline]
    (ra, ) = [t for t in steps if isinstance(t, NFNetRandAugment)]
    assert (ra.magnitude, ra.num_layers, ra.image_size) == (
        variant.ra_magnitude, variant.ra_num_layers, variant.train_size)
    assert ra.ops == DEEPMIND_OPS and ra.fill == GREY and ra.contrast_reference == 'size'
    assert ra.interpolation == 'nearest' and ra.solarize_threshold_wraps
    assert ra.translate_const == 100 and ra.cutout_const == 40
