"""Remote checkpoints load only through the weights-only allowlist.

``http(s)://``, ``open-mmlab://``, ``openmmlab://``, ``mmcls://``, ``torchvision://``,
``modelzoo://`` and any other scheme: a malicious checkpoint is refused before its
payload runs, whichever MMEngine entry point loads it; a real MMEngine checkpoint loads
and torch.hub's download cache keeps working; damaged downloads raise a clear error.

A real ``http.server`` on 127.0.0.1 (port 0, a thread, shut down after each test)
serves the files; the torch.hub cache is the test's ``tmp_path``.
"""
import hashlib
import http.server
import io
import json
import os
import os.path as osp
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from mmengine.runner import checkpoint as mmengine_checkpoint

import nfnets_mm  # noqa: F401  (installs the safe loaders)
from nfnets_mm.converters import CheckpointDownloadError
from nfnets_mm.models.backbones import NFNet
from nfnets_mm.utils import CorruptCheckpointError, UnsafeCheckpointError, safe_load
from nfnets_mm.utils import checkpoint_schemes, safe_checkpoint
from conftest import free_port
from test_checkpoint_resume import (TINY_ARCH, StatsPayload, _assert_same, _cfg,  # noqa: F401
                                    data_root)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class _Payload:
    """Unpickling this creates ``marker``: proof that the checkpoint's code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


@pytest.fixture(scope='module')
def real_ckpt(data_root, tmp_path_factory):  # noqa: F811
    """A real MMEngine Runner checkpoint (HistoryBuffers, NumPy scalars ...)."""
    work = str(tmp_path_factory.mktemp('remote_run'))
    Runner.from_cfg(Config(_cfg(data_root, work, 2))).train()
    path = osp.join(work, 'iter_2.pth')
    with open(path, 'rb') as f:
        return dict(path=path, data=f.read(), ckpt=safe_load(path))


@pytest.fixture
def evil(real_ckpt, tmp_path):
    """``(bytes of a malicious checkpoint, marker its payload would create)``."""
    marker = tmp_path / 'pwned'
    meta = dict(real_ckpt['ckpt']['meta'], note=_Payload(str(marker)))
    ckpt = dict(real_ckpt['ckpt'], meta=meta)
    path = tmp_path / 'evil_source.pth'
    torch.save(ckpt, str(path))
    return path.read_bytes(), marker


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10

    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server:
    """The test's HTTP server: ``serve(name, data)`` returns the URL of ``/name``;
    ``requests`` lists the paths requested so far."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.requests = {}, []
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()

    @property
    def requests(self):
        return self.httpd.requests

    def serve(self, name, data):
        self.httpd.files[f'/ckpt/{name}'] = data
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/ckpt/{name}'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server, and the torch.hub cache in ``tmp_path/hub``."""
    for var in ('http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    srv = _Server()
    yield srv
    srv.close()


def _cache(tmp_path, name):
    return tmp_path / 'hub' / 'checkpoints' / name


def _assert_is_real_ckpt(loaded, real_ckpt):
    _assert_same(loaded['state_dict'], real_ckpt['ckpt']['state_dict'], 'state_dict')
    _assert_same(loaded['optimizer'], real_ckpt['ckpt']['optimizer'], 'optimizer')
    assert loaded['meta']['iter'] == 2


def _load_with_runner(url, data_root, tmp_path):  # noqa: F811
    runner = Runner(**_cfg(data_root, str(tmp_path / 'run'), 1), load_from=url)
    runner.load_or_resume()
    return runner


ENTRY_POINTS = {
    'CheckpointLoader': lambda url, **_: CheckpointLoader.load_checkpoint(
        url, map_location='cpu'),
    'load_checkpoint': lambda url, **_: load_checkpoint(
        NFNet(arch=TINY_ARCH), url, map_location='cpu'),
    'mmengine load_from_http': lambda url, **_: mmengine_checkpoint.load_from_http(url),
    'Runner(load_from=)': lambda url, data_root, tmp_path: _load_with_runner(  # noqa: F811
        url, data_root, tmp_path),
    'init_cfg Pretrained': lambda url, **_: NFNet(
        arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=url)).init_weights(),
}


