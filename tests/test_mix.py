"""Mixing one pair of raw images (nfnets_mm/datasets/mix.py), DeepMind's MixUp / CutMix."""
import numpy as np
import pytest

from nfnets_mm.datasets.mix import (PairMixer, cutmix_images, mixed_score, mixup_images,
                                    sample_cutmix_box)


def reference_cutmix_share(height, width, rng):
    """Area share of the primary image in DeepMind's ``cutmix_padding`` (its formula)."""
    r_x, r_y = rng.randint(0, width), rng.randint(0, height)
    side = np.sqrt(1 - rng.uniform())
    r_w, r_h = int(side * width), int(side * height)
    x1, x2 = max(r_x - r_w // 2, 0), min(r_x + r_w // 2, width)
    y1, y2 = max(r_y - r_h // 2, 0), min(r_y + r_h // 2, height)
    return (x2 - x1) * (y2 - y1) / (height * width)


def test_cutmix_share_statistics_match_deepminds_box():
    """2,000 boxes: mean and quartiles of the area share within 0.02 of the reference."""
    h, w = 24, 40
    ours = []
    rng = np.random.RandomState(0)
    for _ in range(2000):
        top, bottom, left, right = sample_cutmix_box(h, w, 1., rng)
        assert 0 <= top <= bottom <= h and 0 <= left <= right <= w
        ours.append((bottom - top) * (right - left) / (h * w))
    ref_rng = np.random.RandomState(1)
    ref = [reference_cutmix_share(h, w, ref_rng) for _ in range(2000)]
    for q in (0.25, 0.5, 0.75):
        assert abs(np.quantile(ours, q) - np.quantile(ref, q)) < 0.02, q
    assert abs(np.mean(ours) - np.mean(ref)) < 0.02


def test_cutmix_keeps_the_primary_inside_the_box():
    a, b = np.full((6, 8, 3), 200, np.uint8), np.full((6, 8, 3), 50, np.uint8)
    mixed, share = cutmix_images(a, b, (1, 4, 2, 7))
    assert (mixed[1:4, 2:7] == 200).all() and (mixed == 200).sum() == 3 * 5 * 3
    assert share == pytest.approx(15 / 48) == (mixed[..., 0] == 200).mean()
    assert (a == 200).all() and (b == 50).all(), 'inputs must not be modified'


def test_mixup_blends_and_truncates_like_deepmind():
    a, b = np.full((2, 2, 3), 10, np.uint8), np.full((2, 2, 3), 11, np.uint8)
    # 10.5 -> 10: DeepMind clips to [0, 255] and casts to uint8 (truncation).
    assert (mixup_images(a, b, 0.5) == 10).all() and mixup_images(a, b, 0.5).dtype == np.uint8
    assert (mixup_images(a, b, 0.25) == 10).all()  # 10.75 -> 10
    assert (mixup_images(a, b, 0.) == 11).all() and (mixup_images(a, b, 1.) == 10).all()
    for dtype in (np.float16, np.float32, np.float64):  # unrounded, in the image's dtype
        floats = mixup_images(a.astype(dtype), b.astype(dtype), 0.5)
        assert floats.dtype == dtype and np.allclose(floats, 10.5)
    # float inputs are not clamped (DeepMind mixes its unclamped bicubic output)
    over = mixup_images(np.full((2, 2), 300., np.float32), np.full((2, 2), -20., np.float32), .5)
    assert np.allclose(over, 140.)
    with pytest.raises(ValueError, match='dtype'):
        mixup_images(a, b.astype(np.float32), 0.5)
    with pytest.raises(ValueError, match='dtype'):
        cutmix_images(a, b.astype(np.float32), (0, 1, 0, 1))


def test_mixed_score():
    score = mixed_score(1, 3, 0.3, 5)
    assert score.dtype == np.float32 and np.allclose(score, [0, 0.3, 0, 0.7, 0])
    assert np.allclose(mixed_score(2, 2, 0.3, 4), [0, 0, 1, 0])


@pytest.mark.parametrize('mode_choice', ['alternate', 'random'])
def test_pair_mixer_draws_both_modes_with_matching_labels(mode_choice):
    mixer = PairMixer(num_classes=3, mixup_alpha=0.2, cutmix_alpha=1., mode_choice=mode_choice)
    a = dict(img=np.full((8, 8, 3), 240, np.uint8), gt_label=0)
    b = dict(img=np.full((8, 8, 3), 16, np.uint8), gt_label=np.int64(2))
    rng = np.random.RandomState(3)
    modes = []
    for _ in range(200):
        out = mixer(a, b, rng)
        modes.append(out['mix_mode'])
        r = out['mix_ratio']
        assert np.allclose(out['gt_score'], [r, 0, 1 - r]) and out['gt_label'] == 0
        if out['mix_mode'] == 'cutmix':
            top, bottom, left, right = out['mix_box']
            assert r == (bottom - top) * (right - left) / 64
            assert (out['img'][..., 0] == 240).mean() == r
        else:
            assert out['mix_box'] is None
            assert (out['img'] == int(np.float32(r) * 240 + np.float32(1 - r) * 16)).all()
    if mode_choice == 'alternate':  # exact halves: every even-sized batch is half and half
        assert modes == ['mixup', 'cutmix'] * 100
    else:
        assert 0.4 < modes.count('cutmix') / len(modes) < 0.6
        assert modes[:20] != ['mixup', 'cutmix'] * 10
    assert a['img'].min() == 240 and b['img'].max() == 16


@pytest.mark.parametrize('prob', [0., 0.3, 1.])
def test_random_mode_choice_follows_cutmix_prob(prob):
    mixer = PairMixer(num_classes=2, mode_choice='random', cutmix_prob=prob)
    pair = dict(img=np.zeros((4, 4, 3), np.uint8), gt_label=0)
    rng = np.random.RandomState(0)
    share = np.mean([mixer(pair, pair, rng)['mix_mode'] == 'cutmix' for _ in range(400)])
    assert abs(share - prob) < 0.07


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_classes=0), 'num_classes'), (dict(num_classes=3, mixup_alpha=0.), 'mixup_alpha'),
    (dict(num_classes=3, cutmix_alpha='1'), 'cutmix_alpha'),
    (dict(num_classes=3, cutmix_prob=1.5), 'cutmix_prob'),
    (dict(num_classes=3, cutmix_prob=0.3), "mode_choice='random'"),
    (dict(num_classes=3, mode_choice='batch'), 'alternate')])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairMixer(**kwargs)


def test_bad_pairs():
    mixer = PairMixer(num_classes=3)
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match='fixed-size crop'):
        mixer(dict(img=img, gt_label=0), dict(img=np.zeros((8, 9, 3), np.uint8), gt_label=1))
    with pytest.raises(ValueError, match='single-label'):
        mixer(dict(img=img, gt_label=[0, 1]), dict(img=img, gt_label=1))
    with pytest.raises(ValueError, match='num_classes'):
        mixer(dict(img=img, gt_label=3), dict(img=img, gt_label=1))
    with pytest.raises(TypeError, match='before PackInputs'):
        mixer(dict(img=img, gt_label=0), dict(img=[1, 2], gt_label=1))
