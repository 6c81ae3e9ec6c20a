"""The recipe configs' train and eval pipelines (DeepMind's protocol) run end to end on an
image file: the sizes are the variant table's, and the classifier's data preprocessor takes
the float32 images that TF's resize produces."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

import nfnets_mm  # noqa: F401
from nfnets_mm.variants import get_variant

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    rng = np.random.RandomState(0)
    y, x = np.mgrid[:300, :400]
    img = np.stack([x * 255 // 399, y * 255 // 299, (x + y) % 256], -1)
    img = np.clip(img + rng.randint(-20, 21, img.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp('protocol') / 'photo.png'
    Image.fromarray(img).save(path)
    return str(path)


def run(pipeline_cfg, image_file, seed=0):
    from mmpretrain.registry import TRANSFORMS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        steps = [TRANSFORMS.build(t) for t in pipeline_cfg]
    np.random.seed(seed)
    results = dict(img_path=image_file, gt_label=3)
    for step in steps:
        results = step(results)
    return results


@pytest.mark.parametrize('variant', ['F0', 'F3'])
def test_train_and_eval_pipelines_feed_the_model(variant, image_file):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, f'configs/nfnet/{variant.lower()}_imagenet.py'))
    row = get_variant(variant)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        preprocessor = MODELS.build(dict(type='ClsDataPreprocessor',
                                         **cfg.model.data_preprocessor))
    batch = []
    for seed in range(3):
        # the per-image steps, unmixed: NFNetMixDataset's inner (load, crop, flip) and
        # outer (RandAugment, pack) pipelines back to back
        mix = cfg.train_dataloader.dataset
        out = run(mix.dataset.pipeline + mix.pipeline, image_file, seed)
        inputs = out['inputs']
        assert inputs.shape == (3, row.train_size, row.train_size)
        # TF resize -> float32; RandAugment clipped and truncated it to 0..255 integers,
        # handed on as uint8 (a quarter of the loader's memory; the preprocessor casts)
        assert inputs.dtype == torch.uint8
        assert inputs.min() >= 0 and inputs.max() <= 255 and (inputs == inputs.round()).all()
        batch.append(out)
    data = preprocessor(dict(inputs=[o['inputs'] for o in batch],
                             data_samples=[o['data_samples'] for o in batch]), training=True)
    assert data['inputs'].shape == (3, 3, row.train_size, row.train_size)
    assert torch.isfinite(data['inputs']).all()
    assert not torch.equal(batch[0]['inputs'], batch[1]['inputs'])  # random crops / ops

    test = run(cfg.test_dataloader.dataset.pipeline, image_file)['inputs']
    assert test.shape == (3, row.test_size, row.test_size) and test.dtype == torch.float32


def test_f1_train_dataloader_builds_in_the_runner(image_file, tmp_path):
    """tools/train.py's path: MMEngine's Runner builds f1's train loader (registry scope
    resolution of every transform) and yields a batch at F1's train size."""
    import shutil

    from mmengine.runner import Runner
    for label in ('a', 'b'):
        (tmp_path / label).mkdir()
        shutil.copy(image_file, tmp_path / label / 'x.png')
    cfg = Config.fromfile(osp.join(REPO, 'configs/nfnet/f1_imagenet.py'))
    loader_cfg = cfg.train_dataloader.to_dict()
    loader_cfg.update(batch_size=2, num_workers=0, persistent_workers=False)
    assert loader_cfg['dataset']['type'] == 'NFNetMixDataset'
    inner = loader_cfg['dataset']['dataset']  # the ImageNet dataset inside the mix wrapper
    inner.update(type='CustomDataset', data_root='', ann_file='',
                 data_prefix=str(tmp_path), with_label=True)
    inner.pop('split', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        batch = next(iter(loader))
    size = get_variant('F1').train_size
    assert [tuple(x.shape) for x in batch['inputs']] == [(3, size, size)] * 2
    # mixed in the loader: soft labels over the 2 classes, one MixUp and one CutMix
    scores = [s.gt_score for s in batch['data_samples']]
    assert all(torch.isclose(s.sum(), torch.tensor(1.)) for s in scores)
    assert sorted(s.mix_mode for s in batch['data_samples']) == ['cutmix', 'mixup']
