"""The compiled AGC pass (``clip_grad.fused``, :class:`CompiledAGC`), issue 10.

Numerics are checked against ``eq3_clip`` (tests/test_agc.py: a unit-by-unit float64
transcription of Eq. 3, independent of the package) with Inductor's generated C++ code,
the code a user gets.  The wrapper-level behaviour (reference training, skipping
non-finite updates, statistics, AMP) is checked for both settings of ``fused`` by the
tests marked ``@FUSED`` in tests/test_agc.py.
"""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from test_agc import _param, agc_cfg, eq3_clip, loss_fn, make_batch, make_model

import nfnets_mm  # noqa: F401  (registers the wrappers)
from nfnets_mm.engine.optim_wrappers import adaptive_clip_grad_
from nfnets_mm.engine.optim_wrappers.agc_fused import CompiledAGC

#: conv, channels_last conv, linear, bias, scalar skip gain, an (O, 1, 1, 1) gain (one unit)
SHAPES = [(6, 4, 3, 3), (8, 4, 3, 3), (5, 7), (9, ), (), (4, 1, 1, 1)]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _params(dtype=torch.float32, seed=0):
    params = []
    for i, shape in enumerate(SHAPES):
        p = _param(shape, scale=1.0, grad_scale=0.2, seed=seed + i)
        q = nn.Parameter(p.detach().to(dtype))
        q.grad = p.grad.to(dtype)
        params.append(q)
    with torch.no_grad():  # a channels_last weight and gradient (strides, not a copy)
        params[1].data = params[1].data.contiguous(memory_format=torch.channels_last)
        params[1].grad = params[1].grad.contiguous(memory_format=torch.channels_last)
    return params


def test_inductor_code_clips_like_eq3_with_two_clippings_and_an_excluded_gradient():
    """Inductor's generated code (the default backend) for two AGC groups (clipping 0.2
    and 0.05) and one excluded gradient: every gradient equals Eq. 3 within 1e-6 relative,
    the excluded one is untouched, and the statistics equal the eager pass's."""
    params = _params()
    excluded = _param((3, 5), grad_scale=5.0, seed=99)
    groups = [(0.2, params[:3]), (0.05, params[3:])]
    raw = [p.grad.clone() for p in params]
    raw_excluded = excluded.grad.clone()
    twins = _params()
    eager = [adaptive_clip_grad_(ps, clipping=c) for c, ps in
             ((0.2, twins[:3]), (0.05, twins[3:]))]

    result = CompiledAGC()(groups, [excluded])

    clipping = [0.2] * 3 + [0.05] * 3
    for p, twin, g, c in zip(params, twins, raw, clipping):
        expected, _ = eq3_clip(p, g, c)
        torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(twin.grad, expected, rtol=1e-6, atol=0)  # eager path
    assert params[1].grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(excluded.grad, raw_excluded)
    assert bool(result.finite)
    units = sum(e.total_units for e in eager)
    assert result.units == (units, ) + tuple(sum(k) for k in
                                             zip(*(e.units_by_kind for e in eager)))
    clipped, factor_sum, *by_kind, max_ratio = result.stats.tolist()
    assert 0 < clipped < units  # a real mix of clipped and unclipped units
    assert clipped == sum(int(e.clipped_units) for e in eager)
    assert by_kind == (eager[0].clipped_by_kind + eager[1].clipped_by_kind).tolist()
    expected_sum = sum(float(e.mean_factor) * e.total_units for e in eager)
    assert factor_sum == pytest.approx(expected_sum, rel=1e-6)
    assert max_ratio == pytest.approx(max(float(e.max_clip_ratio) for e in eager), rel=1e-6)


@pytest.mark.parametrize('dtype, rtol', [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2),
                                         (torch.float64, 1e-12)])
def test_every_real_dtype(dtype, rtol):
    """fp16/bf16 gradients keep their dtype with norms in fp32; fp64 in fp64."""
    params = _params(dtype)
    raw = [p.grad.clone() for p in params]
    result = CompiledAGC(compile_cfg=dict(backend='aot_eager'))([(0.2, params)])
    assert bool(result.finite) and result.stats[0] > 0
    for p, g in zip(params, raw):
        expected, _ = eq3_clip(p, g, 0.2)
        assert p.grad.dtype == dtype
        torch.testing.assert_close(p.grad.double(), expected.double(), rtol=rtol, atol=0)


def test_non_finite_gradient_is_reported():
    params = _params()
    params[0].grad[0, 0, 0, 0] = float('nan')
    assert not bool(CompiledAGC(compile_cfg=dict(backend='aot_eager'))([(0.2, params)]).finite)
    excluded = _param((3, 5), seed=5)
    excluded.grad[1, 1] = float('inf')
    result = CompiledAGC(compile_cfg=dict(backend='aot_eager'))([(0.2, _params())], [excluded])
    assert not bool(result.finite)


def test_compiled_once_then_runs_as_one_graph_every_step():
    """Through the optimizer wrapper: one graph (``fullgraph=True``: no break, no host
    sync inside), compiled at the first update and run by every later one although
    ``zero_grad`` frees the gradients each step (guards on metadata, not identity), and
    run compiled from inside ``_agc_update``, which Dynamo itself skips."""
    compiled, runs = [], []

    def counting_backend(graph_module, example_inputs):
        compiled.append(graph_module)

        def run(*args):
            runs.append(1)
            return graph_module(*args)

        return run

    model = make_model()
    wrapper = build_optim_wrapper(model, agc_cfg(0.01, fused=dict(backend=counting_backend)))
    eager_model = make_model()
    eager = build_optim_wrapper(eager_model, agc_cfg(0.01))
    for step in range(4):
        batch = make_batch(step)
        wrapper.update_params(loss_fn(model, batch))
        eager.update_params(loss_fn(eager_model, batch))
        assert all(p.grad is None for p in model.parameters())  # set_to_none: fresh grads
    assert len(compiled) == 1 and len(runs) == 4
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9, msg=name)


def test_complex_and_bad_options_are_refused_clearly():
    p = nn.Parameter(torch.randn(3, 4, dtype=torch.complex64))
    p.grad = torch.randn(3, 4, dtype=torch.complex64)
    with pytest.raises(TypeError, match='complex.*fused=False'):
        CompiledAGC(compile_cfg=dict(backend='aot_eager'))([(0.01, [p])])
    with pytest.raises(KeyError, match='backend, mode, options'):
        CompiledAGC(compile_cfg=dict(fullgraph=False))
    with pytest.raises(TypeError, match='fused must be False'):
        build_optim_wrapper(make_model(), agc_cfg(0.01, fused='yes'))
    with pytest.raises(KeyError, match='valid keys are backend, mode, options'):
        build_optim_wrapper(make_model(), agc_cfg(0.01, fused=dict(dynamic=True)))
