"""tools/test.py refuses a checkpoint that does not fit the model (issue 9.8), checking
the checkpoint the runner loads (read once) in an ``after_load_checkpoint`` hook."""
import collections
import subprocess
import sys
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from conftest import REPO_ROOT, load_test_tool, tools_on_path
from mmengine.config import Config
from mmengine.runner import CheckpointLoader
from mmpretrain.registry import MODELS

from demo_data import ensure_demo_data  # tools/data/demo_data.py (conftest puts it on sys.path)

tools_on_path()
import checkpoint_match  # noqa: E402

DEMO = osp.join(REPO_ROOT, 'configs/nfnet/nfnet_demo.py')
test_tool = load_test_tool()


def demo_model(widths=None):
    cfg = Config.fromfile(DEMO)
    if widths is not None:  # another architecture
        cfg.model.backbone.arch.widths = widths
        cfg.model.head.in_channels = 2 * widths[-1]
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def model():
    return demo_model()


@pytest.fixture(scope='module')
def demo_data():
    ensure_demo_data(osp.join(REPO_ROOT, 'data', 'demo'))


def save(path, state_dict, **extra):
    torch.save(dict(meta=dict(epoch=1), state_dict=state_dict, **extra), path)
    return str(path)


def check(model, path):
    """``check_checkpoint_matches`` on the file, loaded as the runner loads it."""
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    checkpoint_match.check_checkpoint_matches(model, checkpoint, path)


def test_matching_checkpoints_pass(model, tmp_path):
    state = model.state_dict()
    check(model, save(tmp_path / 'plain.pth', state))
    # MMEngine strips a ``module.`` prefix (DDP / averaged models) when loading.
    wrapped = OrderedDict((f'module.{k}', v) for k, v in state.items())
    check(model, save(tmp_path / 'module.pth', wrapped))
    # EMAHook / WarmupEMAHook checkpoints: averaged weights under state_dict, the raw
    # ones under ema_state_dict with the averaged model's ``module.`` prefix and steps.
    ema = OrderedDict(wrapped, steps=torch.tensor(10))
    check(model, save(tmp_path / 'ema.pth', state, ema_state_dict=ema))
    # A bare state dict (no 'state_dict' key), e.g. an exported EMA model.
    bare = tmp_path / 'bare.pth'
    torch.save(ema, bare)
    check(model, str(bare))


def test_checkpoint_of_another_architecture_is_refused(model, tmp_path):
    other = demo_model(widths=(16, 32, 64, 128)).state_dict()
    path = save(tmp_path / 'other.pth', other)
    with pytest.raises(checkpoint_match.CheckpointMismatchError) as info:
        check(model, path)
    message = str(info.value)
    assert path in message and '--allow-mismatch' in message
    assert 'of another shape, first: backbone.' in message
    assert 'head.fc.weight' not in message  # only the first few keys are listed
    assert message.count(' in the checkpoint, ') == 5


def test_checkpoint_missing_weights_is_refused(model, tmp_path):
    state = OrderedDict((k, v) for k, v in model.state_dict().items()
                        if not k.startswith('head.'))
    path = save(tmp_path / 'backbone_only.pth', state)
    with pytest.raises(checkpoint_match.CheckpointMismatchError,
                       match='2 weight.s. of the model missing from it, first: '
                       'head.fc.weight, head.fc.bias'):
        check(model, path)


def test_test_tool_refuses_another_architecture(demo_data, tmp_path):
    """Without the check test.py evaluated a random model and returned metrics."""
    path = save(tmp_path / 'other.pth', demo_model(widths=(16, 32, 64, 128)).state_dict())
    argv = [DEMO, path, '--work-dir', str(tmp_path / 'test'), '--cfg-options',
            'test_dataloader.dataset.indices=6']
    with pytest.raises(checkpoint_match.CheckpointMismatchError, match='other.pth'):
        test_tool.main(argv)
    metrics = test_tool.main(argv + ['--allow-mismatch'])
    assert 'accuracy/top1' in metrics


