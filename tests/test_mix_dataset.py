"""NFNetMixDataset: per-example MixUp / CutMix on raw images, then RandAugment (issue 11)."""
from functools import partial
from unittest import mock

import mmcv
import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, DefaultSampler, pseudo_collate
from mmengine.dataset.utils import worker_init_fn
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.datasets.transforms import RandAugment
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS

import nfnets_mm  # noqa: F401  (registers NFNetMixDataset)
from nfnets_mm.datasets import NFNetMixDataset

NUM_CLASSES, SIZE = 4, 12


def pixel_value(index: int) -> int:
    """Image ``index`` of MixTestImages is filled with this value (distinct per image)."""
    return 3 + 7 * index


@DATASETS.register_module(name='MixTestImages', force=True)
class MixTestImages(BaseDataset):
    """``num_images`` constant ``SIZE x SIZE`` images held in memory; label ``i % 4``."""
    METAINFO = dict(classes=tuple('abcd'))

    def __init__(self, num_images: int = 32, **kwargs) -> None:
        self.num_images = num_images
        super().__init__(**kwargs)

    def load_data_list(self):
        return [dict(img=np.full((SIZE, SIZE, 3), pixel_value(i), np.uint8),
                     gt_label=i % NUM_CLASSES, index=i) for i in range(self.num_images)]


@TRANSFORMS.register_module(name='MixTestRecordingRandAugment', force=True)
class RecordingRandAugment(RandAugment):
    """MMPretrain's RandAugment that keeps a copy of the image it is given."""

    def transform(self, results):
        results['ra_input'] = results['img'].copy()
        return super().transform(results)


#: One RandAugment layer whose only op (Invert) always runs: output = 255 - input.
INVERT = dict(type='MixTestRecordingRandAugment', policies=[dict(type='Invert', prob=1.)],
              num_policies=1, magnitude_level=0)
PACK = dict(type='PackInputs', algorithm_keys=('ra_input', ), meta_keys=('index', ))


def mix_dataset(num_images=32, **kwargs) -> NFNetMixDataset:
    return NFNetMixDataset(dataset=dict(type='MixTestImages', num_images=num_images),
                           pipeline=[INVERT, PACK], **kwargs)


def draws(samples):
    """Per packed sample: (mode, ratio, box, partner, primary index)."""
    return [(s.mix_mode, s.mix_ratio, s.mix_box, s.mix_partner_idx, s.index) for s in samples]


def check_sample(inputs: torch.Tensor, sample) -> None:
    """The labels, the image RandAugment saw and its output, all from the recorded draw."""
    mode, ratio, box, partner, index = draws([sample])[0]
    score = sample.gt_score.numpy()
    expected = np.zeros(NUM_CLASSES, np.float32)
    expected[index % NUM_CLASSES] += ratio
    expected[partner % NUM_CLASSES] += 1 - ratio
    assert np.allclose(score, expected, atol=1e-6) and score.sum() == pytest.approx(1.)
    assert int(sample.gt_label) == index % NUM_CLASSES
    seen = sample.ra_input[..., 0].astype(int)  # what RandAugment received
    a, b = pixel_value(index), pixel_value(partner)
    if mode == 'cutmix':
        top, bottom, left, right = box
        # label = share of the primary's pixels = the clipped box's area
        assert ratio == (bottom - top) * (right - left) / SIZE**2
        if a != b:
            assert (seen == a).mean() == ratio and ((seen == a) | (seen == b)).all()
    else:
        assert box is None
        assert np.abs(seen - (ratio * a + (1 - ratio) * b)).max() <= 1
    # RandAugment (Invert) ran on the mixed image, after the mix
    assert torch.equal(inputs, 255 - torch.from_numpy(sample.ra_input).permute(2, 0, 1))