@pytest.mark.parametrize('entry', list(ENTRY_POINTS))
def test_http_malicious_checkpoint_is_refused(entry, server, evil, data_root,  # noqa: F811
                                              tmp_path):
    data, marker = evil
    url = server.serve('evil.pth', data)
    with pytest.raises(UnsafeCheckpointError) as info:
        ENTRY_POINTS[entry](url, data_root=data_root, tmp_path=tmp_path)
    message = str(info.value)
    assert url in message and 'allowlist' in message and 'exec' in message
    assert str(_cache(tmp_path, 'evil.pth')) in message
    assert not marker.exists()
    assert server.requests == ['/ckpt/evil.pth']  # really downloaded, then refused


def test_http_real_checkpoint_loads_and_is_cached(server, real_ckpt, data_root,  # noqa: F811
                                                  tmp_path):
    url = server.serve('good.pth', real_ckpt['data'])
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint(url, map_location='cpu'),
                         real_ckpt)
    assert _cache(tmp_path, 'good.pth').read_bytes() == real_ckpt['data']
    runner = _load_with_runner(url, data_root, tmp_path)
    _assert_same(runner.model.state_dict(), real_ckpt['ckpt']['state_dict'], 'runner')
    assert server.requests == ['/ckpt/good.pth']  # the second load came from the cache


@pytest.fixture
def zoo(server, real_ckpt, evil, monkeypatch, tmp_path):
    """MMEngine's name tables map ``nf_good``/``nf_evil`` to the test server (and
    ``nf_local_*`` to files under a fake MMEngine home); ``nf_old`` is deprecated in
    favour of ``nf_good``."""
    urls = dict(nf_good=server.serve('zoo_good.pth', real_ckpt['data']),
                nf_evil=server.serve('zoo_evil.pth', evil[0]))
    home = tmp_path / 'mmengine_home'
    (home / 'nf').mkdir(parents=True)
    (home / 'nf' / 'good.pth').write_bytes(real_ckpt['data'])
    (home / 'nf' / 'evil.pth').write_bytes(evil[0])
    external = dict(urls, nf_local_good='nf/good.pth', nf_local_evil='nf/evil.pth')
    monkeypatch.setattr(mmengine_checkpoint, '_get_mmengine_home', lambda: str(home))
    monkeypatch.setattr(mmengine_checkpoint, 'get_external_models', lambda: dict(external))
    monkeypatch.setattr(mmengine_checkpoint, 'get_deprecated_model_names',
                        lambda: dict(nf_old='nf_good'))
    monkeypatch.setattr(mmengine_checkpoint, 'get_mmcls_models', lambda: dict(urls))
    monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models', lambda: dict(urls))
    return dict(urls, home=home, marker=evil[1])


@pytest.mark.parametrize('prefix', ['open-mmlab://', 'openmmlab://', 'mmcls://',
                                    'torchvision://', 'modelzoo://'])
def test_model_zoo_schemes_are_safe(prefix, zoo, real_ckpt):
    with pytest.raises(UnsafeCheckpointError) as info:
        CheckpointLoader.load_checkpoint(f'{prefix}nf_evil', map_location='cpu')
    assert zoo['nf_evil'] in str(info.value)
    assert not zoo['marker'].exists()

    loaded = CheckpointLoader.load_checkpoint(f'{prefix}nf_good', map_location='cpu')
    if prefix == 'mmcls://':  # MMEngine's _process_mmcls_checkpoint: the backbone only
        expected = {k[len('backbone.'):]: v
                    for k, v in real_ckpt['ckpt']['state_dict'].items()
                    if k.startswith('backbone.')}
        assert expected and set(loaded) == {'state_dict'}
        _assert_same(loaded['state_dict'], expected)
    else:
        _assert_is_real_ckpt(loaded, real_ckpt)