@pytest.fixture
def checkpoint_reads(monkeypatch):
    """How often each local file is read through MMEngine's ``CheckpointLoader`` (which
    ``Runner.load_checkpoint`` and ``mmengine.runner.load_checkpoint`` use)."""
    reads = collections.Counter()
    local = CheckpointLoader._schemes['']

    def counting_loader(filename, map_location=None, *args, **kwargs):
        reads[osp.abspath(filename)] += 1
        return local(filename, map_location, *args, **kwargs)

    monkeypatch.setitem(CheckpointLoader._schemes, '', counting_loader)
    return reads


def test_test_tool_reads_the_checkpoint_once(demo_data, tmp_path, checkpoint_reads,
                                             monkeypatch):
    """The check used to load the file itself before ``runner.test()`` loaded it again;
    now it runs in an ``after_load_checkpoint`` hook, before the weights reach the model
    and before every other such hook: EMA hooks do not change ``state_dict`` when not
    resuming, and an ``EMAHook(strict_load=True)`` would otherwise fail first with
    MMEngine's strict-load error instead of the clear one."""
    config = tmp_path / 'ema_demo.py'
    config.write_text(f'_base_ = [{DEMO!r}]\ncustom_hooks = [dict(type="EMAHook", '
                      'momentum=0.5, strict_load=True, priority="VERY_HIGH")]\n')
    runners = []
    build_runner = test_tool.build_runner
    monkeypatch.setattr(test_tool, 'build_runner',
                        lambda cfg: runners.append(build_runner(cfg)) or runners[-1])
    argv = ['--work-dir', str(tmp_path / 'test'), '--cfg-options',
            'test_dataloader.dataset.indices=6']

    good = save(tmp_path / 'good.pth', demo_model().state_dict())
    assert 'accuracy/top1' in test_tool.main([str(config), good, *argv])
    assert checkpoint_reads[good] == 1
    names = [type(hook).__name__ for hook in runners[-1].hooks]
    assert names[0] == 'CheckpointMatchHook' and 'EMAHook' in names

    other = save(tmp_path / 'other.pth', demo_model(widths=(16, 32, 64, 128)).state_dict())
    with pytest.raises(checkpoint_match.CheckpointMismatchError, match='other.pth'):
        test_tool.main([str(config), other, *argv])
    assert checkpoint_reads[other] == 1


@pytest.mark.parametrize('checkpoint,expected', [
    (None, 'dm-nfnets://F0'),  # the config's load_from: DeepMind's weights in one line
    ('dm-nfnets://F0', 'dm-nfnets://F0'),
    ('https://storage.googleapis.com/dm-nfnets/F0_haiku.npz',
     'https://storage.googleapis.com/dm-nfnets/F0_haiku.npz'),
])
def test_test_tool_evaluates_uris_and_the_configs_load_from(checkpoint, expected, monkeypatch,
                                                            tmp_path):
    """tools/test.py takes a URI (no local-file check) or, without a checkpoint, the
    config's load_from; the runner is stubbed (no download here)."""
    seen = {}

    def stop(cfg, args, scope):
        seen['load_from'] = cfg.load_from
        return {}

    monkeypatch.setattr(test_tool, 'evaluate', stop)
    monkeypatch.setattr(test_tool, 'check_annotation_files', lambda *a, **k: None)
    argv = [osp.join(REPO_ROOT, 'configs/nfnet/dm_weights/f0_imagenet.py')]
    argv += [checkpoint] if checkpoint else []
    test_tool.main(argv + ['--work-dir', str(tmp_path / 'w')])
    assert seen['load_from'] == expected


def test_test_tool_missing_local_checkpoint_says_how_to_get_it(tmp_path):
    """A missing local file: one `error:` line with the how-to, exit status 2."""
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'test.py'),
         osp.join(REPO_ROOT, 'configs/nfnet/dm_weights/f0_imagenet.py'),
         str(tmp_path / 'f0_converted.pth')],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith('error: Checkpoint') and 'dm-nfnets://F0' in proc.stderr
    assert 'Traceback' not in proc.stderr
