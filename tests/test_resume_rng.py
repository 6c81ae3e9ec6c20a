"""A killed and resumed run ends with the same weights as an uninterrupted one.

With random augmentation (RandomResizedCrop, RandomFlip: NumPy's global generator) and
a model that draws from torch's generator (stochastic depth, dropout), MMEngine's resume
re-seeds instead of restoring the generators; ``RNGStateHook`` saves and restores them.

* epoch loop, through ``tools/train.py``: the demo config on 16 images, a checkpoint and
  a validation every epoch; one run straight through, one killed with SIGKILL once the
  epoch-1 checkpoint is complete and resumed from it (explicit ``--resume <path>``).
  Without the hook the same kill and resume ends with other weights (the control shares
  the uninterrupted run).  Also on 2 CPU ranks (torchrun, gloo) with different seeds per
  rank: each rank must get its own states back.
* iteration loop, in process: ``InfiniteSampler``, checkpoint at iteration 2 of 4,
  validation at 2 (it draws from torch's generator between the checkpoint and the next
  batch), an exception after the checkpoint, resume.  Without the hook the weights
  differ (the same scenario is checked both ways).
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import nfnets_mm  # noqa: F401  (registers NFNet, AGC wrappers, hooks, safe loader)
from nfnets_mm.engine.hooks import RNGStateHook
from nfnets_mm.engine.hooks import rng_state_hook
from nfnets_mm.engine.hooks.rng_state_hook import CHECKPOINT_KEY
from demo_data import ensure_demo_data  # tools/data/demo_data.py (conftest puts it on sys.path)
from nfnets_mm.utils.safe_checkpoint import safe_load
# tests/ is on sys.path (as for conftest)
from conftest import free_port, record_calls
from tiny_runner_cfg import make_tiny_data, tiny_runner_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO, 'tools', 'train.py')
DEMO_CFG = osp.join(REPO, 'configs', 'nfnet', 'nfnet_demo.py')
MAX_EPOCHS = 3
KILL_AFTER_EPOCH = 1


def _assert_state_dicts_equal(a, b, where):
    assert list(a) == list(b), f'{where}: different keys'
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{where}: {len(differ)}/{len(a)} tensors differ, e.g. {differ[:3]}'


def _assert_rng_entry(ckpt):
    rng = ckpt[CHECKPOINT_KEY]
    assert rng['world_size'] == 1 and len(rng['ranks']) == 1
    states = rng['ranks'][0]
    assert isinstance(states['torch'], torch.Tensor) and states['torch'].dtype == torch.uint8
    assert states['numpy'][0] == 'MT19937' and states['numpy'][1].shape == (624, )
    assert isinstance(states['python'], tuple) and len(states['python'][1]) == 625


def _draws():
    import random

    import numpy as np
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.rand(3, device='cuda').tolist() if torch.cuda.is_available() else 0)


def test_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    from nfnets_mm.engine.hooks import get_rng_states, set_rng_states
    states = get_rng_states()
    expected = _draws()
    path = str(tmp_path / 'rng.pth')
    torch.save({CHECKPOINT_KEY: dict(ranks=[states])}, path)
    loaded = safe_load(path, map_location='cuda' if torch.cuda.is_available() else 'cpu')
    _draws()
    assert set_rng_states(loaded[CHECKPOINT_KEY]['ranks'][0]) == []
    assert _draws() == expected


# ----------------------------------------------------------------------------
# epoch loop: tools/train.py, kill -9, --resume <path>
# ----------------------------------------------------------------------------
def _write_demo_cfg(path, data_root, rng_hook=True, diff_rank_seed=False):
    """The demo config on 16 training / 8 validation images, 3 epochs of 2 iterations
    (1 per rank on 2 ranks), checkpoint + validation every epoch, stochastic depth and
    dropout switched on."""
    hooks = "dict(type='NFRNGStateHook')" if rng_hook else ''
    with open(path, 'w') as f:
        f.write(f"""
