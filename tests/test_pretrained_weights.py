"""Released weights in one config line: DeepMind ``F*_haiku.npz`` files and timm state
dicts load as a path, a URL or ``dm-nfnets://F0`` through MMEngine's own entry points
(``init_cfg=dict(type='Pretrained', ...)``, ``load_checkpoint``, ``Runner(load_from=)``),
converted in memory, cached by SHA-256, checked against the model's architecture.

Offline: the loopback HTTP server of ``test_remote_checkpoints`` serves a DeepMind-format
pickle built from the documented Haiku names (``test_converters.make_dm_params``) and
the state dict of a real (small) timm ``NormFreeNet`` in ``dm_nfnet`` form.
"""
import dataclasses
import io
import logging
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.runner import Runner, load_checkpoint
from timm.models.nfnet import NormFreeNet, _dm_nfnet_cfg

from conftest import free_port
from mmpretrain.registry import MODELS
from nfnets_mm.converters import (CheckpointDownloadError, CheckpointNotFoundError,
                                  PretrainedArchMismatchError, deepmind,
                                  load_checkpoint_file, pretrained)
from nfnets_mm.converters.pretrained import check_arch
from nfnets_mm.utils import UnsafeCheckpointError
from nfnets_mm.variants import NFNET_VARIANTS
from test_checkpoint_resume import TINY_ARCH, _cfg, data_root  # noqa: F401
from test_converters import (SMALL_ARCH, _Evil, _expected_targets, _randomize_timm,
                             make_dm_params)
from test_remote_checkpoints import server  # noqa: F401  (the loopback HTTP fixture)

DM_BACKBONE = dict(type='NFNet', arch=SMALL_ARCH, padding='same',
                   act_cfg=dict(type='GELU', approximate='tanh'))
NUM_CLASSES = 10


def _classifier(backbone: dict, in_channels: int, init_cfg=None) -> torch.nn.Module:
    backbone = dict(backbone, init_cfg=init_cfg) if init_cfg else backbone
    return MODELS.build(dict(
        type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
        head=dict(type='NFNetClsHead', num_classes=NUM_CLASSES,
                  in_channels=in_channels))).eval()


def _pickled(obj) -> bytes:
    buffer = io.BytesIO()
    pickle.dump(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope='module')
def dm_source():
    """``(bytes of a DeepMind-format pickle, the same model in our names)``: the
    reference model gets its weights from the test's own name map."""
    params = make_dm_params(SMALL_ARCH, num_classes=NUM_CLASSES, seed=3)
    reference = _classifier(DM_BACKBONE, 192)
    reference.load_state_dict(_expected_targets(params, SMALL_ARCH), strict=True)
    return _pickled(params), reference


@pytest.fixture(scope='module')
def timm_source():
    """``(bytes of a timm dm_nfnet state dict, the timm model)``: timm's DeepMind NFNet
    layout (SAME padding, skipinit gains, gamma in the activations), made small."""
    cfg = dataclasses.replace(_dm_nfnet_cfg(depths=(1, 2, 1, 1), channels=(32, 64, 96, 96)),
                              group_size=16, stem_chs=32)
    model = NormFreeNet(cfg, num_classes=NUM_CLASSES).eval()
    _randomize_timm(model, seed=4)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue(), model


TIMM_BACKBONE = dict(type='NFNet', padding='same', act_cfg=dict(type='GELU'), ws_eps=1e-5,
                     ws_eps_mode='add', arch=dict(SMALL_ARCH, stem_channels=(4, 8, 16, 32)))


def _logits(model, x):
    with torch.no_grad():
        return model(x, mode='tensor')


def _backbone_features(model, x):
    with torch.no_grad():
        return model.backbone(x)[-1]


def _hub(tmp_path):
    return tmp_path / 'hub' / 'checkpoints'


