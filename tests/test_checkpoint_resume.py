"""Checkpoint save / resume / load under weights-only loading (torch >= 2.6).

A tiny NFNet ``ImageClassifier`` trained with ``AGCOptimWrapper`` by an MMEngine
``Runner`` must resume exactly, load with ``load_from``, and malicious checkpoints
must be refused before any of their code runs.
"""
import copy
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint

import nfnets_mm  # noqa: F401  (registers NFNet, AGC wrappers, safe loader)
from nfnets_mm.utils.safe_checkpoint import (ALLOWLIST, UnsafeCheckpointError,
                                             load_from_local_safe, safe_load,
                                             secure_registered_schemes)
from tiny_runner_cfg import TINY_ARCH, make_tiny_data, tiny_runner_cfg  # tests/ is on sys.path


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp('ckpt_data'))


def _cfg(data_root, work_dir, max_iters):
    """The shared tiny config without augmentation, dropout or validation (exact resume
    needs no generator state here), and no ``custom_hooks`` entry."""
    return tiny_runner_cfg(data_root, work_dir, max_iters)


def _assert_same(a, b, where='checkpoint'):
    """Recursively compare tensors / dicts / lists / scalars for exact equality."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys {sorted(a)} != {sorted(b)}'
        for k in a:
            _assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


class _Snapshot(Hook):
    """Records the state the loop starts from and the first iteration it runs."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.model = copy.deepcopy(runner.model.state_dict())
        self.optim = copy.deepcopy(runner.optim_wrapper.state_dict())
        self.lr = runner.optim_wrapper.get_lr()['lr'][0]

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if not hasattr(self, 'first_iter'):
            self.first_iter = batch_idx


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """2 AGC iterations, checkpointed at iter 2; plus an uninterrupted 3-iter run."""
    work = tmp_path_factory.mktemp('runs')
    from mmengine.config import Config
    runner = Runner.from_cfg(Config(_cfg(data_root, str(work / 'run2'), 2)))
    runner.train()
    ckpt_path = osp.join(str(work / 'run2'), 'iter_2.pth')
    straight = Runner.from_cfg(Config(_cfg(data_root, str(work / 'run3'), 3)))
    straight.train()
    return dict(runner=runner, ckpt=ckpt_path, straight=straight, work=work)


def test_loader_is_registered():
    assert CheckpointLoader._get_checkpoint_loader('/some/local/file.pth') is \
        load_from_local_safe


def test_checkpoint_needs_allowlist_and_it_stays_scoped(trained):
    before = set(torch.serialization.get_safe_globals())
    assert not before & set(ALLOWLIST)
    # plain weights-only torch.load refuses MMEngine checkpoints (why this module exists)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trained['ckpt'], weights_only=True)
    ckpt = safe_load(trained['ckpt'], map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    # nothing was allowlisted globally
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trained['ckpt'], weights_only=True)


def test_checkpoint_matches_trained_state(trained):
    runner = trained['runner']
    ckpt = safe_load(trained['ckpt'])
    _assert_same(runner.model.state_dict(), ckpt['state_dict'], 'state_dict')
    _assert_same(runner.optim_wrapper.state_dict(), ckpt['optimizer'], 'optimizer')
    # the optimizer really has momentum state and AGC group flags to restore
    assert ckpt['optimizer']['state'] and any(
        g.get('agc') is False for g in ckpt['optimizer']['param_groups'])


def test_resume_continues_from_iter_2(trained, data_root, tmp_path):
    ckpt = safe_load(trained['ckpt'])
    snap = _Snapshot()
    cfg = _cfg(data_root, str(tmp_path / 'resumed'), 3)
    runner = Runner(**cfg, resume=True, load_from=trained['ckpt'], custom_hooks=[snap])
    runner.train()
    assert snap.iter == 2 and snap.first_iter == 2 and runner.iter == 3
    _assert_same(snap.model, ckpt['state_dict'], 'resumed state_dict')
    _assert_same(snap.optim, ckpt['optimizer'], 'resumed optimizer')
    assert snap.lr == ckpt['optimizer']['param_groups'][0]['lr']
    # 2 iterations + resume + 1 iteration == 3 uninterrupted iterations, bit for bit
    _assert_same(runner.model.state_dict(), trained['straight'].model.state_dict(),
                 'resumed vs straight')
    _assert_same(runner.optim_wrapper.state_dict(),
                 trained['straight'].optim_wrapper.state_dict(), 'optimizer after resume')


def test_load_from_alone(trained, data_root, tmp_path):
    ckpt = safe_load(trained['ckpt'])
    runner = Runner(**_cfg(data_root, str(tmp_path / 'loaded'), 1),
                    load_from=trained['ckpt'])
    fresh = runner.model.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in ckpt['state_dict'].items())
    runner.load_or_resume()
    assert runner.iter == 0
    _assert_same(runner.model.state_dict(), ckpt['state_dict'], 'loaded state_dict')
    # weights only: the optimizer starts fresh
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    assert not runner.optim_wrapper.state_dict()['state']


class _ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class _ExecPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