_base_ = [{DEMO_CFG!r}]
data_root = {data_root!r}
model = dict(backbone=dict(drop_path_rate=0.2), head=dict(dropout_rate=0.2))
train_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root, indices=16))
val_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root, indices=8))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={MAX_EPOCHS}, val_interval=1)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=-1))
custom_hooks = [{hooks}]
randomness = dict(seed=0, deterministic=True, diff_rank_seed={diff_rank_seed})
""")
    return path


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONHASHSEED='0')
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    return env


def _train(cfg, work_dir, *extra, log_name='train.log', ranks=1):
    """tools/train.py in its own session (so SIGKILL reaches torchrun's workers too)."""
    os.makedirs(work_dir, exist_ok=True)
    cmd = [sys.executable, TRAIN, cfg, '--work-dir', work_dir, *extra]
    if ranks > 1:
        cmd[1:2] = ['-m', 'torch.distributed.run', f'--nproc_per_node={ranks}',
                    '--master_addr=127.0.0.1', f'--master_port={free_port()}', TRAIN]
        cmd += ['--launcher', 'pytorch']
    with open(osp.join(work_dir, log_name), 'w') as log:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc, work_dir, log_name='train.log', timeout=300):
    rc = proc.wait(timeout=timeout)
    with open(osp.join(work_dir, log_name)) as f:
        log = f.read()
    assert rc == 0, f'tools/train.py failed ({rc}):\n{log[-4000:]}'
    return log


def _kill_after_checkpoint(proc, work_dir, epoch, timeout=300):
    """SIGKILL ``proc`` as soon as ``last_checkpoint`` names ``epoch_<epoch>.pth`` or a
    later one (CheckpointHook writes it after the checkpoint file is complete)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, 'the run ended before it could be killed'
        if osp.isfile(pointer):
            with open(pointer) as f:
                name = osp.basename(f.read().strip())
            if name.startswith('epoch_') and int(name[6:-4]) >= epoch:
                os.killpg(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=60) == -signal.SIGKILL
                return name
        time.sleep(0.02)
    proc.kill()
    raise AssertionError('no checkpoint appeared in time')


@pytest.fixture(scope='module')
def demo_root():
    ensure_demo_data(osp.join(REPO, 'data', 'demo'))
    return osp.join(REPO, 'data', 'demo', 'cls')


def test_every_training_config_uses_the_hook():
    """Demo, ImageNet, fine-tuning and Mask R-CNN configs: the hook once, and every
    custom hook builds from the config's scope."""
    import glob
    from mmengine.registry import HOOKS, DefaultScope
    training = []
    for path in sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)):
        if '_base_' in path:
            continue
        cfg = Config.fromfile(path)
        if cfg.get('train_cfg') is None:  # test-only configs (dm_weights)
            continue
        training.append(osp.relpath(path, REPO))
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            hooks = [HOOKS.build(dict(h)) for h in cfg.custom_hooks]
        assert [type(h) for h in hooks].count(RNGStateHook) == 1, path
    assert {'configs/nfnet/nfnet_demo.py', 'configs/nfnet/f0_imagenet.py',
            'configs/nfnet/f0_finetune_imagenet.py',
            'configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_1x_coco.py'} <= set(training)


class _Run:
    """tools/train.py started in the background, to run side by side with another."""

    def __init__(self, cfg, work_dir, ranks=1):
        self.work_dir = work_dir
        self.proc = _train(cfg, work_dir, ranks=ranks)
        self.finished = False

    def state_dict(self, epoch=MAX_EPOCHS):
        """The weights of the epoch-``epoch`` checkpoint, once the run has finished."""
        if not self.finished:
            _finish(self.proc, self.work_dir)
            self.finished = True
        return safe_load(osp.join(self.work_dir, f'epoch_{epoch}.pth'))['state_dict']

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


@pytest.fixture(scope='module')
def straight_run(demo_root, tmp_path_factory):
    """The uninterrupted single-process run (with the hook), started at once and shared
    by the kill / resume test and its without-the-hook control."""
    root = tmp_path_factory.mktemp('epoch_straight')
    run = _Run(_write_demo_cfg(str(root / 'demo_resume.py'), demo_root),
               str(root / 'work'))
    yield run
    run.stop()


def _kill_and_resume(cfg, work_dir, ranks=1):
    """Runs ``cfg``, kills it with SIGKILL once the epoch-1 checkpoint is complete and
    resumes it from that checkpoint (``--resume <path>``) to the end; returns the resume
    log and the epoch-1 checkpoint."""
    killed_at = _kill_after_checkpoint(_train(cfg, work_dir, ranks=ranks), work_dir,
                                       KILL_AFTER_EPOCH)
    ckpt = osp.join(work_dir, f'epoch_{KILL_AFTER_EPOCH}.pth')
    # keep only what a run killed right after epoch k would have left
    for name in os.listdir(work_dir):
        if name.startswith('epoch_') and int(name[6:-4]) > KILL_AFTER_EPOCH:
            os.remove(osp.join(work_dir, name))
    assert not osp.exists(osp.join(work_dir, f'epoch_{MAX_EPOCHS}.pth')), killed_at

    log = _finish(_train(cfg, work_dir, '--resume', ckpt, log_name='resume.log',
                         ranks=ranks), work_dir, log_name='resume.log')
    assert f'resumed epoch: {KILL_AFTER_EPOCH}' in log
    return log, safe_load(ckpt)