def test_per_example_draws_labels_and_randaugment_after_the_mix():
    np.random.seed(0)
    dataset = mix_dataset(num_images=32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True,
                                         collate_fn=pseudo_collate)
    mixup_ratios = []
    for _ in range(8):
        for batch in loader:
            samples = batch['data_samples']
            for inputs, sample in zip(batch['inputs'], samples):
                check_sample(inputs, sample)
            batch_draws = draws(samples)
            ratios = [d[1] for d in batch_draws if d[0] == 'mixup']
            # one ratio per example, not one per (half-)batch
            assert len(set(ratios)) == len(ratios) > 1
            boxes = [d[2] for d in batch_draws if d[0] == 'cutmix']
            assert len(set(boxes)) > 1
            # DeepMind: exactly one half of each batch MixUp, the other CutMix
            assert [d[0] for d in batch_draws].count('cutmix') == 8
            mixup_ratios += ratios
    # Beta(0.2, 0.2): mostly near 0 or 1 (P(0.1 < r < 0.9) = 0.31)
    assert 0.2 < np.mean([0.1 < r < 0.9 for r in mixup_ratios]) < 0.42


def collect_streams(seed: int):
    """(rank, worker) -> the draws seen in that worker, 2 ranks x 2 workers each."""
    dataset = mix_dataset(num_images=32)
    streams = {}
    for rank in range(2):
        with mock.patch('mmengine.dataset.sampler.get_dist_info', return_value=(rank, 2)):
            sampler = DefaultSampler(dataset, shuffle=True, seed=seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=pseudo_collate,
            worker_init_fn=partial(worker_init_fn, num_workers=2, rank=rank, seed=seed))
        for i, batch in enumerate(loader):  # batch i comes from worker i % 2
            batch_draws = draws(batch['data_samples'])
            assert [d[0] for d in batch_draws].count('cutmix') == 2  # half of 4, per worker
            streams.setdefault((rank, i % 2), []).extend(batch_draws)
    return streams


def test_two_ranks_two_workers_draw_different_partners_reproducibly():
    streams = collect_streams(seed=7)
    assert sorted(streams) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    primaries = [d[4] for stream in streams.values() for d in stream]
    assert sorted(primaries) == list(range(32))  # DefaultSampler splits the ranks
    patterns = {key: [(d[0], d[1], d[2], d[3]) for d in stream]
                for key, stream in streams.items()}
    # MixUp ratios are continuous: a value seen in two workers means a repeated generator
    ratios = {key: {d[1] for d in stream if d[0] == 'mixup'} for key, stream in streams.items()}
    keys = sorted(patterns)
    for i, key in enumerate(keys):
        for other in keys[i + 1:]:
            assert patterns[key] != patterns[other], (key, other)
            assert not ratios[key] & ratios[other], f'{key} and {other} share draws'
    # MMEngine's worker seeding makes it reproducible, and the seed matters
    assert collect_streams(seed=7) == streams
    assert collect_streams(seed=100) != streams


def write_images(root, per_class=3):
    rng = np.random.RandomState(0)
    for c in range(NUM_CLASSES):
        for i in range(per_class):
            img = rng.randint(0, 256, (20 + 4 * i, 24, 3)).astype(np.uint8)
            img[..., c % 3] = 40 * c  # a class-dependent channel
            mmcv.imwrite(img, str(root / f'class{c}' / f'{i}.png'))


def tiny_classifier():
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='NFNet', arch=dict(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32),
                                              group_width=8, stem_channels=(8, 8, 8, 16))),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='NFNetClsHead', num_classes=NUM_CLASSES, in_channels=64,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
        # no train_cfg.augments: the data preprocessor only normalizes
        data_preprocessor=dict(num_classes=NUM_CLASSES, mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], to_rgb=True)))


