import functools
import importlib.util
import os.path as osp
import socket
import sys

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
#: ``tools/``: its scripts import their helpers (``runner_utils`` ...) from there.
TOOLS_DIR = osp.join(REPO_ROOT, 'tools')
#: ``tools/data/``: the demo data generator (``demo_data``), a tool, not package code.
TOOLS_DATA_DIR = osp.join(TOOLS_DIR, 'data')
if TOOLS_DATA_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DATA_DIR)

import nfnets_mm  # noqa: E402,F401  (registers every module)

#: A small NFNet arch with every structural feature of the F-series (grouped 3x3s,
#: transitions with and without stride, SE, final conv) for fast tests.
TINY_NFNET_ARCH = dict(depths=(1, 2, 2, 1), widths=(32, 64, 128, 128), group_width=16,
                       stem_channels=(8, 8, 16, 16))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (for ``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tools_on_path() -> str:
    """Put ``tools/`` on ``sys.path`` (as running one of its scripts does); returns it."""
    if TOOLS_DIR not in sys.path:
        sys.path.insert(0, TOOLS_DIR)
    return TOOLS_DIR


@functools.lru_cache(maxsize=None)
def load_test_tool():
    """``tools/test.py`` as a module, loaded once.

    It is loaded from its path under the name ``nfnets_test_tool``: imported as ``test``
    it would shadow (or be shadowed by) the standard library's ``test`` package.  Patch
    its attributes with ``monkeypatch`` so other tests see them unchanged.
    """
    tools_on_path()
    spec = importlib.util.spec_from_file_location('nfnets_test_tool',
                                                  osp.join(TOOLS_DIR, 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """MMEngine's current default scope is the latest ``DefaultScope`` created, process-wide:
    a test that runs a Runner under ``default_scope='mmdet'`` would otherwise leave later
    tests building MMPretrain types in MMDetection's registries.  Scopes a test creates are
    dropped after it."""
    from mmengine.registry import DefaultScope
    before = list(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]


def record_calls(monkeypatch, owner, name):
    """Patch ``owner.name`` to record the first argument of each call (then call the
    original); returns the list the calls are recorded in."""
    calls = []
    original = getattr(owner, name)

    def recording(first, *args, **kwargs):
        calls.append(first)
        return original(first, *args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


def detector_step(model, size: int):
    """Losses of an MMDetection detector on a 2-image batch with one box and mask each
    (labels 0 and 1)."""
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1., 1.),
                                             batch_input_shape=(size, size)))
        masks = np.zeros((1, size, size), dtype=np.uint8)
        masks[0, 8:40, 10:44] = 1
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 8., 44., 40.]]), labels=torch.tensor([i % 2]),
            masks=BitmapMasks(masks, size, size))
        samples.append(sample)
    inputs = torch.randn(2, 3, size, size)
    return model.loss(inputs, samples)
