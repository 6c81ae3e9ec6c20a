"""sized_pipeline: the variant configs re-size their base's pipelines by step type."""
import pytest

from nfnets_mm.datasets.sized_pipeline import sized_pipeline
from nfnets_mm.variants import get_variant

BASE = [
    dict(type='LoadImageFromFile'),
    dict(type='NFNetRandomResizedCrop', scale=192, sampler='deepmind', backend='tf'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='NFNetRandAugment', magnitude=5, image_size=192, num_layers=4),
    dict(type='NFNetEvalResizeCrop', crop_size=256, pad=32),
    dict(type='PackInputs'),
]


@pytest.mark.parametrize('name', ['F1', 'F3', 'f7', 'F2+'])
def test_variant_sizes_by_step_type(name):
    row = get_variant(name)
    out = sized_pipeline(BASE, name)
    crop, ra, evaluation = out[1], out[3], out[4]
    assert crop == dict(BASE[1], scale=row.train_size)
    assert ra == dict(BASE[3], magnitude=row.ra_magnitude, image_size=row.train_size,
                      num_layers=row.ra_num_layers)
    assert evaluation == dict(BASE[4], crop_size=row.test_size)
    assert [out[i] for i in (0, 2, 5)] == [BASE[i] for i in (0, 2, 5)]
    assert BASE[1]['scale'] == 192 and out[1] is not BASE[1]  # a copy; the base is untouched


def test_explicit_sizes_override_and_stand_alone():
    out = sized_pipeline(BASE, 'F1', test_size=288)
    assert out[4]['crop_size'] == 288 and out[1]['scale'] == get_variant('F1').train_size
    out = sized_pipeline(BASE, train_size=224, test_size=224, ra_magnitude=10)
    assert (out[1]['scale'], out[3]['magnitude'], out[3]['image_size'], out[4]['crop_size']) == (
        224, 10, 224, 224)
    assert out[3]['num_layers'] == 4  # kept from the base without a variant


def test_missing_size_and_unknown_variant_are_named():
    with pytest.raises(ValueError, match='NFNetEvalResizeCrop needs a crop_size'):
        sized_pipeline(BASE, train_size=224, ra_magnitude=10)
    with pytest.raises(KeyError, match="unknown NFNet variant 'F9'.*F0"):
        sized_pipeline(BASE, 'F9')
