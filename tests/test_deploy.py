"""Deploy path: folding WS into plain convs, the eval-mode WS cache, ONNX export."""
import copy
import importlib.util
import os.path as osp

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import record_calls

import nfnets_mm  # noqa: F401
from mmpretrain.registry import MODELS
from nfnets_mm.models import NFNet, NFResNet
from nfnets_mm.models.layers import ScaledStdConv2d

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL_ARCH = dict(depths=(1, 2, 1, 1), widths=(32, 64, 128, 128), group_width=16,
                  stem_channels=(8, 8, 16, 16))


def _load_export_tool():
    path = osp.join(REPO, 'tools', 'deploy', 'export_onnx.py')
    spec = importlib.util.spec_from_file_location('_export_onnx', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial gains, biases and skip gains (SkipInit zeros would hide the branches)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('skip_gain'):
                param.copy_(torch.rand((), generator=gen) * 0.7 + 0.3)
            elif name.endswith('.gain'):
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            elif name.endswith('.bias'):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return model


BACKBONES = {
    'nfnet': lambda: NFNet(arch=SMALL_ARCH, drop_path_rate=0., out_indices=(0, 1, 2, 3)),
    'nfnet_same': lambda: NFNet(arch=SMALL_ARCH, drop_path_rate=0., padding='same',
                                act_cfg=dict(type='GELU', approximate='tanh')),
    'nf_resnet': lambda: NFResNet(depth=26, stem_channels=16, drop_path_rate=0.,
                                  se_ratio=0.0625),
}


def _ws_convs(model):
    return [m for m in model.modules() if isinstance(m, ScaledStdConv2d)]


def _assert_close_scaled(actual, expected, rel):
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert scale > 0 and diff <= rel * scale, f'diff {diff:.3g} vs scale {scale:.3g}'


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_switch_to_deploy_keeps_outputs(name, monkeypatch):
    torch.manual_seed(0)
    model = _randomize(BACKBONES[name]()).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        before = model(x)
    convs = _ws_convs(model)
    folded = {id(m): m.standardized_weight().detach().clone() for m in convs}
    model.switch_to_deploy()

    assert not [n for n, _ in model.named_parameters() if n.endswith('.gain')]
    assert not [k for k in model.state_dict() if k.endswith('.gain')]
    for conv in convs:
        assert conv.deploy and conv.gain is None
        assert torch.equal(conv.weight, folded[id(conv)])

    def fail(self):
        raise AssertionError('standardized_weight must not run after switch_to_deploy')

    monkeypatch.setattr(ScaledStdConv2d, 'standardized_weight', fail)
    with torch.no_grad():
        after = model(x)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        _assert_close_scaled(a, b, 1e-5)
    # idempotent
    model.switch_to_deploy()


def test_eval_cache_reuse_and_invalidation(monkeypatch):
    torch.manual_seed(0)
    model = _randomize(BACKBONES['nfnet']()).eval()
    x = torch.randn(1, 3, 32, 32)
    # uncached reference of the updated model, computed in train mode before counting
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        reference.stages[1][0].conv2.weight.mul_(-1.5)
        expected = reference(x)[-1]

    calls = record_calls(monkeypatch, ScaledStdConv2d, 'standardized_weight')
    n_convs = len(_ws_convs(model))
    with torch.no_grad():
        out1 = model(x)[-1]
        assert len(calls) == n_convs
        out2 = model(x)[-1]
    assert len(calls) == n_convs  # second forward reuses every cached weight
    assert torch.equal(out1, out2)

    with torch.no_grad():
        model.stages[1][0].conv2.weight.mul_(-1.5)  # in-place, as an optimizer step does
        out3 = model(x)[-1]
    assert len(calls) == n_convs + 1  # only the changed conv is re-standardized
    torch.testing.assert_close(out3, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out3, out1)

    with torch.no_grad():
        model.stem.conv1.gain.mul_(2.0)
        model(x)
    assert len(calls) == n_convs + 2  # a gain update invalidates too

    model.load_state_dict(reference.state_dict())  # copy_ bumps every version counter
    with torch.no_grad():
        out4 = model(x)[-1]
    assert len(calls) == 2 * n_convs + 2
    torch.testing.assert_close(out4, expected, rtol=1e-5, atol=1e-6)


def test_training_never_caches_and_gradients_flow(monkeypatch):
    torch.manual_seed(0)
    model = _randomize(BACKBONES['nfnet']()).train()
    calls = record_calls(monkeypatch, ScaledStdConv2d, 'standardized_weight')
    n_convs = len(_ws_convs(model))
    x = torch.randn(2, 3, 32, 32)
    for step in range(2):
        model.zero_grad()
        model(x)[-1].square().mean().backward()
        assert len(calls) == (step + 1) * n_convs
        assert all(m._cached_weight is None for m in _ws_convs(model))
    for conv in _ws_convs(model):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
        assert conv.gain.grad is not None and conv.gain.grad.abs().sum() > 0
    # eval mode with autograd on (e.g. fine-tuning with frozen BN-like eval): no cache either
    model.eval()
    model.zero_grad()
    model(x)[-1].sum().backward()
    assert all(m._cached_weight is None for m in _ws_convs(model))
    assert model.stem.conv1.gain.grad.abs().sum() > 0


def _small_classifier() -> torch.nn.Module:
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='NFNet', arch=SMALL_ARCH, padding='same', drop_path_rate=0.,
                      act_cfg=dict(type='GELU', approximate='tanh')),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='NFNetClsHead', num_classes=7, in_channels=256)))
    return _randomize(model).eval()