def _final_state_dict(work_dir):
    return safe_load(osp.join(work_dir, f'epoch_{MAX_EPOCHS}.pth'))['state_dict']


def test_killed_and_resumed_run_matches_uninterrupted_run(straight_run, demo_root,
                                                          tmp_path):
    cfg = _write_demo_cfg(str(tmp_path / 'demo_resume.py'), demo_root)
    killed_dir = str(tmp_path / 'killed')
    log, ckpt = _kill_and_resume(cfg, killed_dir)
    assert 'RNGStateHook: restored the random number generator states' in log
    _assert_rng_entry(ckpt)
    _assert_state_dicts_equal(straight_run.state_dict(), _final_state_dict(killed_dir),
                              'uninterrupted vs killed after epoch 1 and resumed')


def test_killed_and_resumed_run_differs_without_the_hook(straight_run, demo_root,
                                                         tmp_path):
    """The control: without the hook the same kill and resume ends with other weights,
    so the test above does depend on the restored generator states.  The uninterrupted
    run (with the hook) is the reference for both: until the kill, the run without the
    hook matches it bit for bit (the hook only reads the generators)."""
    cfg = _write_demo_cfg(str(tmp_path / 'demo_no_hook.py'), demo_root, rng_hook=False)
    killed_dir = str(tmp_path / 'killed')
    log, ckpt = _kill_and_resume(cfg, killed_dir)
    assert 'RNGStateHook' not in log and CHECKPOINT_KEY not in ckpt
    _assert_state_dicts_equal(straight_run.state_dict(KILL_AFTER_EPOCH),
                              ckpt['state_dict'],
                              f'with vs without the hook, epoch {KILL_AFTER_EPOCH}')
    a, b = straight_run.state_dict(), _final_state_dict(killed_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a), \
        'resumed without the hook, yet the same weights as the uninterrupted run'


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) path')
def test_two_ranks_killed_and_resumed_run_matches_uninterrupted_run(demo_root, tmp_path):
    cfg = _write_demo_cfg(str(tmp_path / 'demo_resume.py'), demo_root, diff_rank_seed=True)
    straight = _Run(cfg, str(tmp_path / 'straight'), ranks=2)
    try:
        killed_dir = str(tmp_path / 'killed')
        log, ckpt = _kill_and_resume(cfg, killed_dir, ranks=2)
        assert 'RNGStateHook: restored the random number generator states' in log  # rank 0
        _assert_state_dicts_equal(straight.state_dict(), _final_state_dict(killed_dir),
                                  '2 ranks: uninterrupted vs killed and resumed')
    finally:
        straight.stop()
    rng = ckpt[CHECKPOINT_KEY]
    assert rng['world_size'] == 2
    rank0, rank1 = rng['ranks']
    # the ranks' states differ, so restoring the wrong one would be caught
    assert not torch.equal(rank0['torch'], rank1['torch'])


# ----------------------------------------------------------------------------
# iteration loop, in process
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp('rng_data'))


def _iter_cfg(data_root, work_dir, rng_hook):
    """The shared tiny config (tests/tiny_runner_cfg.py) with random augmentation,
    stochastic depth, dropout and validation at the checkpoint iteration."""
    return tiny_runner_cfg(
        data_root, work_dir, 4, augment=True, drop_rate=0.3, val_interval=2,
        custom_hooks=[dict(type='NFRNGStateHook')] if rng_hook else [], deterministic=True)


class _Interrupt(Exception):
    pass


class _InterruptAfterCheckpoint(Hook):
    """Stands in for kill -9: stops the run right after the iteration-2 checkpoint."""
    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == 2:
            raise _Interrupt


