"""HalfMixupHalfCutMix: MixUp on the first half of a batch, CutMix on the second."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nfnets_mm  # noqa: F401  (registers the augment)
from mmpretrain.registry import BATCH_AUGMENTS, MODELS
from mmpretrain.structures import DataSample

from nfnets_mm.datasets import HalfMixupHalfCutMix


def constant_batch(n: int, size: int = 16):
    """Image ``i`` is filled with the value ``i + 1``; its label is class ``i``."""
    values = torch.arange(1, n + 1, dtype=torch.float32)
    inputs = values.view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    scores = F.one_hot(torch.arange(n), num_classes=n)
    return inputs, scores, values


def check_mixup_rows(out, scores, values, rows):
    """MixUp of constant images: constant outputs whose value is the label-weighted mix."""
    for i in rows:
        img = out[i]
        assert torch.allclose(img, img.flatten()[0].expand_as(img)), f'row {i} not constant'
        expected = (scores[i] * values).sum()
        assert torch.allclose(img.flatten()[0], expected, atol=1e-5)
        # Partners come from the same half only.
        assert scores[i][[j for j in range(len(values)) if j not in rows]].abs().sum() == 0


def check_cutmix_rows(out, scores, values, rows):
    """CutMix: every pixel keeps an original value, label mass = pixel share of each source."""
    for i in rows:
        img = out[i, 0]
        for k in range(len(values)):
            share = (img == values[k]).float().mean()
            assert torch.isclose(share, scores[i, k], atol=1e-6), (i, k, share, scores[i, k])
        assert torch.isclose((img.unsqueeze(-1) == values).any(-1).float().mean(),
                             torch.tensor(1.))


@pytest.mark.parametrize('n', [8, 7, 2])
def test_halves_use_the_right_op(n):
    aug = HalfMixupHalfCutMix(mixup_alpha=0.2, cutmix_alpha=1.0)
    saw_cut = saw_mix = False
    for seed in range(20):
        np.random.seed(seed)
        torch.manual_seed(seed)
        inputs, onehot, values = constant_batch(n)
        original = inputs.clone()
        out, scores = aug(inputs, onehot)
        assert out.shape == original.shape and scores.shape == (n, n)
        assert scores.dtype == torch.float32
        assert torch.allclose(scores.sum(1), torch.ones(n), atol=1e-6)
        assert torch.equal(inputs, original), 'the caller\'s batch must not be modified'
        half = n // 2
        check_mixup_rows(out, scores, values, list(range(half)))
        check_cutmix_rows(out, scores, values, list(range(half, n)))
        # Guard against a vacuous pass: over the seeds, CutMix must paste a real box and
        # MixUp must blend two different images.
        for i in range(half, n):
            uniq = out[i, 0].unique()
            saw_cut |= len(uniq) > 1
        for i in range(half):
            saw_mix |= bool((scores[i] > 0).sum() == 2)
    if n // 2 >= 2:
        assert saw_mix
    if n - n // 2 >= 2:
        assert saw_cut


def test_single_sample_batch_is_all_cutmix_and_unchanged():
    aug = HalfMixupHalfCutMix()
    inputs, onehot, _ = constant_batch(1)
    out, scores = aug(inputs, onehot)
    assert torch.equal(out, inputs) and torch.equal(scores, onehot.float())


def test_soft_labels_keep_their_mass():
    torch.manual_seed(0)
    np.random.seed(0)
    aug = HalfMixupHalfCutMix()
    scores = torch.softmax(torch.randn(6, 10), dim=1) * 0.5  # rows sum to 0.5
    _, mixed = aug(torch.randn(6, 3, 8, 8), scores)
    assert torch.allclose(mixed.sum(1), torch.full((6, ), 0.5), atol=1e-6)


@pytest.mark.parametrize('kwargs', [dict(mixup_alpha=0.), dict(cutmix_alpha=-1.),
                                    dict(mixup_alpha='0.2')])
def test_bad_alpha_is_rejected(kwargs):
    with pytest.raises(ValueError, match='alpha'):
        HalfMixupHalfCutMix(**kwargs)


def test_bad_shapes_are_rejected():
    aug = HalfMixupHalfCutMix()
    with pytest.raises(ValueError, match='one-hot'):
        aug(torch.zeros(4, 3, 8, 8), torch.zeros(4))
    with pytest.raises(ValueError, match='N, C, H, W'):
        aug(torch.zeros(4, 8, 8), torch.zeros(4, 2))


def test_built_from_a_classifier_train_cfg():
    """The recipe's ``train_cfg.augments`` reaches MMPretrain's data preprocessor."""
    assert isinstance(BATCH_AUGMENTS.build(dict(type='NFHalfMixupHalfCutMix')),
                      HalfMixupHalfCutMix)
    model = MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='NFNet', arch=dict(depths=(1, 1, 1, 1),
                                                  widths=(16, 16, 32, 32), group_width=8,
                                                  stem_channels=(8, 8, 8, 16))),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='NFNetClsHead', num_classes=4, in_channels=64,
                       loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)),
             data_preprocessor=dict(num_classes=4, mean=[0, 0, 0], std=[1, 1, 1]),
             train_cfg=dict(augments=dict(type='NFHalfMixupHalfCutMix', mixup_alpha=0.2))))
    augments = model.data_preprocessor.batch_augments.augments
    assert len(augments) == 1 and isinstance(augments[0], HalfMixupHalfCutMix)
    assert augments[0].mixup.alpha == 0.2
    np.random.seed(1)
    torch.manual_seed(1)
    values = torch.arange(1, 5).float()
    data = dict(inputs=[torch.full((3, 16, 16), v.item()) for v in values],
                data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    out = model.data_preprocessor(data, training=True)
    scores = torch.stack([s.gt_score for s in out['data_samples']])
    assert torch.allclose(scores.sum(1), torch.ones(4))
    check_mixup_rows(out['inputs'], scores, values, [0, 1])
    check_cutmix_rows(out['inputs'], scores, values, [2, 3])
    loss = model.loss(out['inputs'], out['data_samples'])['loss']
    assert torch.isfinite(loss)


def test_warns_once_when_labels_are_already_mixed(monkeypatch):
    """Soft labels (e.g. from NFNetMixDataset) would be mixed twice: one warning."""
    from nfnets_mm.datasets import batch_augments
    logs = []
    monkeypatch.setattr(batch_augments, 'print_log', lambda msg, **kw: logs.append(msg))
    aug = HalfMixupHalfCutMix()
    inputs, onehot, _ = constant_batch(4)
    aug(inputs, onehot)
    assert logs == []  # one-hot labels: nothing to say
    soft = onehot.float() * 0.7 + onehot.float().roll(1, dims=0) * 0.3
    aug(inputs, soft)
    aug(inputs, soft)
    assert len(logs) == 1 and 'mix=False' in logs[0]
