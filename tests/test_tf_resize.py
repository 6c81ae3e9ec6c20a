"""TF's bicubic resize (``tf.image.resize(..., BICUBIC)``, DeepMind's train and eval resize)
against a reference written here from the formula (issue 11 item 7).

TF 2's ``ResizeBicubic`` with ``half_pixel_centers=True``: output pixel ``o`` samples the input
at ``x = (o + 0.5) * in / out - 0.5``; taps ``floor(x) - 1 .. floor(x) + 2`` weighted by Keys'
kernel with ``a = -0.5`` at the distances ``|x - tap|`` (the fraction quantised to 1/1024,
TF's weight table); taps outside the image get weight 0 and the rest are renormalised.  No
antialiasing, no clamping.
"""
import numpy as np
import pytest

from nfnets_mm.datasets.transforms import tf_bicubic_resize


def keys(t, a=-0.5):
    t = abs(t)
    if t <= 1:
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    if t < 2:
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return 0.


def weight_matrix(in_size, out_size):
    """(out_size, in_size) matrix M with out = M @ in along one axis."""
    m = np.zeros((out_size, in_size))
    for o in range(out_size):
        # TF computes the position in float32 (which decides the 1/1024 bin)
        f32 = np.float32
        x = float((f32(o) + f32(0.5)) * (f32(in_size) / f32(out_size)) - f32(0.5))
        base = int(np.floor(x))
        frac = round((x - base) * 1024) / 1024
        taps = {}
        for k in (-1, 0, 1, 2):
            if 0 <= base + k < in_size:
                taps[base + k] = keys(frac - k)
        total = sum(taps.values())
        for i, w in taps.items():
            m[o, i] = w / total
    return m


def tf_bicubic_reference(img, out_h, out_w):
    """float64 H x W (x C) resize from the formula, as a pair of dense matrices."""
    img = np.asarray(img, np.float64)
    rows, cols = weight_matrix(img.shape[0], out_h), weight_matrix(img.shape[1], out_w)
    out = np.tensordot(rows, img, axes=(1, 0))  # (out_h, W, ...)
    return np.moveaxis(np.tensordot(cols, out, axes=(1, 1)), 0, 1)  # (out_h, out_w, ...)


@pytest.mark.parametrize('in_hw,out_hw', [((7, 9), (5, 13)), ((13, 11), (4, 6)),
                                           ((40, 30), (17, 23)), ((5, 5), (16, 16)),
                                           ((1, 6), (3, 4))])
def test_matches_formula(in_hw, out_hw):
    img = np.random.RandomState(0).randint(0, 256, (*in_hw, 3)).astype(np.uint8)
    out = tf_bicubic_resize(img, out_hw)
    assert out.dtype == np.float32 and out.shape == (*out_hw, 3)
    np.testing.assert_allclose(out, tf_bicubic_reference(img, *out_hw), atol=2e-3, rtol=0)


def test_not_antialiased_and_not_clamped():
    """Stripes (2 px white, 2 px black) shrunk 4x: the 4 taps of every output pixel sit on
    2 white columns at distance 0.5 and 2 black ones at 1.5, so TF gives 2 x 255 x W(0.5)
    = 287 everywhere, where Pillow's antialiased bicubic averages the period to grey.  A
    step edge overshoots [0, 255] (no clamping), as DeepMind's pipeline notes."""
    from PIL import Image
    x = np.arange(64)
    stripes = np.tile(np.where(np.isin(x % 4, (1, 2)), 255, 0).astype(np.uint8), (8, 1))
    small = tf_bicubic_resize(stripes, (2, 16))
    np.testing.assert_allclose(small, 2 * 255 * keys(0.5), atol=1e-3)
    pillow = np.asarray(Image.fromarray(stripes).resize((16, 2), Image.BICUBIC))
    assert np.abs(pillow.astype(float) - 127.5).max() < 40
    step = np.zeros((8, 16), np.uint8)
    step[:, 8:] = 255
    up = tf_bicubic_resize(step, (8, 64))
    assert up.min() < -1 and up.max() > 256


@pytest.mark.parametrize('dtype', [np.uint8, np.float16, np.float32, np.float64, np.int32])
def test_dtypes(dtype):
    img = np.random.RandomState(1).randint(0, 256, (9, 10, 3)).astype(dtype)
    out = tf_bicubic_resize(img, (6, 7))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, tf_bicubic_reference(img.astype(np.float64), 6, 7),
                               atol=2e-3, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match='size'):
        tf_bicubic_resize(np.zeros((4, 4, 3), np.uint8), (0, 4))
    with pytest.raises(ValueError, match='shape'):
        tf_bicubic_resize(np.zeros((4,), np.uint8), (2, 2))
    with pytest.raises(TypeError, match='dtype'):
        tf_bicubic_resize(np.zeros((4, 4, 3), np.complex64), (2, 2))