def test_open_mmlab_deprecated_and_local_entries_are_safe(zoo, real_ckpt):
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint('open-mmlab://nf_old'), real_ckpt)
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint('open-mmlab://nf_local_good'),
                         real_ckpt)
    with pytest.raises(UnsafeCheckpointError) as info:
        CheckpointLoader.load_checkpoint('openmmlab://nf_local_evil')
    assert str(zoo['home'] / 'nf' / 'evil.pth') in str(info.value)
    assert not zoo['marker'].exists()


def test_mmengine_module_loaders_are_replaced():
    for name in ('load_from_local', 'load_from_http', 'load_from_openmmlab',
                 'load_from_mmcls', 'load_from_torchvision', 'load_from_pavi',
                 'load_from_ceph'):
        assert getattr(getattr(mmengine_checkpoint, name), '_nfnets_mm_safe', False), name
    for path in ('pavi://x', 's3://bucket/x', 'open-mmlab:s3://bucket/x', 'petrel://x'):
        assert CheckpointLoader._get_checkpoint_loader(path)._nfnets_mm_safe, path


def _unsafe_loader(files, explicit_false):
    """A third-party scheme loader that unpickles with torch.load, unsafely."""

    def load_from_nfnetstest(filename, map_location=None):
        path = files[filename]
        if explicit_false:
            return torch.load(path, map_location=map_location, weights_only=False)
        return torch.load(path, map_location=map_location)  # like MMEngine's pavi/ceph

    return load_from_nfnetstest


@pytest.mark.parametrize('explicit_false', [True, False])
def test_scheme_registered_later_is_forced_weights_only(explicit_false, real_ckpt, evil,
                                                        tmp_path, monkeypatch):
    data, marker = evil
    (tmp_path / 'evil.pth').write_bytes(data)
    files = {'nfnetstest://good': real_ckpt['path'], 'nfnetstest://evil':
             str(tmp_path / 'evil.pth')}
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', raising=False)
    # registered after nfnets_mm was imported, without any call into nfnets_mm
    CheckpointLoader.register_scheme('nfnetstest://', _unsafe_loader(files, explicit_false))
    try:
        with pytest.raises(UnsafeCheckpointError, match='nfnetstest://evil'):
            load_checkpoint(NFNet(arch=TINY_ARCH), 'nfnetstest://evil', map_location='cpu')
        assert not marker.exists()
        _assert_is_real_ckpt(CheckpointLoader.load_checkpoint('nfnetstest://good'),
                             real_ckpt)
    finally:
        CheckpointLoader._schemes.pop('nfnetstest://', None)
    # the environment is restored
    assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ


def test_env_var_cannot_disable_weights_only(server, evil, real_ckpt, tmp_path,
                                             monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    data, marker = evil
    local = tmp_path / 'evil_local.pth'
    local.write_bytes(data)
    for path in (str(local), server.serve('evil.pth', data)):
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint(NFNet(arch=TINY_ARCH), path, map_location='cpu')
        assert not marker.exists()
    _assert_is_real_ckpt(
        CheckpointLoader.load_checkpoint(server.serve('good.pth', real_ckpt['data'])),
        real_ckpt)


def _damaged(kind, data):
    return {'empty': b'', 'truncated': data[:len(data) // 2],
            'text': b'<html><body>404 Not Found</body></html>\n'}[kind]


@pytest.mark.parametrize('kind,phrase', [('empty', 'empty'), ('truncated', 'truncated'),
                                         ('text', 'not a PyTorch checkpoint')])
def test_http_damaged_download_is_explained(kind, phrase, server, real_ckpt, tmp_path):
    data = _damaged(kind, real_ckpt['data'])
    url = server.serve('damaged.pth', data)
    cached = _cache(tmp_path, 'damaged.pth')
    with pytest.raises(CorruptCheckpointError) as info:
        CheckpointLoader.load_checkpoint(url, map_location='cpu')
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert url in message and phrase in message and f', {len(data)} bytes)' in message
    assert f'Delete the cached file {cached}' in message
    # following the advice works
    cached.unlink()
    server.serve('damaged.pth', real_ckpt['data'])
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint(url), real_ckpt)


def test_sha256_prefix_in_file_name_is_checked(server, real_ckpt, tmp_path):
    digest = hashlib.sha256(real_ckpt['data']).hexdigest()
    good = server.serve(f'nf-{digest[:8]}.pth', real_ckpt['data'])
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint(good), real_ckpt)
    # short hex parts such as "-f0" are names, not hashes
    _assert_is_real_ckpt(
        CheckpointLoader.load_checkpoint(server.serve('nfnet-f0.pth', real_ckpt['data'])),
        real_ckpt)

    wrong = 'f' * 8 if not digest.startswith('f' * 8) else '0' * 8
    bad = server.serve(f'nf-{wrong}.pth', real_ckpt['data'])
    with pytest.raises(RuntimeError, match='SHA256') as info:
        CheckpointLoader.load_checkpoint(bad)
    assert bad in str(info.value)
    assert sorted(os.listdir(tmp_path / 'hub' / 'checkpoints')) == sorted(
        [f'nf-{digest[:8]}.pth', 'nfnet-f0.pth'])  # nothing kept, not even a .partial


