"""The model zoo: metafile / model-index in MMPretrain's format, generated from the variant
table, and MMPretrain's ImageClassificationInferencer on an NFNet config + checkpoint."""
import functools
import glob
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope

from nfnets_mm.variants import NFNET_VARIANTS, get_variant

METAFILE = osp.join(REPO_ROOT, 'configs', 'nfnet', 'metafile.yml')
RELEASED_URLS = {v.dm_weights_url for v in NFNET_VARIANTS.values() if v.dm_weights_url}


@functools.lru_cache(maxsize=None)
def _generator():
    """tools/model_zoo/generate.py, loaded once (its meta-device builds are cached)."""
    spec = importlib.util.spec_from_file_location(
        'nfnets_model_zoo_generate', osp.join(REPO_ROOT, 'tools', 'model_zoo', 'generate.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def metafile():
    with open(METAFILE, encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def models(metafile):
    return metafile['Models']


def test_generated_files_are_up_to_date():
    """metafile.yml, model-index.yml and the README tables equal what the table gives."""
    assert _generator().stale_files() == []


def test_model_index_imports_the_metafile_and_mmpretrain_finds_the_models(models):
    """``import nfnets_mm`` registered the index in MMPretrain's ModelHub, once."""
    from mmpretrain import list_models
    from mmpretrain.apis import ModelHub

    from nfnets_mm.models.model_zoo import register_model_zoo
    with open(osp.join(REPO_ROOT, 'model-index.yml'), encoding='utf-8') as f:
        assert yaml.safe_load(f) == {'Import': ['configs/nfnet/metafile.yml']}
    names = sorted(m['Name'] for m in models)
    assert sorted(list_models('nf*')) == names
    info = ModelHub.get('nfnet-f1_3rdparty-dm_in1k')
    assert info.weights == get_variant('F1').dm_weights_url and info.in_collection == 'NFNet'
    assert info.results[0].metrics['Top 1 Accuracy'] == get_variant('F1').top1
    assert info.config.model.backbone.arch == 'F1'
    assert register_model_zoo() == []  # idempotent
    with pytest.raises(FileNotFoundError, match='no-such-index.yml'):
        register_model_zoo('no-such-index.yml')


def test_every_nfnet_config_is_listed_once(models):
    listed = [m['Config'] for m in models]
    on_disk = sorted(osp.relpath(p, REPO_ROOT) for p in
                     glob.glob(osp.join(REPO_ROOT, 'configs', 'nfnet', '**', '*.py'),
                               recursive=True))
    assert sorted(listed) == on_disk
    names = [m['Name'] for m in models]
    assert len(set(names)) == len(names)
    collections = {c['Name'] for c in yaml.safe_load(open(METAFILE))['Collections']}
    assert {m['In Collection'] for m in models} <= collections


def test_weights_are_released_urls_of_the_configs_own_variant(models):
    weighted = [m for m in models if m['Weights']]
    assert {m['Weights'] for m in weighted} == RELEASED_URLS  # F0-F6, each once
    for m in weighted:
        assert m['Weights'] in RELEASED_URLS or osp.isfile(osp.join(REPO_ROOT, m['Weights']))
        cfg = Config.fromfile(osp.join(REPO_ROOT, m['Config']))
        variant = get_variant(cfg.model.backbone.arch)
        assert m['Weights'] == variant.dm_weights_url, m['Name']
        assert m['Converted From']['Weights'] == m['Weights']
        techniques = m['Metadata'].get('Training Techniques', [])
        assert ('Sharpness-Aware Minimization' in techniques) == variant.sam, m['Name']


def test_numbers_equal_the_variant_table_and_configs_build(models):
    """Parameters / FLOPs / accuracy of every entry against the table and the built model."""
    for m in models:
        cfg, model = _generator().build_on_meta(m['Config'])
        counted = sum(p.numel() for p in model.parameters())
        arch = cfg.model.backbone.get('arch')
        variant = get_variant(arch) if isinstance(arch, str) else None
        meta = m['Metadata']
        if variant is not None and variant.params_m is not None:
            assert meta['Parameters'] == round(variant.params_m * 1e6), m['Name']
            # the built model is the architecture Table 3 counts (to its 0.1M rounding)
            assert abs(counted - meta['Parameters']) <= 0.05e6, (m['Name'], counted)
        else:
            assert meta['Parameters'] == counted, m['Name']
        if meta['FLOPs'] is not None:
            assert meta['FLOPs'] == round(variant.flops_g * 1e9), m['Name']
            crops = [t['crop_size'] for t in cfg.test_dataloader.dataset.pipeline
                     if 'crop_size' in t]
            assert crops == [variant.test_size], m['Name']  # FLOPs counted at this size
        if m['Weights']:
            metrics = m['Results'][0]['Metrics']
            assert metrics == {'Top 1 Accuracy': variant.top1, 'Top 5 Accuracy': variant.top5}
        else:
            assert m['Results'] is None, f'{m["Name"]}: results without weights'


def _demo_checkpoint(tmp_path):
    """The demo config's model with random weights, saved as an MMEngine checkpoint."""
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'nfnet', 'nfnet_demo.py'))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():  # SkipInit leaves the branches silent: give them a voice
        for name, param in model.named_parameters():
            if name.endswith('skip_gain'):
                param.fill_(1.0)
    path = tmp_path / 'demo.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': list(cfg.classes)}}}, path)
    return cfg, model.eval(), str(path)


