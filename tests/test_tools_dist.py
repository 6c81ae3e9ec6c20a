"""CPU distributed runs of tools/train.py and tools/test.py (issue 9.6): the config's
``dist_cfg`` (timeout ...) reaches ``init_process_group`` and the process group is
destroyed when the tool's ``main()`` ends, also on error."""
import datetime
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from conftest import REPO_ROOT as REPO
from conftest import free_port, load_test_tool, tools_on_path

TOOLS = tools_on_path()
import runner_utils  # noqa: E402

#: A config the tools accept without building anything (the runner is faked).
TINY_CONFIG = """\
default_scope = 'mmpretrain'
train_cfg = dict(by_epoch=True, max_epochs=1)
env_cfg = dict(dist_cfg=dict(backend='gloo', timeout={timeout}))
"""

#: Started on 2 ranks: rank 0's runner waits in a barrier rank 1 never enters.
RANK_SCRIPT = """\
import json, os, sys, time
sys.path.insert(0, {tools!r})
import torch.distributed as dist
import runner_utils
import train as train_tool

out, config, sleep_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
rank = int(os.environ['RANK'])
result = dict(rank=rank, error=None, barrier_s=None)


def gloo_threads():
    names = []
    for task in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{{task}}/comm') as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return sorted(n for n in names if 'gloo' in n)


class FakeRunner:
    def __init__(self):
        # Like a real runner: the process group reachable only through a reference
        # cycle (runner -> DDP model -> reducer -> group, hooks -> runner ...).
        self.cycle = self
        self.group = dist.group.WORLD
        result['gloo_threads_during_train'] = gloo_threads()

    def train(self):
        result['initialized_during_train'] = dist.is_initialized()
        if rank == 0:
            start = time.time()
            try:
                dist.barrier()
            finally:
                result['barrier_s'] = time.time() - start
        else:
            time.sleep(sleep_s)


def build_runner(cfg):  # as runner_utils.build_runner, without building anything
    return FakeRunner()


train_tool.build_runner = build_runner
# Start main() together, so the short timeout only hits the barrier.
open(os.path.join(out, f'ready{{rank}}'), 'w').close()
while not all(os.path.exists(os.path.join(out, f'ready{{r}}')) for r in (0, 1)):
    time.sleep(0.05)
try:
    train_tool.main([config, '--launcher', 'pytorch', '--work-dir',
                     os.path.join(out, 'work')])
except Exception as exc:  # rank 0: the barrier's timeout
    result['error'] = repr(exc)
result['initialized_after_main'] = dist.is_initialized()
result['gloo_threads_after_main'] = gloo_threads()
with open(os.path.join(out, f'rank{{rank}}.json'), 'w') as f:
    json.dump(result, f)
"""


def test_dist_init_kwargs_follow_mmengine():
    backend, kwargs = runner_utils.dist_init_kwargs(
        dict(backend='gloo', timeout=7, init_backend='torch', pg_options=None))
    assert backend == 'gloo'
    assert kwargs == dict(timeout=datetime.timedelta(seconds=7), pg_options=None)
    assert runner_utils.dist_init_kwargs({}) == ('nccl', {})
    with pytest.raises(TypeError, match='number of seconds'):
        runner_utils.dist_init_kwargs(dict(backend='gloo', timeout='30m'))
    with pytest.raises(RuntimeError, match="init_backend='deepspeed'"):
        runner_utils.dist_init_kwargs(dict(backend='gloo', init_backend='deepspeed'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) path')
def test_two_ranks_timeout_and_process_group_destroyed(tmp_path):
    """Rank 1 sleeps 20 s; rank 0's barrier fails after dist_cfg.timeout=3 s (not 30
    minutes) and both ranks leave main() without a process group."""
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG.format(timeout=3))
    script = tmp_path / 'rank.py'
    script.write_text(RANK_SCRIPT.format(tools=TOOLS))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--master_addr=127.0.0.1', f'--master_port={free_port()}', str(script),
         str(tmp_path), str(config), '20'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rank0, rank1 = (json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1))
    assert rank0['initialized_during_train'] and rank1['initialized_during_train']
    assert rank0['error'] is not None and rank0['barrier_s'] < 12, rank0
    assert rank1['error'] is None, rank1
    assert not rank0['initialized_after_main'] and not rank1['initialized_after_main']
    # The group's gloo threads end with main(), not at interpreter teardown (where a
    # joinable thread aborts the process: "terminate called without an active exception").
    assert rank1['gloo_threads_during_train'], rank1
    assert rank1['gloo_threads_after_main'] == [], rank1
    # Also on rank 0, whose main() failed: the traceback kept train()'s frame (and the
    # runner holding the group) alive until its frames were cleared.
    assert rank0['gloo_threads_during_train'], rank0
    assert rank0['gloo_threads_after_main'] == [], rank0
    assert 'terminate called' not in proc.stderr


@pytest.fixture
def single_rank_env(monkeypatch):
    """torchrun's environment for a 1-process group in this process."""
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
                           MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    yield
    if dist.is_initialized():  # only when the tool leaked it
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) path')
@pytest.mark.parametrize('fail', [False, True])
def test_test_tool_destroys_its_process_group(single_rank_env, tmp_path, monkeypatch,
                                              fail):
    test_tool = load_test_tool()
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG.format(timeout=30))
    ckpt = tmp_path / 'ckpt.pth'
    ckpt.write_bytes(b'unused')
    seen = {}

    class FakeRunner:
        model = torch.nn.Linear(1, 1)

        def test(self):
            seen['initialized'] = dist.is_initialized()
            seen['world_size'] = dist.get_world_size()
            if fail:
                raise RuntimeError('evaluation failed')
            return {'accuracy/top1': 1.0}

    def build_runner(cfg):  # as runner_utils.build_runner, without building anything
        return FakeRunner()

    monkeypatch.setattr(test_tool, 'build_runner', build_runner)
    argv = [str(config), str(ckpt), '--launcher', 'pytorch', '--allow-mismatch',
            '--work-dir', str(tmp_path / 'work')]
    if fail:
        with pytest.raises(RuntimeError, match='evaluation failed'):
            test_tool.main(argv)
    else:
        assert test_tool.main(argv) == {'accuracy/top1': 1.0}
    assert seen == dict(initialized=True, world_size=1)
    assert not dist.is_initialized()