def test_config_train_step_and_deepmind_label_smoothing(tmp_path):
    """The train_dataloader the recipe uses, built by the Runner; loss as DeepMind's."""
    init_default_scope('mmpretrain')
    write_images(tmp_path)
    inner_pipeline = [  # raw images: load, crop, flip
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=16, backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5, direction='horizontal')]
    train_dataloader = dict(
        batch_size=6, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(
            type='NFNetMixDataset', mixup_alpha=0.2, cutmix_alpha=1.0,
            dataset=dict(type='CustomDataset', data_root=str(tmp_path), with_label=True,
                         pipeline=inner_pipeline),
            # on the mixed image: RandAugment, then pack
            pipeline=[dict(type='RandAugment', policies='timm_increasing', num_policies=2,
                           total_level=10, magnitude_level=5, magnitude_std=0.,
                           hparams=dict(pad_val=(128, 128, 128))),
                      dict(type='PackInputs')]))
    val_dataloader = dict(
        batch_size=6, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='CustomDataset', data_root=str(tmp_path), with_label=True,
                     pipeline=[dict(type='LoadImageFromFile'),
                               dict(type='NFNetEvalResizeCrop', crop_size=16, pad=4),
                               dict(type='PackInputs')]))
    loader = Runner.build_dataloader(train_dataloader, seed=0)
    assert isinstance(loader.dataset, NFNetMixDataset)
    assert loader.dataset.num_classes == NUM_CLASSES  # from the dataset's classes
    torch.manual_seed(0)
    model = tiny_classifier()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    batch = next(iter(loader))
    assert all(s.gt_score.sum() == pytest.approx(1.) for s in batch['data_samples'])
    assert all(s.mix_mode in ('mixup', 'cutmix') for s in batch['data_samples'])

    # DeepMind: y = r * onehot(a) + (1 - r) * onehot(b), then (1 - 0.1) * y + 0.1 / K
    model.eval()  # no dropout / drop path, to compare with the reference
    data = model.data_preprocessor(batch, training=True)
    assert data['inputs'].shape == (6, 3, 16, 16) and data['inputs'].dtype == torch.float32
    logits = model(data['inputs'], mode='tensor')
    y = torch.stack([s.gt_score for s in data['data_samples']])
    reference = -((0.9 * y + 0.1 / NUM_CLASSES) * logits.log_softmax(1)).sum(1).mean()
    loss = model.loss(data['inputs'], data['data_samples'])['loss']
    torch.testing.assert_close(loss, reference)

    model.train()
    for batch in loader:
        log_vars = model.train_step(batch, optim_wrapper)
        assert torch.isfinite(log_vars['loss'])
    # evaluation is unaffected: plain labels, no mixing, no gt_score
    val_loader = Runner.build_dataloader(val_dataloader, seed=0)
    val_batch = next(iter(val_loader))
    assert all('gt_score' not in s for s in val_batch['data_samples'])
    outputs = model.val_step(val_batch)
    assert len(outputs) == 6 and outputs[0].pred_score.shape == (NUM_CLASSES, )


def test_mix_false_is_the_plain_pipeline():
    np.random.seed(0)
    dataset = mix_dataset(mix=False)
    out = dataset[5]
    sample = out['data_samples']
    assert 'gt_score' not in sample and 'mix_mode' not in sample
    assert (sample.ra_input == pixel_value(5)).all()
    assert torch.equal(out['inputs'], torch.full((3, SIZE, SIZE), 255 - pixel_value(5),
                                                 dtype=torch.uint8))


def test_clear_errors():
    init_default_scope('mmpretrain')  # the wrapped dataset builds its own pipeline
    with pytest.raises(ValueError, match='before PackInputs'):
        NFNetMixDataset(dataset=dict(type='MixTestImages', pipeline=[dict(type='PackInputs')]),
                        pipeline=[PACK])[0]
    with pytest.raises(ValueError, match='must not load images'):  # would undo the mix
        NFNetMixDataset(dataset=dict(type='MixTestImages'),
                        pipeline=[dict(type='LoadImageFromFile'), PACK])
    no_classes = MixTestImages(metainfo=dict(classes=()))
    with pytest.raises(ValueError, match='num_classes'):
        NFNetMixDataset(dataset=no_classes, pipeline=[PACK])
    with pytest.raises(ValueError, match='mixup_alpha'):
        mix_dataset(mixup_alpha=-1)
    with pytest.raises(ValueError, match='cutmix_prob'):
        mix_dataset(cutmix_prob=2)
    with pytest.raises(ValueError, match='num_classes'):  # labels 0..3 do not fit 2 classes
        mix_dataset(num_classes=2)[3]