def _fake_ranks(monkeypatch, rank, server, received=None, other=None):
    """Pretend to be ``rank`` of 2; the broadcast of rank 0's outcome records the
    number of requests made so far and what rank 0 sends, and gives the other ranks
    ``received``; the final gather of every rank's outcome records ``('gather', what
    this rank sends)`` and gives the other rank's outcome as ``other``."""
    sent = []

    def all_gather_object(data, group=None):
        sent.append(('gather', data))
        gathered = [other, other]
        gathered[rank] = data
        return gathered

    def broadcast_object_list(data, src=0, group=None):
        assert src == 0 and len(data) == 1
        sent.append((len(server.requests), data[0]))
        if rank > 0:
            data[0] = received

    monkeypatch.setattr(checkpoint_schemes, 'get_dist_info', lambda: (rank, 2))
    monkeypatch.setattr(checkpoint_schemes, 'broadcast_object_list', broadcast_object_list)
    monkeypatch.setattr(checkpoint_schemes, 'all_gather_object', all_gather_object)
    return sent


@pytest.mark.parametrize('rank', [0, 1])
def test_distributed_rank_0_downloads_first(rank, server, real_ckpt, monkeypatch):
    url = server.serve('good.pth', real_ckpt['data'])
    sent = _fake_ranks(monkeypatch, rank, server)
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint(url), real_ckpt)
    # rank 0 has downloaded when it sends its outcome; the others wait for it there
    assert sent == [(1 if rank == 0 else 0, None), ('gather', None)]
    assert server.requests == ['/ckpt/good.pth']


def test_distributed_rank_0_shares_its_error(server, monkeypatch):
    """Rank 0's error reaches the other ranks (which then download nothing) as the
    same class and message, or for other classes as the nearest shared one."""
    url = server.serve('gone.pth', None)  # 404
    sent = _fake_ranks(monkeypatch, 0, server)
    with pytest.raises(CheckpointDownloadError) as info:
        CheckpointLoader.load_checkpoint(url)
    assert str(info.value).startswith(f'Cannot download {url}: HTTP Error 404: Not Found.')
    assert sent == [(1, ['CheckpointDownloadError', str(info.value)])]
    assert isinstance(info.value, OSError)

    server.requests.clear()
    for outcome in (['UnsafeCheckpointError', f'Refusing to load checkpoint {url}'],
                    ['CorruptCheckpointError', 'Cannot load checkpoint'],
                    ['RuntimeError', 'does not match the SHA256 prefix'],
                    ['OSError', 'HTTPError: HTTP Error 404: Not Found'],
                    sent[0][1]):
        _fake_ranks(monkeypatch, 1, server, received=outcome)
        with pytest.raises(Exception) as info:
            CheckpointLoader.load_checkpoint(url)
        assert type(info.value).__name__ == outcome[0]
        assert str(info.value) == f'rank 0 failed to load {url}: {outcome[1]}'
    assert server.requests == []