def test_onnx_export_matches_pytorch(tmp_path):
    """torch 2.14's default ``torch.onnx.export`` is the dynamo exporter (needs onnxscript,
    installed with the test extra); with torch 2.14.1 + onnxscript 0.7.2 it works for the
    deployed model, and ``export_onnx`` falls back to ``dynamo=False`` only if it fails.
    The deployed graph has no WS ops: plain convs with constant weights and "SAME" pads.
    A model far below protobuf's 2 GB limit is one self-contained file (no .onnx.data)."""
    tool = _load_export_tool()
    model = _small_classifier()
    model.backbone.switch_to_deploy()
    wrapper = tool.ClassifierExportWrapper(model).eval()
    x = torch.randn(2, 3, 48, 64)
    out_path = tmp_path / 'small.onnx'
    exporter = tool.export_onnx(wrapper, x, str(out_path))
    assert exporter in ('dynamo', 'torchscript') and out_path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['small.onnx']  # no sidecar
    assert tool.external_data_files(str(out_path)) == []
    # deployed: every Conv reads a constant weight (no standardization ops in the graph)
    graph = onnx.load(str(out_path)).graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == 'Constant' for out in node.output}
    convs = [node for node in graph.node if node.op_type == 'Conv']
    assert len(convs) == len(_ws_convs(model))
    assert all(node.input[1] in constants for node in convs)
    with torch.no_grad():
        expected = wrapper(x).numpy()
    moved = tmp_path / 'moved'  # self-contained: runs from anywhere
    moved.mkdir()
    out_path = out_path.rename(moved / 'small.onnx')
    session = ort.InferenceSession(str(out_path), providers=['CPUExecutionProvider'])
    (actual, ) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * abs(expected).max())


def test_export_onnx_cli(tmp_path, capsys, monkeypatch):
    tool = _load_export_tool()
    model = _small_classifier()
    checkpoint = tmp_path / 'small.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    config = tmp_path / 'small_cfg.py'
    config.write_text(
        "custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)\n"
        "default_scope = 'mmpretrain'\n"
        f"model = dict(type='ImageClassifier', backbone=dict(type='NFNet', arch={SMALL_ARCH!r}, "
        "padding='same', act_cfg=dict(type='GELU', approximate='tanh')), "
        "neck=dict(type='GlobalAveragePooling'), "
        "head=dict(type='NFNetClsHead', num_classes=7, in_channels=256))\n")
    out = tmp_path / 'cli.onnx'
    args = [str(config), str(checkpoint), str(out), '--shape', '32', '48']
    assert tool.main(args) == 0
    printed = capsys.readouterr().out
    assert 'max abs diff' in printed and out.exists()
    assert 'embedded' in printed and not osp.exists(f'{out}.data')
    stamp = out.stat().st_mtime_ns
    assert tool.main(args) == 1  # refuses to overwrite
    assert 'already exists' in capsys.readouterr().err and out.stat().st_mtime_ns == stamp

    # above the limit (2 GB protobuf files): weights in the OUT.data sidecar, reported
    monkeypatch.setattr(tool, 'EMBED_LIMIT_BYTES', 0)
    assert tool.main(args + ['--force']) == 0
    printed = capsys.readouterr().out
    assert 'max abs diff' in printed and f'{out}.data' in printed
    assert tool.external_data_files(str(out)) == [f'{out}.data']
    monkeypatch.undo()
    assert tool.main(args + ['--force']) == 0  # back to one file: stale sidecar removed
    assert 'embedded' in capsys.readouterr().out and not osp.exists(f'{out}.data')

    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        expected = model(x, mode='tensor').numpy()
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    (actual, ) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * abs(expected).max())
