"""tools/test.py refuses a checkpoint that does not fit the model (issue 9.8)."""
import importlib.util
import os.path as osp
import sys
from collections import OrderedDict

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

from nfnets_mm.utils.demo_data import ensure_demo_data

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = 'configs/nfnet/nfnet_demo.py'
sys.path.insert(0, osp.join(REPO, 'tools'))
import runner_utils  # noqa: E402

_spec = importlib.util.spec_from_file_location('nfnets_test_tool',
                                               osp.join(REPO, 'tools', 'test.py'))
test_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_tool)


def demo_model(widths=None):
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    if widths is not None:  # another architecture
        cfg.model.backbone.arch.widths = widths
        cfg.model.head.in_channels = 2 * widths[-1]
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def model():
    return demo_model()


def save(path, state_dict, **extra):
    torch.save(dict(meta=dict(epoch=1), state_dict=state_dict, **extra), path)
    return str(path)


def test_matching_checkpoints_pass(model, tmp_path):
    state = model.state_dict()
    runner_utils.check_checkpoint_matches(model, save(tmp_path / 'plain.pth', state))
    # MMEngine strips a ``module.`` prefix (DDP / averaged models) when loading.
    wrapped = OrderedDict((f'module.{k}', v) for k, v in state.items())
    runner_utils.check_checkpoint_matches(model, save(tmp_path / 'module.pth', wrapped))
    # EMAHook / WarmupEMAHook checkpoints: averaged weights under state_dict, the raw
    # ones under ema_state_dict with the averaged model's ``module.`` prefix and steps.
    ema = OrderedDict(wrapped, steps=torch.tensor(10))
    runner_utils.check_checkpoint_matches(
        model, save(tmp_path / 'ema.pth', state, ema_state_dict=ema))
    # A bare state dict (no 'state_dict' key), e.g. an exported EMA model.
    bare = tmp_path / 'bare.pth'
    torch.save(ema, bare)
    runner_utils.check_checkpoint_matches(model, str(bare))


def test_checkpoint_of_another_architecture_is_refused(model, tmp_path):
    other = demo_model(widths=(16, 32, 64, 128)).state_dict()
    path = save(tmp_path / 'other.pth', other)
    with pytest.raises(runner_utils.CheckpointMismatchError) as info:
        runner_utils.check_checkpoint_matches(model, path)
    message = str(info.value)
    assert path in message and '--allow-mismatch' in message
    assert 'of another shape, first: backbone.' in message
    assert 'head.fc.weight' not in message  # only the first few keys are listed
    assert message.count(' in the checkpoint, ') == 5


def test_checkpoint_missing_weights_is_refused(model, tmp_path):
    state = OrderedDict((k, v) for k, v in model.state_dict().items()
                        if not k.startswith('head.'))
    path = save(tmp_path / 'backbone_only.pth', state)
    with pytest.raises(runner_utils.CheckpointMismatchError,
                       match='2 weight.s. of the model missing from it, first: '
                       'head.fc.weight, head.fc.bias'):
        runner_utils.check_checkpoint_matches(model, path)


def test_test_tool_refuses_another_architecture(tmp_path):
    """Without the check test.py evaluated a random model and returned metrics."""
    ensure_demo_data(osp.join(REPO, 'data', 'demo'))
    path = save(tmp_path / 'other.pth', demo_model(widths=(16, 32, 64, 128)).state_dict())
    argv = [DEMO, path, '--work-dir', str(tmp_path / 'test'), '--cfg-options',
            'test_dataloader.dataset.indices=6']
    with pytest.raises(runner_utils.CheckpointMismatchError, match='other.pth'):
        test_tool.main(argv)
    metrics = test_tool.main(argv + ['--allow-mismatch'])
    assert 'accuracy/top1' in metrics
