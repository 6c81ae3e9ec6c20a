"""The recipe's RandAugment uses DeepMind's level -> argument maps (no destroyed images)."""
import functools
import glob
import os.path as osp

import numpy as np
import pytest
from conftest import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope

RECIPES = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'nfnet', 'f[0-7]_imagenet.py')))
GREY = (128, 128, 128)  # DeepMind's replace_value for the geometric ops and Cutout


def randaugment_of(path):
    cfg = Config.fromfile(path)
    ops = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandAugment']
    assert len(ops) == 1
    return ops[0]


@pytest.mark.parametrize('path', RECIPES, ids=[osp.basename(p) for p in RECIPES])
def test_randaugment_levels_follow_deepmind(path):
    init_default_scope('mmpretrain')
    from mmpretrain.registry import TRANSFORMS
    cfg = randaugment_of(path)
    m = cfg.magnitude_level
    assert cfg.num_policies == 4 and cfg.total_level == 10 and cfg.magnitude_std == 0
    ra = TRANSFORMS.build(cfg)
    ops = {}
    for op in ra.policies:
        ops.setdefault(op['type'], op)

    def arg(name):
        t = TRANSFORMS.build(dict(ops[name], magnitude_level=m, total_level=10))
        return t.random_magnitude()

    # DeepMind / TF EfficientNet RandAugment maps (level m, _MAX_LEVEL 10)
    assert int(np.ceil(arg('Posterize'))) == int(m / 10 * 4)  # bits kept
    assert arg('Solarize') == pytest.approx(m / 10 * 256)  # threshold
    assert arg('Rotate') == pytest.approx(m / 10 * 30)  # degrees
    assert arg('SolarizeAdd') == pytest.approx(m / 10 * 110)
    for colour in ('ColorTransform', 'Contrast', 'Brightness', 'Sharpness'):
        assert 1 + arg(colour) == pytest.approx(0.1 + 1.8 * m / 10)  # enhance factor
        assert ops[colour]['random_negative_prob'] == 0
    assert {op['type'] for op in ra.policies} >= {'Cutout', 'Invert', 'Equalize',
                                                   'AutoContrast', 'Shear', 'Translate'}
    # DeepMind applies the chosen op every time, translates up to m / 10 * 100 px of the
    # training crop and fills with grey 128
    assert all(op['prob'] == 1 for op in ra.policies)
    train_size = Config.fromfile(path).train_dataloader.dataset.pipeline[1].scale
    assert arg('Translate') * train_size == pytest.approx(m / 10 * 100)
    assert tuple(cfg.hparams['pad_val']) == GREY

    # and images are not destroyed wholesale: timm's "increasing" Posterize turned ~9% of
    # images all black at m10.  DeepMind's maps can too, but only through rare chains at
    # m15 (SolarizeAdd -> Brightness x2.8 saturates -> Invert), well under 2%.
    np.random.seed(0)  # MMPretrain's transforms draw from NumPy's global generator
    rng = np.random.default_rng(0)
    black = 0
    for _ in range(200):
        img = rng.integers(0, 256, (train_size, train_size, 3), dtype=np.uint8)
        out = ra(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2]))['img']
        black += int(out.max() == 0)
    assert black <= (0 if m <= 10 else 4), black


# --- fills and interpolation (DeepMind: nfnets/autoaugment.py, replace_value = [128] * 3 for
# every op with a `replace` argument; tensorflow_addons rotate / translate / transform, all
# with their default interpolation 'nearest', for Rotate, ShearX/Y and TranslateX/Y)

#: a few distinct colours, none of them grey 128 (nor with any channel at 128)
PALETTE = np.array([[200, 30, 60], [20, 180, 90], [40, 70, 220], [230, 210, 20]], np.uint8)
GEOMETRIC = [('Rotate', None), ('Shear', 'horizontal'), ('Shear', 'vertical'),
             ('Translate', 'horizontal'), ('Translate', 'vertical')]


@functools.lru_cache(maxsize=None)
def recipe_policies(path):
    """The policy dicts of the recipe's RandAugment, with its hparams merged (as built)."""
    init_default_scope('mmpretrain')
    from mmpretrain.registry import TRANSFORMS
    ra = TRANSFORMS.build(randaugment_of(path))
    train_size = Config.fromfile(path).train_dataloader.dataset.pipeline[1].scale
    return tuple(ra.policies), train_size


def colour_image(size, block=7):
    """A size x size image of PALETTE colours in 7 px blocks (edges everywhere)."""
    i, j = np.indices((size, size)) // block
    return PALETTE[(i + 2 * j + i * j) % len(PALETTE)]


#: a large level, not an integer one: Rotate 28.65 deg, Shear 0.2865, Translate 95.5 px (a
#: fractional shift, which only nearest resampling copies without blending), Cutout 76 px
LEVEL = 9.55


def apply(policy, img, seed, **override):
    """`policy` at LEVEL of 10."""
    from mmpretrain.registry import TRANSFORMS
    op = TRANSFORMS.build(dict(policy, magnitude_level=LEVEL, total_level=10, **override))
    np.random.seed(seed)  # the same draws (sign, Cutout's centre) for image and mask
    return op(dict(img=img.copy(), img_shape=img.shape[:2], ori_shape=img.shape[:2]))['img']


def only_palette_or_grey(img):
    colours = np.concatenate([PALETTE, np.array([GREY], np.uint8)])
    return (img.reshape(-1, 1, 3) == colours[None]).all(-1).any(-1).all()


@pytest.mark.parametrize('op', GEOMETRIC + [('Cutout', None)],
                         ids=lambda op: '-'.join(filter(None, op)))
@pytest.mark.parametrize('path', RECIPES, ids=[osp.basename(p) for p in RECIPES])
def test_fills_are_grey_and_geometric_ops_nearest(path, op):
    """Every filled pixel is exactly (128, 128, 128) on all three channels (an int pad_val
    reached cv2.warpAffine in Rotate as the scalar (128, 0, 0): navy blue), and the geometric
    ops (Rotate, Shear, Translate) resample with nearest neighbour, as DeepMind's, so the
    output holds only source colours and the fill (bicubic blends colours across edges)."""
    init_default_scope('mmpretrain')
    policies, train_size = recipe_policies(path)
    name, direction = op
    matching = [p for p in policies if p['type'] == name and p.get('direction') == direction]
    assert len(matching) == 1, (name, direction)
    policy = matching[0]
    img = colour_image(train_size)
    ones = np.full_like(img, 255)
    # both signs for the geometric ops; a few Cutout centres
    runs = ([dict(random_negative_prob=p) for p in (0., 1.)] if name != 'Cutout' else
            [dict()] * 3)
    for seed, override in enumerate(runs):
        out = apply(policy, img, seed, **override)
        # the pixels the op fills: those of an all-255 image that the same op (same draws)
        # does not leave at 255 when it fills with 0
        mask = apply(policy, ones, seed, pad_val=(0, 0, 0), **override)
        filled = (mask != 255).any(-1)
        assert filled.sum() >= 1000, (name, direction, filled.sum())
        values, counts = np.unique(out[filled], axis=0, return_counts=True)
        assert (out[filled] == GREY).all(), (
            f'{name} {direction}: filled pixels hold {len(values)} values, most often '
            f'{values[np.argsort(-counts)[:3]].tolist()}, not only {GREY}')
        if name == 'Cutout':
            assert (out[~filled] == img[~filled]).all()
        else:
            assert only_palette_or_grey(out), (
                f'{name} {direction}: {len(np.unique(out.reshape(-1, 3), axis=0))} distinct '
                'colours, i.e. interpolated (DeepMind resamples with nearest)')
