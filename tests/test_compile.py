"""``torch.compile`` of the NFNet backbone and classifier (MMEngine's ``compile=`` option).

MMEngine's runner compiles ``model.train_step`` (``Runner._maybe_compile``); inside it the
backbone must trace as one graph (a graph break splits the network into separately
compiled pieces and costs a Python round trip per break every step).

Backends: the graph-break checks only need Dynamo's tracing (``torch._dynamo.explain``);
the numerics checks use ``backend='aot_eager'``, which runs Dynamo *and* AOTAutograd
(the joint forward/backward graph and its functionalization, where most compile-only
numerical bugs live) but executes the graph with eager kernels, so the CPU test needs no
C++ compiler and takes seconds instead of the minutes Inductor's code generation takes.
"""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from nfnets_mm.models.backbones import NFNet

TINY = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
            stem_channels=(8, 8, 16, 16))


def _backbone(drop_path_rate: float) -> NFNet:
    torch.manual_seed(0)
    # non-zero skip gains, so that every residual branch gets gradients (0 at the paper's init)
    return NFNet(arch=TINY, drop_path_rate=drop_path_rate, skipinit_value=0.5)


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_backbone_traces_without_graph_breaks(mode):
    """Train mode (stochastic depth active) and eval mode with gradients: one graph."""
    model = _backbone(drop_path_rate=0.2)
    getattr(model, mode)()
    explanation = torch._dynamo.explain(model)(_input())
    reasons = [str(b.reason).splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


def test_backbone_inference_traces_as_one_graph():
    """Eval mode under ``no_grad`` (the standardized-weight cache path) as one graph.

    ``fullgraph=True`` raises at the first break, so this is the cheap form of the
    ``explain`` check above (the eager path caches the standardized weights keyed on
    ``data_ptr()`` / inference mode, which Dynamo cannot trace; compiled, it standardizes).
    """
    model = _backbone(drop_path_rate=0.).eval()
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    with torch.no_grad():
        expected = model(_input())  # eager: the cached standardized weights
        got = compiled(_input())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_compiled_forward_backward_matches_eager():
    """aot_eager forward + backward equals eager within fp32 tolerance."""
    eager = _backbone(drop_path_rate=0.).train()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend='aot_eager', fullgraph=True)
    x = _input()
    target = torch.randn(2, eager.out_channels[-1], 1, 1,
                         generator=torch.Generator().manual_seed(2))

    def loss_of(fn):
        out = fn(x)[-1]
        return F.mse_loss(out.mean((2, 3), keepdim=True), target), out

    loss_e, out_e = loss_of(eager)
    loss_c, out_c = loss_of(compiled)
    loss_e.backward()
    loss_c.backward()
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    grads_e = dict((n, p.grad) for n, p in eager.named_parameters())
    checked = 0
    for name, p in compiled_model.named_parameters():
        torch.testing.assert_close(p.grad, grads_e[name], rtol=1e-4, atol=1e-6, msg=name)
        checked += 1
    assert checked == len(grads_e) > 0
    # every gradient is informative: none is all zeros
    assert all(p.grad.abs().sum() > 0 for p in compiled_model.parameters())


def test_recipe_classifier_loss_traces_without_graph_breaks():
    """The recipe's ``ImageClassifier`` (tiny arch) in ``mode='loss'`` on what its data
    preprocessor gives for the loader's soft targets: backbone, neck, head and label-
    smoothed loss trace as one graph (MMEngine's compiled ``train_step`` runs this)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools' / 'analysis'))
    from bench_models import Setting, nfnets_mm_train_step
    setting = Setting(arch='F0', batch=4, size=32, precision='fp32',
                      memory_format='contiguous', mode='eager', device=torch.device('cpu'),
                      tiny=True)
    step = nfnets_mm_train_step(setting)
    data = step.model.data_preprocessor(step.data, True)
    assert 'gt_score' in data['data_samples'][0]
    explanation = torch._dynamo.explain(step.model)(data['inputs'], data['data_samples'],
                                                    mode='loss')
    reasons = [str(b.reason).splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


def test_compiled_step_with_agc_does_not_recompile_every_step():
    """MMEngine's ``compile=`` compiles ``train_step``, which calls the AGC update: that
    runs eagerly (``torch.compiler.disable``), so the step's graphs are built once, and
    the updates equal the eager ones."""
    from torch._dynamo.utils import counters

    from nfnets_mm.engine.optim_wrappers import AGCOptimWrapper

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 4))
        wrapper = AGCOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                                  clip_grad=dict(type='agc', clipping=0.01, exclude=[]))
        return model, wrapper

    inputs = [torch.randn(4, 8, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    results = []
    for compile_it in (False, True):
        with warnings.catch_warnings():  # 'AGC clips every parameter' (no exclusions here)
            warnings.simplefilter('ignore')
            model, wrapper = make()

        def step(x):
            loss = model(x).square().mean()
            wrapper.update_params(loss)
            return loss

        run = torch.compile(step, backend='eager') if compile_it else step
        counters.clear()
        for x in inputs:
            run(x)
        results.append([p.detach().clone() for p in model.parameters()])
    # without the eager AGC update: 15 graphs in 6 steps, a recompile per step
    assert counters['stats']['unique_graphs'] <= 4
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)


def test_runner_compile_option_trains_the_classifier_like_eager(tmp_path):
    """``compile=`` in a classifier config, end to end: a ``Runner`` with the AGC
    constructor and wrapper (whose param groups once made Dynamo fail in
    ``optimizer.step``) trains 3 iterations compiled and ends where the eager run ends
    (the compiled backbone uses the plain WS formula, eager the fused op: rounding only);
    once with the eager AGC update and once with ``clip_grad.fused`` (its graph run from
    inside the skipped ``_agc_update`` is checked in tests/test_agc_fused.py).  Backend ``eager``: the failure was in Dynamo's
    tracing, which every backend shares (AOTAutograd is checked on the backbone above)."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    from tiny_runner_cfg import make_tiny_data, tiny_runner_cfg
    data_root = make_tiny_data(tmp_path / 'data')
    weights = {}
    for run, (compiled, fused_agc) in {'eager': (False, False), 'compiled': (True, False),
                                       'compiled, fused AGC': (True, True)}.items():
        cfg = tiny_runner_cfg(data_root, str(tmp_path / run.replace(', ', '_')), 3)
        cfg['default_hooks']['checkpoint'] = dict(type='CheckpointHook', interval=100,
                                                  by_epoch=False)
        if fused_agc:
            cfg['optim_wrapper']['clip_grad']['fused'] = dict(backend='aot_eager')
        if compiled:
            cfg['compile'] = dict(backend='eager')
        runner = Runner.from_cfg(Config(cfg))  # the runner reads compile= from its config
        runner.train()
        assert (runner.optim_wrapper.compiled_agc is not None) == fused_agc
        if compiled:  # what Runner._maybe_compile installed
            assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable')
        weights[run] = {k: v.clone() for k, v in runner.model.state_dict().items()}
    for run in ('compiled', 'compiled, fused AGC'):
        for name, eager in weights['eager'].items():
            torch.testing.assert_close(weights[run][name], eager, rtol=1e-4, atol=1e-6,
                                       msg=f'{run}: {name}')
    initial = Runner(**tiny_runner_cfg(data_root, str(tmp_path / 'init'), 3)).model.state_dict()
    moved = sum(not torch.equal(initial[k], v) for k, v in weights['eager'].items())
    assert moved > len(initial) // 2  # the runs trained