def test_image_classification_inferencer_with_an_nfnet_config(tmp_path):
    """MMPretrain's inferencer: config + checkpoint in, the model's own prediction out."""
    from mmpretrain import ImageClassificationInferencer
    cfg, model, checkpoint = _demo_checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]

    inferencer = ImageClassificationInferencer(
        osp.join(REPO_ROOT, 'configs', 'nfnet', 'nfnet_demo.py'), pretrained=checkpoint,
        device='cpu')
    results = inferencer(images, batch_size=2)
    by_name = ImageClassificationInferencer('nfnet-demo_synthetic', pretrained=checkpoint,
                                            device='cpu')(images, batch_size=2)

    with torch.no_grad():  # the same images through the model directly (BGR arrays)
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        data = model.data_preprocessor({'inputs': list(batch)}, False)
        expected = torch.softmax(model(data['inputs'], mode='tensor'), dim=1)
    num_classes = len(cfg.classes)
    assert len(results) == 2
    for result, named in zip(results, by_name):  # the zoo name is the same model
        np.testing.assert_array_equal(result['pred_scores'], named['pred_scores'])
    for result, scores in zip(results, expected):
        assert set(result) == {'pred_scores', 'pred_label', 'pred_score', 'pred_class'}
        assert result['pred_scores'].shape == (num_classes, )
        np.testing.assert_allclose(result['pred_scores'], scores.numpy(), rtol=1e-4, atol=1e-6)
        assert result['pred_label'] == int(scores.argmax())
        assert result['pred_class'] == cfg.classes[result['pred_label']]
        assert result['pred_score'] == pytest.approx(float(scores.max()), rel=1e-4)


def test_readme_inference_example_names_a_listed_config_and_released_weights(models):
    """The README's three lines: a config of the zoo and weights the table releases."""
    import re

    from nfnets_mm.converters.pretrained import dm_weights_url
    with open(osp.join(REPO_ROOT, 'README.md'), encoding='utf-8') as f:
        section = f.read().split('## Inference', 1)[1].split('\n## ', 1)[0]
    code = section.split('```python\n', 1)[1].split('```', 1)[0].strip().splitlines()
    assert len(code) == 3 and code[0] == 'from mmpretrain import ImageClassificationInferencer'
    pattern = r"ImageClassificationInferencer\('([^']+)', pretrained='([^']+)'\)"
    config, weights = re.search(pattern, code[1]).groups()
    entry = next(m for m in models if m['Config'] == config)
    assert dm_weights_url(weights.split('://', 1)[1]) == entry['Weights']