@pytest.fixture(autouse=True)
def _private_hub(tmp_path, monkeypatch):
    """Downloads and converted checkpoints go to ``tmp_path/hub``, never the user's."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))


# ----------------------------------------------------------------------------
# DeepMind weights by URL and alias
# ----------------------------------------------------------------------------
def test_dm_url_init_cfg_and_load_checkpoint_match_the_source(server, dm_source,  # noqa: F811
                                                              tmp_path, monkeypatch):
    data, reference = dm_source
    url = server.serve('F0_haiku.npz', data)
    x = torch.randn(2, 3, 48, 64)

    # backbone only, as MMDetection configs do: prefix='backbone.'
    model = _classifier(DM_BACKBONE, 192, init_cfg=dict(type='Pretrained', checkpoint=url,
                                                        prefix='backbone.'))
    model.backbone.init_weights()
    assert torch.equal(_backbone_features(model, x), _backbone_features(reference, x))

    # the whole classifier (load_from's path)
    model = _classifier(DM_BACKBONE, 192)
    load_checkpoint(model, url, map_location='cpu', strict=True)
    assert torch.equal(_logits(model, x), _logits(reference, x))

    # downloaded once, converted once, cached next to the download by SHA-256
    assert server.requests == ['/ckpt/F0_haiku.npz']
    cached = list((_hub(tmp_path) / 'converted').iterdir())
    assert [p.name.split('.')[:2] for p in cached] == [['F0_haiku', 'npz']]
    assert (_hub(tmp_path) / 'F0_haiku.npz').read_bytes() == data

    # a later load neither downloads nor converts: it reads the converted cache
    monkeypatch.setattr(deepmind, 'convert_file', _fail('converted again'))
    model = _classifier(DM_BACKBONE, 192)
    checkpoint = load_checkpoint(model, url, map_location='cpu', strict=True)
    assert torch.equal(_logits(model, x), _logits(reference, x))
    assert checkpoint['meta']['source_url'] == url
    assert server.requests == ['/ckpt/F0_haiku.npz']


def _fail(what):
    def fail(*args, **kwargs):
        raise AssertionError(what)
    return fail


def test_dm_alias_resolves_through_the_variant_table(server, dm_source, data_root,  # noqa: F811
                                                     tmp_path, monkeypatch):
    """``dm-nfnets://F0`` is ``get_variant('F0').dm_weights_url``; here that URL points
    at the test server (the table is patched, not the loader).  Runner(load_from=)."""
    params = make_dm_params(TINY_ARCH, num_classes=6, seed=5)
    url = server.serve('F0_haiku.npz', _pickled(params))
    monkeypatch.setitem(NFNET_VARIANTS, 'F0',
                        dataclasses.replace(NFNET_VARIANTS['F0'], dm_weights_url=url))
    runner = Runner(**_cfg(data_root, str(tmp_path / 'run'), 1), load_from='dm-nfnets://f0')
    runner.load_or_resume()
    state = runner.model.state_dict()
    for key, value in _expected_targets(params, TINY_ARCH).items():
        assert torch.equal(state[key], value.reshape(state[key].shape)), key
    assert server.requests == ['/ckpt/F0_haiku.npz']


def test_dm_alias_of_unreleased_or_unknown_variant_is_refused():
    for name, phrase in (('F7', 'released no weights'), ('F9', 'unknown NFNet variant')):
        with pytest.raises(ValueError, match=phrase) as info:
            load_checkpoint(torch.nn.Linear(1, 1), f'dm-nfnets://{name}')
        assert 'F0, F1, F2, F3, F4, F5, F6' in str(info.value)


def test_malicious_pickle_behind_url_is_refused(server, tmp_path):  # noqa: F811
    marker = tmp_path / 'pwned'
    url = server.serve('F0_haiku.npz', _pickled({'NFNet/~/stem_conv0': {
        'w': _Evil(str(marker))}}))
    model = _classifier(DM_BACKBONE, 192, init_cfg=dict(type='Pretrained', checkpoint=url,
                                                        prefix='backbone.'))
    with pytest.raises(UnsafeCheckpointError) as info:
        model.backbone.init_weights()
    message = str(info.value)
    assert url in message and 'system' in message and 'refusing to load global' in message
    assert not marker.exists()
    assert not (_hub(tmp_path) / 'converted').exists() or \
        not list((_hub(tmp_path) / 'converted').iterdir())


# ----------------------------------------------------------------------------
# timm state dicts by path and URL
# ----------------------------------------------------------------------------
def test_timm_state_dict_by_url_and_path(server, timm_source, tmp_path,  # noqa: F811
                                         monkeypatch):
    data, timm_model = timm_source
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        expected = timm_model(x)

    url = server.serve('dm_nfnet_small.pth', data)
    model = _classifier(TIMM_BACKBONE, 192)
    load_checkpoint(model, url, map_location='cpu', strict=True)
    assert torch.allclose(_logits(model, x), expected, rtol=1e-5, atol=1e-5 * expected.abs()
                          .max().item())

    # second load: from the converted cache, no request, no conversion
    from nfnets_mm.converters import timm as timm_converter
    convert_state_dict = timm_converter.convert_state_dict
    monkeypatch.setattr(timm_converter, 'convert_state_dict', _fail('converted again'))
    model = _classifier(TIMM_BACKBONE, 192)
    load_checkpoint(model, url, map_location='cpu', strict=True)
    assert torch.allclose(_logits(model, x), expected, rtol=1e-5, atol=1e-5 * expected.abs()
                          .max().item())
    assert server.requests == ['/ckpt/dm_nfnet_small.pth']
    monkeypatch.setattr(timm_converter, 'convert_state_dict', convert_state_dict)

    # a local path, backbone only
    path = tmp_path / 'timm_dm_nfnet.pth'
    path.write_bytes(data)
    model = _classifier(TIMM_BACKBONE, 192, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.backbone.init_weights()
    load_checkpoint(model.head, url, map_location='cpu', revise_keys=[(r'^head\.', '')])
    assert torch.allclose(_logits(model, x), expected, rtol=1e-5, atol=1e-5 * expected.abs()
                          .max().item())
    assert sorted(os.listdir(tmp_path)) == sorted(['hub', 'timm_dm_nfnet.pth'])


# ----------------------------------------------------------------------------
# architecture check and how-to messages
# ----------------------------------------------------------------------------
def test_arch_mismatch_names_both(server, dm_source, tmp_path):  # noqa: F811
    url = server.serve('F1_haiku.npz', dm_source[0])
    other = dict(DM_BACKBONE, arch=TINY_ARCH)
    model = _classifier(other, 256, init_cfg=dict(type='Pretrained', checkpoint=url,
                                                  prefix='backbone.'))
    with pytest.raises(PretrainedArchMismatchError) as info:
        model.backbone.init_weights()
    message = str(info.value)
    assert url in message
    assert 'depths (1, 2, 1, 1), widths (32, 64, 96, 96)' in message  # the checkpoint's
    assert 'depths (1, 1, 1, 1), widths (32, 64, 128, 128)' in message  # the model's
    # whole-model loads are checked too; a backbone without prefix is told to add it
    with pytest.raises(PretrainedArchMismatchError, match='depths'):
        load_checkpoint(model, url)
    backbone = MODELS.build(DM_BACKBONE)
    with pytest.raises(PretrainedArchMismatchError, match="prefix='backbone.'"):
        load_checkpoint(backbone, url)


def test_local_dm_file_and_converter_output(dm_source, tmp_path):
    """A local ``F*_haiku.npz`` loads as it is (its conversion cached under the torch.hub
    folder, nothing written next to it); a converter command's output is checked
    against the model too."""
    data, reference = dm_source
    source = tmp_path / 'mine' / 'F0_haiku.npz'
    source.parent.mkdir()
    source.write_bytes(data)
    x = torch.randn(1, 3, 32, 32)
    for _ in range(2):
        model = _classifier(DM_BACKBONE, 192)
        load_checkpoint(model, str(source), map_location='cpu', strict=True)
        assert torch.equal(_logits(model, x), _logits(reference, x))
    assert os.listdir(source.parent) == ['F0_haiku.npz']
    assert len(os.listdir(_hub(tmp_path) / 'converted')) == 1

    converted = tmp_path / 'mine' / 'small.pth'
    deepmind.convert(str(source), str(converted))
    model = _classifier(dict(DM_BACKBONE, arch=TINY_ARCH), 256)
    with pytest.raises(PretrainedArchMismatchError, match='small.pth holds NFNet with'):
        load_checkpoint(model, str(converted))


def test_arch_mismatch_names_the_variants():
    """F1 weights into an F0 model (shapes only: on the meta device)."""
    with torch.device('meta'):
        f0 = MODELS.build(dict(type='NFNet', arch='F0'))
        f1 = MODELS.build(dict(type='NFNet', arch='F1'))
    state = {f'backbone.{k}': v for k, v in f1.state_dict().items()}
    wrapper = torch.nn.Module()
    wrapper.backbone = f0
    with pytest.raises(PretrainedArchMismatchError) as info:
        check_arch(wrapper, state, dict(source='F1_haiku.npz', backbone=dict(type='NFNet')))
    message = str(info.value)
    assert 'F1_haiku.npz holds NFNet-F1' in message and 'is NFNet-F0' in message
    assert "checkpoint='dm-nfnets://F0'" in message  # the model's own weights
    check_arch(wrapper, {f'backbone.{k}': v for k, v in f0.state_dict().items()},
               dict(source='F0_haiku.npz', backbone=dict(type='NFNet')))


def test_missing_local_checkpoint_says_how_to_get_it(tmp_path):
    path = str(tmp_path / 'checkpoints' / 'F1_haiku.npz')
    model = _classifier(DM_BACKBONE, 192, init_cfg=dict(type='Pretrained', checkpoint=path,
                                                        prefix='backbone.'))
    with pytest.raises(CheckpointNotFoundError) as info:
        model.backbone.init_weights()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert path in message and "'dm-nfnets://F1'" in message
    assert 'tools/model_converters/dm_nfnet_to_mmpretrain.py F1_haiku.npz' in message
    with pytest.raises(CheckpointNotFoundError, match='dm-nfnets://F0'):
        load_checkpoint(model, str(tmp_path / 'my_run.pth'))


def test_unreachable_url_says_how_to_get_it(server, tmp_path, monkeypatch):  # noqa: F811
    url = f'http://127.0.0.1:{free_port()}/dm-nfnets/F1_haiku.npz'  # nothing listens
    monkeypatch.setitem(NFNET_VARIANTS, 'F1',
                        dataclasses.replace(NFNET_VARIANTS['F1'], dm_weights_url=url))
    with pytest.raises(CheckpointDownloadError) as info:
        load_checkpoint(_classifier(DM_BACKBONE, 192), 'dm-nfnets://F1')
    message = str(info.value)
    cache = _hub(tmp_path) / 'F1_haiku.npz'
    assert message.startswith(f'Cannot download {url}')
    assert f'copy it to {cache}' in message and "'dm-nfnets://F1'" in message
    assert 'dm_nfnet_to_mmpretrain.py F1_haiku.npz' in message
    assert not cache.exists()


def test_source_format_is_told_by_content(tmp_path, dm_source, timm_source):
    paths = dict(pickle=tmp_path / 'a.pth', torch=tmp_path / 'b.npz')
    paths['pickle'].write_bytes(dm_source[0])
    paths['torch'].write_bytes(timm_source[0])
    legacy = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
    assert pretrained.source_format(str(paths['pickle'])) == 'deepmind'
    assert pretrained.source_format(str(paths['torch'])) == 'torch'
    assert pretrained.source_format(str(legacy)) == 'torch'
    assert osp.isfile(legacy)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_source_dtypes_convert_to_float32(dtype, timm_source, tmp_path):
    """fp16 / bf16 / fp64 sources convert to the float32 checkpoint MMPretrain expects,
    holding the source's values."""
    _, timm_model = timm_source
    source = {k: v.to(dtype) for k, v in timm_model.state_dict().items()}
    path = tmp_path / 'timm_cast.pth'
    torch.save(source, path)
    state = load_checkpoint_file(str(path), map_location='cpu')['state_dict']
    assert {v.dtype for v in state.values()} == {torch.float32}
    assert torch.equal(state['backbone.stem.conv2.weight'], source['stem.conv2.weight'].float())

    params = make_dm_params(SMALL_ARCH, num_classes=NUM_CLASSES, seed=6)
    numpy_dtype = {torch.float16: 'float16', torch.float64: 'float64'}.get(dtype)
    if numpy_dtype is None:  # NumPy has no bfloat16
        return
    cast = {m: {n: np.asarray(v).astype(numpy_dtype) for n, v in g.items()}
            for m, g in params.items()}
    dm_path = tmp_path / 'F0_haiku.npz'
    dm_path.write_bytes(_pickled(cast))
    state = load_checkpoint_file(str(dm_path), map_location='cpu')['state_dict']
    assert {v.dtype for v in state.values()} == {torch.float32}
    expected = cast['NFNet/~/stem_conv1']['w'].transpose(3, 2, 0, 1).astype(np.float32)
    assert torch.equal(state['backbone.stem.conv2.weight'], torch.from_numpy(expected))