def _run_iter_resume(data_root, root, rng_hook):
    straight = Runner.from_cfg(Config(_iter_cfg(data_root, str(root / 'straight'),
                                                rng_hook)))
    straight.train()

    cfg = _iter_cfg(data_root, str(root / 'killed'), rng_hook)
    cfg['custom_hooks'] = cfg['custom_hooks'] + [_InterruptAfterCheckpoint()]
    with pytest.raises(_Interrupt):
        Runner(**cfg).train()
    ckpt = str(root / 'killed' / 'iter_2.pth')

    resumed = Runner(**_iter_cfg(data_root, str(root / 'resumed'), rng_hook), resume=True,
                     load_from=ckpt)
    resumed.train()
    assert resumed.iter == 4
    a = safe_load(str(root / 'straight' / 'iter_4.pth'))['state_dict']
    b = safe_load(str(root / 'resumed' / 'iter_4.pth'))['state_dict']
    return a, b, ckpt


@pytest.fixture(scope='module')
def iter_runs(tiny_root, tmp_path_factory):
    return _run_iter_resume(tiny_root, tmp_path_factory.mktemp('iter_runs'), rng_hook=True)


def test_iter_loop_resume_matches_uninterrupted_run(iter_runs):
    a, b, ckpt = iter_runs
    _assert_rng_entry(safe_load(ckpt))
    _assert_state_dicts_equal(a, b, 'iteration loop: uninterrupted vs resumed')


def test_iter_loop_resume_differs_without_the_hook(tiny_root, tmp_path):
    """The scenario above does depend on the generators: without the hook it fails."""
    a, b, ckpt = _run_iter_resume(tiny_root, tmp_path, rng_hook=False)
    assert CHECKPOINT_KEY not in safe_load(ckpt)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_restore_follows_mmengine_reseeding(iter_runs, tiny_root, tmp_path):
    """The resumed config has another seed: ``Runner.resume`` re-seeds with the
    checkpoint's seed *after* the ``after_load_checkpoint`` hooks; the states restored
    later still win."""
    cfg = _iter_cfg(tiny_root, str(tmp_path / 'reseeded'), rng_hook=True)
    cfg['randomness'] = dict(seed=1, deterministic=True)
    runner = Runner(**cfg, resume=True, load_from=iter_runs[2])
    runner.train()
    assert runner.seed == 0  # MMEngine took the checkpoint's seed
    _assert_state_dicts_equal(iter_runs[0], runner.model.state_dict(),
                              'resumed with another config seed')


def test_checkpoint_without_rng_state_resumes_with_a_warning(iter_runs, tiny_root,
                                                             tmp_path, monkeypatch):
    old = safe_load(iter_runs[2])
    del old[CHECKPOINT_KEY]
    old_path = str(tmp_path / 'old.pth')
    torch.save(old, old_path)
    calls = record_calls(monkeypatch, rng_state_hook, 'set_rng_states')
    cfg = _iter_cfg(tiny_root, str(tmp_path / 'old_resumed'), rng_hook=True)
    cfg['log_level'] = 'INFO'
    runner = Runner(**cfg, resume=True, load_from=old_path)
    runner.train()
    assert runner.iter == 4
    # nothing to restore after the replay; the iteration-4 snapshot is never restored
    assert calls == []
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        assert 'holds no RNG states' in f.read()


def test_load_from_without_resume_does_not_restore(iter_runs, tiny_root, tmp_path,
                                                   monkeypatch):
    """Fine-tuning from a checkpoint (load_from, no resume) keeps the seeded state."""
    calls = record_calls(monkeypatch, rng_state_hook, 'set_rng_states')
    cfg = _iter_cfg(tiny_root, str(tmp_path / 'finetune'), rng_hook=True)
    cfg['train_cfg']['max_iters'] = 1
    runner = Runner(**cfg, load_from=iter_runs[2])
    runner.train()
    assert runner.iter == 1 and calls == []


def test_resume_restores_once(iter_runs, tiny_root, tmp_path, monkeypatch):
    """Resuming restores the checkpoint's states exactly once, after the replay."""
    calls = record_calls(monkeypatch, rng_state_hook, 'set_rng_states')
    cfg = _iter_cfg(tiny_root, str(tmp_path / 'again'), rng_hook=True)
    cfg['train_cfg']['max_iters'] = 3
    runner = Runner(**cfg, resume=True, load_from=iter_runs[2])
    runner.train()
    saved = safe_load(iter_runs[2])[CHECKPOINT_KEY]['ranks'][0]
    assert len(calls) == 1 and torch.equal(calls[0]['torch'].cpu(), saved['torch'])