def test_distributed_other_rank_failing_alone_fails_every_rank(server, real_ckpt,
                                                              tmp_path, monkeypatch):
    """A rank that fails after rank 0 succeeded (its own download, a damaged cache
    copy) shares its error, so every rank raises instead of waiting for it at the
    next collective."""
    url = server.serve('good.pth', real_ckpt['data'])
    error = ['CorruptCheckpointError', 'Cannot load checkpoint /other/cache/good.pth']
    sent = _fake_ranks(monkeypatch, 0, server, other=error)
    with pytest.raises(CorruptCheckpointError) as info:
        CheckpointLoader.load_checkpoint(url)
    assert str(info.value) == f'rank 1 failed to load {url}: {error[1]}'
    assert sent == [(1, None), ('gather', None)]

    # rank 1 whose cache copy is damaged: raises its own error after sharing it
    _cache(tmp_path, 'good.pth').write_bytes(b'not a checkpoint')
    server.requests.clear()
    sent = _fake_ranks(monkeypatch, 1, server)
    with pytest.raises(CorruptCheckpointError) as info:
        CheckpointLoader.load_checkpoint(url)
    assert sent == [(0, None), ('gather', ['CorruptCheckpointError', str(info.value)])]
    assert server.requests == []


def test_scheme_loaders_still_importable_from_safe_checkpoint():
    from nfnets_mm.utils.safe_checkpoint import (  # noqa: F401
        load_from_http_safe, load_from_local_safe, load_from_mmcls_safe,
        load_from_openmmlab_safe, load_from_torchvision_safe, make_safe_loader,
        secure_registered_schemes)
    for name in checkpoint_schemes.__all__:
        assert getattr(safe_checkpoint, name) is getattr(checkpoint_schemes, name), name
    with pytest.raises(AttributeError):
        safe_checkpoint.no_such_name


def test_hash_like_date_in_file_name_is_not_a_hash(server, real_ckpt, tmp_path):
    """A bare all-digit part is a name (a date), not a SHA256 prefix ..."""
    for name in ('nfnet_f0-20230101.pth', 'nfnet_f0-12345678.pth'):
        _assert_is_real_ckpt(
            CheckpointLoader.load_checkpoint(server.serve(name, real_ckpt['data'])),
            real_ckpt)
        assert _cache(tmp_path, name).read_bytes() == real_ckpt['data']


def test_all_digit_hash_after_a_date_is_checked(server, real_ckpt, tmp_path):
    """... but after ``_<YYYYMMDD>`` (OpenMMLab's ``<name>_<date>-<hash>.pth``) the
    final part is a SHA256 prefix whatever its digits."""
    digest = hashlib.sha256(real_ckpt['data']).hexdigest()
    wrong = '12345678' if not digest.startswith('12345678') else '87654321'
    name = f'nfnet_f0_20210831-{wrong}.pth'
    with pytest.raises(RuntimeError, match='SHA256'):
        CheckpointLoader.load_checkpoint(server.serve(name, real_ckpt['data']))
    assert not _cache(tmp_path, name).exists()
    assert checkpoint_schemes._hash_prefix(name) == wrong
    assert checkpoint_schemes._hash_prefix('x_20210831-ea4938fc.pth') == 'ea4938fc'
    assert checkpoint_schemes._hash_prefix('resnet50-0676ba61.pth') == '0676ba61'
    for plain in ('x-20230101.pth', 'x_2021083-12345678.pth', 'nfnet-f0.pth', 'x.pth'):
        assert checkpoint_schemes._hash_prefix(plain) is None, plain