@pytest.mark.parametrize('rank', [0, 1])
def test_local_dm_file_is_converted_by_rank_0_first(rank, dm_source, tmp_path, monkeypatch):
    """Distributed runs (2 ranks, faked): rank 0 converts into the cache, then tells the
    others; a rank told that rank 0 failed raises its error without reading the file."""
    from nfnets_mm.utils import checkpoint_schemes
    path = tmp_path / 'F0_haiku.npz'
    path.write_bytes(dm_source[0])
    sent, received = [], {}

    def broadcast_object_list(data, src=0, group=None):
        sent.append(('broadcast', data[0], osp.isdir(_hub(tmp_path) / 'converted')))
        if rank > 0:
            data[0] = received.get('outcome')

    def all_gather_object(data, group=None):
        sent.append(('gather', data))
        return [data, None] if rank == 0 else [None, data]

    monkeypatch.setattr(checkpoint_schemes, 'get_dist_info', lambda: (rank, 2))
    monkeypatch.setattr(checkpoint_schemes, 'broadcast_object_list', broadcast_object_list)
    monkeypatch.setattr(checkpoint_schemes, 'all_gather_object', all_gather_object)
    model = _classifier(DM_BACKBONE, 192)
    if rank == 0:
        load_checkpoint(model, str(path), map_location='cpu', strict=True)
        # rank 0 has converted (and cached) when it sends its outcome
        assert sent == [('broadcast', None, True), ('gather', None)]
        return
    received['outcome'] = ['UnsafeCheckpointError', 'refusing to load global os.system']
    monkeypatch.setattr(deepmind, 'convert_file', _fail('rank 1 read the file'))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(model, str(path), map_location='cpu')
    assert str(info.value) == (f'rank 0 failed to load {path}: refusing to load global '
                               'os.system')
    assert [s[0] for s in sent] == ['broadcast']


def test_other_numerics_options_are_warned_about(dm_source, tmp_path, monkeypatch):
    """DeepMind weights into a model with symmetric padding and exact GELU load (e.g.
    for deliberate fine-tuning) with a warning naming the differences; matching
    options load silently."""
    path = tmp_path / 'F0_haiku.npz'
    path.write_bytes(dm_source[0])
    logged = []
    monkeypatch.setattr(pretrained, 'print_log',
                        lambda message, **kwargs: logged.append((message, kwargs)))
    load_checkpoint(_classifier(DM_BACKBONE, 192), str(path), strict=True)
    assert not [m for m, kw in logged if kw.get('level') == logging.WARNING]
    plain = dict(DM_BACKBONE, padding='symmetric', act_cfg=dict(type='GELU'))
    load_checkpoint(_classifier(plain, 192), str(path), strict=True)
    (warning, ) = [m for m, kw in logged if kw.get('level') == logging.WARNING]
    assert "padding='symmetric' (not 'same')" in warning
    assert "approximate='none' (not 'tanh')" in warning and str(path) in warning