@pytest.mark.parametrize('payload', [_ShellPayload, _ExecPayload])
def test_malicious_checkpoint_is_refused(trained, data_root, tmp_path, payload):
    # the payload is live: plain unpickling runs it
    probe = tmp_path / 'probe_marker'
    pickle.loads(pickle.dumps(payload(str(probe))))
    assert probe.exists()

    marker = tmp_path / 'pwned'
    ckpt = safe_load(trained['ckpt'])
    ckpt['meta']['note'] = payload(str(marker))
    evil = str(tmp_path / 'evil.pth')
    torch.save(ckpt, evil)

    from nfnets_mm.models.backbones import NFNet
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(NFNet(arch=TINY_ARCH), evil, map_location='cpu')
    message = str(info.value)
    assert evil in message and 'allowlist' in message
    assert ('system' in message) if payload is _ShellPayload else ('exec' in message)
    assert isinstance(info.value, RuntimeError)
    assert not marker.exists()

    runner = Runner(**_cfg(data_root, str(tmp_path / 'evil_run'), 3), resume=True,
                    load_from=evil)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        runner.train()
    assert not marker.exists()


def test_every_scheme_loads_safely():
    """Every registered scheme (local, http(s), model zoos, pavi, s3 ...) resolves to an
    nfnets_mm loader; their behaviour is tested in test_remote_checkpoints.py."""
    from nfnets_mm.utils import safe_checkpoint as sc
    expected = {'': load_from_local_safe, 'http://': sc.load_from_http_safe,
                'https://': sc.load_from_http_safe,
                'open-mmlab://': sc.load_from_openmmlab_safe,
                'openmmlab://': sc.load_from_openmmlab_safe,
                'mmcls://': sc.load_from_mmcls_safe,
                'torchvision://': sc.load_from_torchvision_safe,
                'modelzoo://': sc.load_from_torchvision_safe}
    for prefix, loader in expected.items():
        assert CheckpointLoader._schemes[prefix] is loader, prefix
    for prefix, loader in CheckpointLoader._schemes.items():
        assert getattr(loader, '_nfnets_mm_safe', False), prefix
    before = dict(CheckpointLoader._schemes)
    secure_registered_schemes()  # idempotent: nothing is wrapped twice
    assert all(CheckpointLoader._schemes[p] is loader for p, loader in before.items())


def _damaged_files(tmp_path, ckpt_path):
    data = open(ckpt_path, 'rb').read()
    legacy = str(tmp_path / 'legacy.pth')
    torch.save({'w': torch.arange(1000.)}, legacy, _use_new_zipfile_serialization=False)
    legacy_data = open(legacy, 'rb').read()
    return {'empty': (b'', 'the file is empty'),
            'truncated': (data[:len(data) // 2], 'truncated'),
            'legacy truncated': (legacy_data[:len(legacy_data) // 2], 'ends before'),
            'text': (b'step,loss\n1,2.3\n', 'not a PyTorch checkpoint')}


@pytest.mark.parametrize('kind', ['empty', 'truncated', 'legacy truncated', 'text'])
def test_damaged_checkpoint_is_explained(trained, tmp_path, kind):
    data, phrase = _damaged_files(tmp_path, trained['ckpt'])[kind]
    path = str(tmp_path / 'damaged.pth')
    with open(path, 'wb') as f:
        f.write(data)
    from nfnets_mm.models.backbones import NFNet
    from nfnets_mm.utils import CorruptCheckpointError
    for load in (lambda: safe_load(path),
                 lambda: load_checkpoint(NFNet(arch=TINY_ARCH), path, map_location='cpu')):
        with pytest.raises(CorruptCheckpointError) as info:
            load()
        message = str(info.value)
        assert isinstance(info.value, RuntimeError)
        assert path in message and f'({len(data)} bytes)' in message and phrase in message
        if kind == 'text':
            assert 'Check that the path' in message
        else:
            assert 'interrupted save' in message and 'earlier checkpoint' in message


class StatsPayload:
    """A pickled HistoryBuffer whose ``statistics_methods`` are ``methods``."""

    def __init__(self, **methods):
        self.methods = methods

    def __reduce__(self):
        return (HistoryBuffer, (), dict(statistics_methods=self.methods,
                                        _log_history=np.zeros(1),
                                        _count_history=np.ones(1), max_length=10))


@pytest.mark.parametrize('name, method', [
    ('mean', np.dtype),  # a foreign callable injected as a statistics method
    # even HistoryBuffer's own methods must keep their names: ``max`` computing ``min``
    # would silently corrupt logged statistics
    ('max', HistoryBuffer.min),
])
def test_history_buffer_statistics_methods_injection_is_refused(tmp_path, name, method):
    HistoryBuffer()  # make sure the default methods are registered
    before = dict(HistoryBuffer._statistics_methods)
    path = str(tmp_path / 'inject.pth')
    torch.save({'message_hub': {'log_scalars': {'x': StatsPayload(**{name: method})}}}, path)
    with pytest.raises(UnsafeCheckpointError, match='HistoryBuffer'):
        safe_load(path)
    assert HistoryBuffer._statistics_methods == before
    assert HistoryBuffer._statistics_methods[name] is getattr(HistoryBuffer, name)


class _NotAllowed:
    """A class outside the allowlist."""


def test_history_buffer_registry_restored_when_a_later_global_is_refused(tmp_path):
    """``__setstate__`` merges the methods while unpickling; a global refused after it
    must not leave them merged."""
    HistoryBuffer()
    before = dict(HistoryBuffer._statistics_methods)
    path = str(tmp_path / 'later.pth')
    torch.save([StatsPayload(max=HistoryBuffer.min), _NotAllowed()], path)
    with pytest.raises(UnsafeCheckpointError, match='_NotAllowed'):
        safe_load(path)
    assert HistoryBuffer._statistics_methods == before
    assert HistoryBuffer._statistics_methods['max'] is HistoryBuffer.max