def test_sha256_mismatch_says_how_to_load_a_trusted_file(server, real_ckpt, tmp_path):
    digest = hashlib.sha256(real_ckpt['data']).hexdigest()
    wrong = 'ea4938fc' if not digest.startswith('ea4938fc') else 'fc4938ea'
    name = f'nfnet_f0_20210831-{wrong}.pth'
    url = server.serve(name, real_ckpt['data'])
    with pytest.raises(RuntimeError, match='SHA256') as info:
        CheckpointLoader.load_checkpoint(url)
    message = str(info.value)
    cached = _cache(tmp_path, name)
    assert url in message and str(cached) in message and 'local path' in message
    assert not cached.exists()
    # following the advice works: a file placed at the cache path is not re-hashed
    cached.write_bytes(real_ckpt['data'])
    _assert_is_real_ckpt(CheckpointLoader.load_checkpoint(url), real_ckpt)
    assert server.requests == [f'/ckpt/{name}']


# ----------------------------------------------------------------------------
# threads: PyTorch's safe-globals list and HistoryBuffer's registry are process-wide
# ----------------------------------------------------------------------------
def _history_ckpt(path):
    """A small checkpoint whose loading needs the allowlist (a HistoryBuffer)."""
    torch.save({'message_hub': {'log_scalars': {'x': HistoryBuffer([1.0, 2.0], [1, 1])}}},
               str(path))
    return str(path)


def _assert_history_ckpt(loaded):
    assert isinstance(loaded, dict), loaded
    buffer = loaded['message_hub']['log_scalars']['x']
    assert isinstance(buffer, HistoryBuffer) and buffer.mean() == 1.5


class _GatedFile(io.BytesIO):
    """A checkpoint in memory whose first read sets ``entered`` and waits for ``gate``."""

    def __init__(self, data):
        super().__init__(data)
        self.entered, self.gate = threading.Event(), threading.Event()

    def read(self, *args):
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(30)
        return super().read(*args)


def _in_thread(results, key, fn):
    def run():
        try:
            results[key] = fn()
        except BaseException as e:  # noqa: B902  (reported by the test)
            results[key] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_overlapping_loads_in_two_threads(tmp_path):
    """Thread B starts loading while thread A is inside its load; A finishes first.
    The allowlist A added must not vanish under B (B would be refused)."""
    data = open(_history_ckpt(tmp_path / 'hb.pth'), 'rb').read()
    first, second = _GatedFile(data), _GatedFile(data)
    results = {}
    thread_a = _in_thread(results, 'a', lambda: safe_load(first))
    assert first.entered.wait(30)  # A is loading
    thread_b = _in_thread(results, 'b', lambda: safe_load(second))
    second.entered.wait(1)  # B gets this far only if loads may overlap
    first.gate.set()
    thread_a.join(30)
    second.gate.set()
    thread_b.join(30)
    assert not thread_a.is_alive() and not thread_b.is_alive()
    _assert_history_ckpt(results['a'])
    _assert_history_ckpt(results['b'])


def _unsafe_torch_load(path, map_location=None):
    return torch.load(path, map_location=map_location, weights_only=False)


@pytest.fixture
def fast_thread_switching():
    """Switch threads every 10 us (not 5 ms), so that races show up in few loads."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def test_concurrent_loads_are_thread_safe(tmp_path, monkeypatch, fast_thread_switching):
    """4 threads x 12 loads at once: good files (safe_load and a wrapped third-party
    scheme loader) all load, statistics-method injections are all refused, and
    nothing global is left changed."""
    good = _history_ckpt(tmp_path / 'hb.pth')
    inject = str(tmp_path / 'inject.pth')
    torch.save({'message_hub': {'log_scalars': {'x': StatsPayload(mean=np.dtype)}}}, inject)
    wrapped = safe_checkpoint.make_safe_loader(_unsafe_torch_load)
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', raising=False)
    HistoryBuffer()
    stats_before = dict(HistoryBuffer._statistics_methods)
    globals_before = set(torch.serialization.get_safe_globals())
    start = threading.Barrier(4)
    failures = []

    def worker(index):
        start.wait(30)
        for i in range(12):
            kind = (index + i) % 3
            try:
                if kind == 0:
                    _assert_history_ckpt(safe_load(good))
                elif kind == 1:
                    _assert_history_ckpt(wrapped(good))
                else:
                    with pytest.raises(UnsafeCheckpointError, match='statistics'):
                        safe_load(inject)
            except BaseException as e:  # noqa: B902  (collected for the assertion)
                failures.append(f'{kind}: {type(e).__name__}: {str(e)[:300]}')

    threads = [threading.Thread(target=worker, args=(n, ), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, f'{len(failures)} of 48 loads failed: {failures[:5]}'
    assert HistoryBuffer._statistics_methods == stats_before
    assert set(torch.serialization.get_safe_globals()) == globals_before
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ


# ----------------------------------------------------------------------------
# two real CPU ranks (gloo)
# ----------------------------------------------------------------------------
#: One rank: load each URL with CheckpointLoader and report; then wait for the other
#: rank's report, as a rank does that a launcher (slurm, mpirun) does not kill.
RANK_SCRIPT = """\
import datetime, gc, json, os, sys, time
import torch.distributed as dist
import nfnets_mm  # noqa: F401
from mmengine.runner import CheckpointLoader

out, urls = sys.argv[1], sys.argv[2:]
rank = int(os.environ['RANK'])
dist.init_process_group('gloo', rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds={timeout}))
results = []
for url in urls:
    start = time.time()
    try:
        ckpt = CheckpointLoader.load_checkpoint(url, map_location='cpu')
        results.append(dict(error=None, iter=ckpt['meta']['iter']))
    except Exception as e:
        results.append(dict(error=type(e).__name__, message=str(e)))
    results[-1]['seconds'] = time.time() - start
with open(os.path.join(out, f'rank{{rank}}.json'), 'w') as f:
    json.dump(results, f)
deadline = time.time() + {linger}
while time.time() < deadline and not all(
        os.path.exists(os.path.join(out, f'rank{{r}}.json')) for r in (0, 1)):
    time.sleep(0.1)
# Free the group (and its gloo threads) before interpreter teardown, as the tools do.
dist.destroy_process_group()
gc.collect()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed')
def test_two_ranks_refused_download_raises_on_every_rank(server, real_ckpt, evil,
                                                         tmp_path):
    """Rank 0 refuses the malicious download; rank 1 raises the same error at once
    instead of waiting for rank 0 at a barrier until the process group times out.
    A good checkpoint before it loads on both ranks, downloaded once."""
    data, marker = evil
    good_url = server.serve('good.pth', real_ckpt['data'])
    evil_url = server.serve('evil.pth', data)
    timeout = 30
    script = tmp_path / 'rank.py'
    script.write_text(RANK_SCRIPT.format(timeout=timeout, linger=2 * timeout))
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ('http_proxy', 'https_proxy', 'all_proxy')}
    env.update(no_proxy='127.0.0.1,localhost', TORCH_HOME=str(tmp_path / 'torch'),
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()), WORLD_SIZE='2',
               OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
                   [REPO, env.get('PYTHONPATH', '')]))
    procs = [subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), good_url, evil_url],
        env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        logs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f'rank {rank}:\n{log[-4000:]}'
    good, bad = zip(*(json.loads((tmp_path / f'rank{r}.json').read_text())
                      for r in (0, 1)))
    for rank in (0, 1):
        assert good[rank]['error'] is None and good[rank]['iter'] == 2, good[rank]
        # not a RuntimeError after waiting for rank 0 until the process group timed out
        assert bad[rank]['error'] == 'UnsafeCheckpointError', bad[rank]
    assert bad[1]['message'] == f'rank 0 failed to load {evil_url}: {bad[0]["message"]}'
    assert evil_url in bad[1]['message'] and 'exec' in bad[1]['message']
    assert not marker.exists()
    assert server.requests == ['/ckpt/good.pth', '/ckpt/evil.pth']  # by rank 0 only
