"""Tests of Adaptive Gradient Clipping (paper Sec. 4, Eq. 3) and its MMEngine wrappers.

Every numerical check compares against :func:`eq3_clip`, a deliberately slow, unit-by-unit
float64 transcription of Eq. 3 written here, independent of ``nfnets_mm``'s own
``agc_reference``.
"""
import copy
import math
import warnings
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper

import nfnets_mm  # noqa: F401  (registers the wrappers and the constructor)
from nfnets_mm.engine.optim_wrappers import (AGCOptimWrapper, AmpAGCOptimWrapper,
                                             adaptive_clip_grad_)
from nfnets_mm.engine.optim_wrappers import agc_optim_wrapper as agc_wrapper_module

# --------------------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------------------


def eq3_clip(param: torch.Tensor, grad: torch.Tensor, clipping: float, eps: float = 1e-3,
             grad_eps: float = 1e-6) -> Tuple[torch.Tensor, List[float]]:
    """Eq. 3 one unit at a time in float64.

    Units: rows of dim 0 (conv ``(O, I, kh, kw)`` -> ``O`` units over ``I*kh*kw``, linear
    ``(O, I)`` -> ``O`` rows), except that a tensor with at most one dimension larger than 1
    is a single unit.

    Returns:
        tuple: the clipped gradient (``grad``'s shape and dtype) and the factor per unit.
    """
    w = param.detach().double()
    g = grad.detach().double()
    single = sum(1 for s in param.shape if s > 1) <= 1
    w_units = w.reshape(1, -1) if single else w.reshape(w.shape[0], -1)
    g_units = g.reshape(1, -1) if single else g.reshape(g.shape[0], -1)
    out = g_units.clone()
    factors = []
    for i in range(w_units.shape[0]):
        w_norm = max(math.sqrt(float((w_units[i] ** 2).sum())), eps)
        g_norm = math.sqrt(float((g_units[i] ** 2).sum()))
        factor = 1.0
        if g_norm / w_norm > clipping:
            factor = clipping * w_norm / max(g_norm, grad_eps)
        out[i] = out[i] * factor
        factors.append(factor)
    return out.reshape(grad.shape).to(grad.dtype), factors


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=2e-5, atol=1e-8)


# --------------------------------------------------------------------------------------
# adaptive_clip_grad_ on single tensors
# --------------------------------------------------------------------------------------


def _param(shape, scale=1.0, grad_scale=1.0, seed=0) -> nn.Parameter:
    gen = torch.Generator().manual_seed(seed)
    p = nn.Parameter(torch.randn(shape, generator=gen) * scale)
    p.grad = torch.randn(shape, generator=gen) * grad_scale
    return p


def test_clip_matches_eq3_for_conv_linear_vector_scalar():
    clipping = 0.05
    params = [
        _param((8, 4, 3, 3), seed=1),   # conv: 8 units of 36
        _param((6, 5), seed=2),         # linear: 6 rows
        _param((7, ), seed=3),          # bias / gain: one unit
        _param((), seed=4),             # scalar skip gain: one unit
        _param((5, 1), seed=5),         # (O, 1): one non-singleton dim -> one unit
    ]
    # Mix clipped and unclipped units: scale the gradient of every other unit so that its
    # ratio ||G_i|| / ||W_i|| is far below ``clipping`` (the others are ~1 >> clipping).
    params[0].grad[::2] *= 1e-4
    params[1].grad[1::2] *= 1e-4
    params[3].grad *= 1e-4
    expected, n_clipped, n_units, factors = [], 0, 0, []
    for p in params:
        ref, f = eq3_clip(p, p.grad, clipping)
        expected.append(ref)
        factors += f
        n_clipped += sum(x < 1 for x in f)
        n_units += len(f)
    assert 0 < n_clipped < n_units  # the case is not trivial
    stats = adaptive_clip_grad_(params, clipping=clipping)
    for p, ref in zip(params, expected):
        assert p.grad.shape == ref.shape
        assert_close(p.grad, ref)
    assert stats.total_units == n_units == 8 + 6 + 1 + 1 + 1
    assert int(stats.clipped_units) == n_clipped
    assert float(stats.mean_factor) == pytest.approx(sum(factors) / len(factors), rel=1e-5)
    assert float(stats.clip_fraction) == pytest.approx(n_clipped / n_units)


@pytest.mark.parametrize('shape', [(4, 3, 3, 3), (5, 6), (9, ), ()])
def test_threshold_below_left_above_clipped(shape):
    """A unit just below ``clipping`` is left bit-identical; just above is clipped."""
    clipping = 0.01
    for rel, should_clip in ((1 - 1e-3, False), (1 + 1e-3, True)):
        p = _param(shape, seed=7)
        single = sum(1 for s in shape if s > 1) <= 1
        w = p.detach().reshape(1, -1) if single else p.detach().reshape(shape[0], -1)
        direction = torch.randn(w.shape, generator=torch.Generator().manual_seed(8))
        direction /= direction.norm(dim=1, keepdim=True)
        grad_units = direction * (w.norm(dim=1, keepdim=True) * clipping * rel)
        p.grad = grad_units.reshape(shape).clone()
        before = p.grad.clone()
        stats = adaptive_clip_grad_([p], clipping=clipping)
        if should_clip:
            assert int(stats.clipped_units) == stats.total_units
            norms = p.grad.reshape(w.shape).norm(dim=1)
            assert_close(norms, w.norm(dim=1) * clipping)
            assert_close(p.grad, eq3_clip(p, before, clipping)[0])
            assert not torch.equal(p.grad, before)
        else:
            assert int(stats.clipped_units) == 0
            assert torch.equal(p.grad, before)


@pytest.mark.parametrize('shape', [(), (6, )])
def test_zero_initialised_param_still_moves(shape):
    """Skip gains and biases start at 0: the eps floor lets them receive an update."""
    clipping, eps, lr = 0.01, 1e-3, 1.0
    p = nn.Parameter(torch.zeros(shape))
    p.grad = torch.full(shape, 3.0)
    if shape:
        p.grad[0] = -4.0
    raw = p.grad.clone()
    adaptive_clip_grad_([p], clipping=clipping, eps=eps)
    # ||W|| = 0 -> max(||W||, eps) = eps: the clipped grad has norm clipping * eps.
    assert p.grad.norm().item() == pytest.approx(clipping * eps, rel=1e-5)
    assert_close(p.grad, eq3_clip(p, raw, clipping, eps)[0])
    torch.optim.SGD([p], lr=lr).step()
    assert torch.all(p.detach() != 0)
    assert_close(p.detach(), -lr * raw * clipping * eps / raw.norm())


def test_o111_gain_is_one_unit():
    """A gain stored as ``(O, 1, 1, 1)`` is one unit (DeepMind), not O element units."""
    clipping = 0.1
    p = nn.Parameter(torch.tensor([1.0, 2.0, 0.5, 4.0]).reshape(4, 1, 1, 1))
    # element ratios 0.01, 0.5, 4.0, 0.05: elementwise clipping would touch 2 elements and
    # leave 2; as a single unit the whole tensor is scaled by one factor.
    p.grad = torch.tensor([0.01, 1.0, 2.0, 0.2]).reshape(4, 1, 1, 1)
    raw = p.grad.clone()
    stats = adaptive_clip_grad_([p], clipping=clipping)
    assert stats.total_units == 1 and int(stats.clipped_units) == 1
    expected = raw * (clipping * torch.tensor([1.0, 2.0, 0.5, 4.0]).norm() / raw.norm())
    assert_close(p.grad, expected)
    assert_close(p.grad, eq3_clip(p, raw, clipping)[0])
    ratio = p.grad / raw
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # one common factor


def test_params_without_grad_are_ignored():
    a = _param((4, 3), seed=11)
    b = nn.Parameter(torch.randn(5))  # grad None
    c = _param((3, ), seed=12)
    ref_a = eq3_clip(a, a.grad, 0.01)[0]
    ref_c = eq3_clip(c, c.grad, 0.01)[0]
    stats = adaptive_clip_grad_([a, b, c], clipping=0.01)
    assert b.grad is None
    assert stats.total_units == 4 + 1
    assert_close(a.grad, ref_a)
    assert_close(c.grad, ref_c)
    empty = adaptive_clip_grad_([nn.Parameter(torch.ones(2))])
    assert empty.total_units == 0 and int(empty.clipped_units) == 0


def test_invalid_clipping_rejected():
    with pytest.raises(ValueError, match='clipping'):
        adaptive_clip_grad_([_param((3, ))], clipping=0.)


# --------------------------------------------------------------------------------------
# Optimizer wrappers
# --------------------------------------------------------------------------------------


class GainConv(nn.Module):
    """3x3 conv with bias and a per-output-channel gain ``(O,)`` (like a WS conv)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / math.sqrt(cin * 9))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = nn.Parameter(torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, cin, H, W) -> (N, cout, H, W)."""
        return F.conv2d(x, self.weight * self.gain.view(-1, 1, 1, 1), self.bias, padding=1)


class Block(nn.Module):

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = GainConv(channels, channels)
        self.skip_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.skip_gain * F.relu(self.conv(x))


class Head(nn.Module):

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)


class TinyNF(nn.Module):
    """stem conv -> residual block with skip gain -> mean pool -> ``head.fc``."""

    def __init__(self, channels: int = 8, num_classes: int = 5, with_head: bool = True) -> None:
        super().__init__()
        self.stem = GainConv(3, channels)
        self.block = Block(channels)
        if with_head:
            self.head = Head(channels, num_classes)
        else:
            self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> logits (N, num_classes)."""
        x = self.block(F.relu(self.stem(x)))
        fc = self.head.fc if hasattr(self, 'head') else self.classifier
        return fc(x.mean((2, 3)))


NO_DECAY = ('stem.bias', 'stem.gain', 'block.conv.bias', 'block.conv.gain', 'block.skip_gain',
            'head.fc.bias')


def make_model(seed: int = 0, **kwargs) -> TinyNF:
    torch.manual_seed(seed)
    model = TinyNF(**kwargs)
    # A non-zero skip gain lets the block's conv receive gradient.
    with torch.no_grad():
        model.block.skip_gain.fill_(0.5)
    return model


def make_batch(seed: int, n: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=gen), torch.randint(0, 5, (n, ), generator=gen)


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y) * 10.0  # large enough that most units clip


def agc_cfg(clipping: float = 0.01, lr: float = 0.1, weight_decay: float = 2e-5,
            wrapper: str = 'AGCOptimWrapper', **clip_kwargs) -> dict:
    return dict(
        type=wrapper,
        constructor='AGCOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=lr, momentum=0.9, nesterov=True,
                       weight_decay=weight_decay),
        clip_grad=dict(type='agc', clipping=clipping, **clip_kwargs))


class ReferenceTrainer:
    """Eq. 3 by hand + a plain ``torch.optim.SGD``, on a copy of the model."""

    def __init__(self, model: nn.Module, clipping: float, lr: float, weight_decay: float,
                 excluded=('head.fc.weight', ), no_decay=NO_DECAY) -> None:
        self.model = copy.deepcopy(model)
        self.clipping = clipping
        self.excluded = set(excluded)
        named = dict(self.model.named_parameters())
        decay = [p for n, p in named.items() if n not in no_decay]
        plain = [p for n, p in named.items() if n in no_decay]
        self.optimizer = torch.optim.SGD(
            [dict(params=decay, weight_decay=weight_decay),
             dict(params=plain, weight_decay=0.)], lr=lr, momentum=0.9, nesterov=True)
        self.factors: List[float] = []

    def accumulate(self, batches, divide: int = 1) -> None:
        self.model.zero_grad()
        for batch in batches:
            (loss_fn(self.model, batch) / divide).backward()

    def raw_grads(self) -> Dict[str, torch.Tensor]:
        return {n: p.grad.clone() for n, p in self.model.named_parameters()}

    def clip_and_step(self) -> None:
        self.factors = []
        for name, p in self.model.named_parameters():
            if name in self.excluded:
                continue
            p.grad, f = eq3_clip(p, p.grad, self.clipping)
            self.factors += f
        self.optimizer.step()


#: ``clip_grad.fused`` settings every wrapper-level test marked with it runs under: the
#: eager multi-tensor AGC and the compiled pass (``aot_eager``: Dynamo + AOTAutograd with
#: eager kernels, seconds instead of Inductor's code generation; tests/test_agc_fused.py
#: checks Inductor's code against Eq. 3).
FUSED = pytest.mark.parametrize('fused', [False, dict(backend='aot_eager')],
                                ids=['eager', 'compiled'])


def assert_same_params(model: nn.Module, ref: nn.Module) -> None:
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-7, msg=name)


def test_wrapper_groups_weight_decay_and_exclusion_flags():
    model = make_model()
    wrapper = build_optim_wrapper(model, agc_cfg())
    assert isinstance(wrapper, AGCOptimWrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            seen[names[id(p)]] = (group['weight_decay'], group['agc'])
    assert set(seen) == set(names.values())
    for name, (wd, agc) in seen.items():
        assert wd == (0. if name in NO_DECAY else 2e-5), name
        assert agc is (name != 'head.fc.weight'), name
    assert seen['stem.weight'][0] == seen['block.conv.weight'][0] == 2e-5


@FUSED
def test_wrapper_step_equals_reference_and_excluded_untouched(fused):
    """Clip raw grads (before weight decay + Nesterov momentum); head.fc.weight unclipped.

    A large weight decay makes the order observable: clipping ``g + wd * w`` instead of
    ``g`` would not match the reference.
    """
    clipping, lr, wd = 0.02, 0.05, 0.5
    model = make_model()
    ref = ReferenceTrainer(model, clipping, lr, wd)
    wrapper = build_optim_wrapper(model, agc_cfg(clipping, lr, wd, fused=fused))
    fc_before = model.head.fc.weight.detach().clone()
    for step in range(3):
        batch = make_batch(step)
        ref.accumulate([batch])
        raw_fc = ref.model.head.fc.weight.grad.clone()
        ref.clip_and_step()
        assert any(f < 1 for f in ref.factors)
        wrapper.update_params(loss_fn(model, batch))
        assert_same_params(model, ref.model)
        if step == 0:
            # Excluded classifier: SGD with momentum on the *raw* gradient, first step.
            d_p = raw_fc + wd * fc_before
            expected = fc_before - lr * (d_p + 0.9 * d_p)
            assert_close(model.head.fc.weight.detach(), expected)
            # The raw gradient of head.fc.weight would have been clipped were it included.
            assert eq3_clip(fc_before, raw_fc, clipping)[1][0] < 1
    # Clipping after weight decay gives a different answer (the test can tell).
    p = ref.model.stem.weight
    g = torch.randn_like(p)
    assert not torch.allclose(eq3_clip(p, g, clipping)[0] + wd * p.detach(),
                              eq3_clip(p, g + wd * p.detach(), clipping)[0])


@FUSED
def test_message_hub_scalars(fused):
    clipping = 0.5  # some units clipped, some not
    model = make_model()
    ref = ReferenceTrainer(model, clipping, 0.1, 2e-5)
    wrapper = build_optim_wrapper(model, agc_cfg(clipping, fused=fused))
    fractions = []
    for step in range(2):
        batch = make_batch(10 + step)
        ref.accumulate([batch])
        ref.clip_and_step()
        wrapper.update_params(loss_fn(model, batch))
        hub = wrapper.message_hub
        fraction = float(hub.get_scalar('train/agc_clip_fraction').current())
        mean_factor = float(hub.get_scalar('train/agc_mean_factor').current())
        factors = ref.factors
        assert len(factors) == 1 + 8 + 1 + 1 + 8 + 1 + 1 + 1  # head.fc.weight excluded
        assert fraction == pytest.approx(sum(f < 1 for f in factors) / len(factors))
        fractions.append(fraction)
        assert mean_factor == pytest.approx(sum(factors) / len(factors), rel=1e-4)
        assert hub is MessageHub.get_current_instance()
    assert any(0 < f < 1 for f in fractions)  # a non-trivial mix was checked


def test_log_stats_false_logs_nothing():
    hub = MessageHub.get_instance('test_agc_no_stats')
    model = make_model()
    wrapper = build_optim_wrapper(model, agc_cfg(log_stats=False))
    wrapper.message_hub = hub
    wrapper.update_params(loss_fn(model, make_batch(0)))
    assert 'train/agc_clip_fraction' not in hub.log_scalars


def test_accumulation_clips_once_on_summed_grads(monkeypatch):
    clipping, lr, wd, counts = 0.02, 0.05, 2e-5, 2
    model = make_model()
    ref = ReferenceTrainer(model, clipping, lr, wd)
    calls = []
    real_clip = agc_wrapper_module.adaptive_clip_grad_

    def spy(params, **kwargs):
        calls.append({id(p): p.grad.clone() for p in params})
        return real_clip(params, **kwargs)

    monkeypatch.setattr(agc_wrapper_module, 'adaptive_clip_grad_', spy)
    cfg = agc_cfg(clipping, lr, wd)
    cfg['accumulative_counts'] = counts
    wrapper = build_optim_wrapper(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    for update in range(2):
        batches = [make_batch(20 + 2 * update + k) for k in range(counts)]
        for k, batch in enumerate(batches):
            wrapper.update_params(loss_fn(model, batch))
            assert len(calls) == update + (k + 1) // counts  # only at the last micro-batch
        ref.accumulate(batches, divide=counts)
        expected = ref.raw_grads()
        seen = calls[-1]
        assert {names[i] for i in seen} == set(expected) - {'head.fc.weight'}
        for pid, grad in seen.items():
            assert_close(grad, expected[names[pid]])
        ref.clip_and_step()
        assert_same_params(model, ref.model)
    assert len(calls) == 2


def test_custom_keys_exclusion_path():
    """``paramwise_cfg.custom_keys={'head.fc.weight': dict(agc=False)}`` without exclude."""
    clipping = 0.02
    for constructor, clip_extra in (('DefaultOptimWrapperConstructor', {}),
                                    ('AGCOptimWrapperConstructor', dict(exclude=[]))):
        model = make_model()
        # MMEngine's default constructor decays everything; ours keeps the NF no-decay
        # rules next to the user's custom_keys.
        no_decay = () if constructor == 'DefaultOptimWrapperConstructor' else NO_DECAY
        ref = ReferenceTrainer(model, clipping, 0.05, 2e-5, no_decay=no_decay)
        cfg = agc_cfg(clipping, 0.05, 2e-5, **clip_extra)
        cfg['constructor'] = constructor
        cfg['paramwise_cfg'] = dict(custom_keys={'head.fc.weight': dict(agc=False)})
        with warnings.catch_warnings():
            warnings.simplefilter('error', UserWarning)  # nothing to warn about here
            wrapper = build_optim_wrapper(model, cfg)
        flags = {n: g.get('agc', True) for g in wrapper.optimizer.param_groups
                 for n, p in model.named_parameters() if any(p is q for q in g['params'])}
        assert flags['head.fc.weight'] is False
        assert all(v for n, v in flags.items() if n != 'head.fc.weight')
        batch = make_batch(3)
        ref.accumulate([batch])
        ref.clip_and_step()
        wrapper.update_params(loss_fn(model, batch))
        assert_same_params(model, ref.model)


def test_user_pattern_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match='head.classifier.weight'):
        build_optim_wrapper(make_model(), agc_cfg(exclude=['head.classifier.weight']))


def test_fnmatch_patterns_exclude_several():
    model = make_model()
    wrapper = build_optim_wrapper(model, agc_cfg(exclude=['head.fc.*', '*.skip_gain']))
    excluded = {n for g in wrapper.optimizer.param_groups if g['agc'] is False
                for n, p in model.named_parameters() if any(p is q for q in g['params'])}
    assert excluded == {'head.fc.weight', 'head.fc.bias', 'block.skip_gain'}
    assert {id(p) for p in wrapper.agc_params()}.isdisjoint(
        {id(p) for n, p in model.named_parameters() if n in excluded})


def test_default_pattern_matching_nothing_warns():
    model = make_model(with_head=False)  # classifier is called "classifier"
    with pytest.warns(UserWarning) as record:
        wrapper = build_optim_wrapper(model, agc_cfg())
    messages = [str(w.message) for w in record]
    assert any('matched no trainable parameter' in m for m in messages), messages
    assert all(g['agc'] for g in wrapper.optimizer.param_groups)


def test_no_exclusion_info_is_an_error():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match='need parameter names'):
        AGCOptimWrapper(optimizer=optimizer, clip_grad=dict(type='agc', clipping=0.01))
    # Built through MMEngine's default constructor without custom_keys: same error.
    cfg = agc_cfg()
    del cfg['constructor']
    with pytest.raises(ValueError, match='need parameter names'):
        build_optim_wrapper(model, cfg)


def test_exclude_empty_warns_and_clips_everything():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match='clips every parameter'):
        wrapper = AGCOptimWrapper(optimizer=optimizer,
                                  clip_grad=dict(type='agc', clipping=0.01, exclude=[]))
    assert len(wrapper.agc_params()) == len(list(model.parameters()))
    loss_fn(model, make_batch(0)).backward()
    raw = model.head.fc.weight.grad.clone()
    wrapper._clip_grad()
    ref, factors = eq3_clip(model.head.fc.weight, raw, 0.01)
    assert min(factors) < 1
    assert_close(model.head.fc.weight.grad, ref)
    with pytest.warns(UserWarning, match='clips every parameter'):
        build_optim_wrapper(make_model(), agc_cfg(exclude=[]))


def test_bad_clip_grad_config():
    model = make_model()
    with pytest.raises(ValueError, match='"agc"'):
        build_optim_wrapper(model, agc_cfg() | dict(clip_grad=dict(type='norm', max_norm=1.)))
    with pytest.raises(KeyError, match='clip_factor'):
        build_optim_wrapper(model, agc_cfg(clip_factor=0.01))
    with pytest.raises(ValueError, match='clipping'):
        build_optim_wrapper(model, agc_cfg(clipping=-1.))


# --------------------------------------------------------------------------------------
# AMP (CPU GradScaler standing in for the CUDA one)
# --------------------------------------------------------------------------------------


def build_amp_wrapper(model: nn.Module, monkeypatch, clipping: float, lr: float,
                      wd: float, **clip_kwargs) -> AmpAGCOptimWrapper:
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.cuda.amp.GradScaler without CUDA
        wrapper = build_optim_wrapper(model, agc_cfg(clipping, lr, wd, 'AmpAGCOptimWrapper',
                                                     **clip_kwargs))
    assert isinstance(wrapper, AmpAGCOptimWrapper)
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.**16)
    return wrapper


@FUSED
def test_amp_clips_unscaled_grads_like_fp32(monkeypatch, fused):
    clipping, lr, wd = 0.02, 0.05, 2e-5
    fp32_model, amp_model = make_model(), make_model()
    fp32 = build_optim_wrapper(fp32_model, agc_cfg(clipping, lr, wd))
    amp = build_amp_wrapper(amp_model, monkeypatch, clipping, lr, wd, fused=fused)
    for step in range(2):
        batch = make_batch(30 + step)
        fp32.update_params(loss_fn(fp32_model, batch))
        fp32_fraction = float(fp32.message_hub.get_scalar('train/agc_clip_fraction').current())
        amp.update_params(loss_fn(amp_model, batch))
        amp_fraction = float(amp.message_hub.get_scalar('train/agc_clip_fraction').current())
        assert amp_fraction == fp32_fraction > 0
        assert_same_params(amp_model, fp32_model)
    assert amp.loss_scaler.get_scale() == 2.**16  # no overflow, nothing skipped


@FUSED
def test_amp_inf_grad_step_is_skipped(monkeypatch, fused):
    model = make_model()
    wrapper = build_amp_wrapper(model, monkeypatch, 0.01, 0.1, 2e-5, fused=fused)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapper.backward(loss_fn(model, make_batch(0)))
    with torch.no_grad():
        model.stem.weight.grad[0, 0, 0, 0] = float('inf')
    wrapper.step()
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        assert torch.equal(p.detach(), before[name]), name
    assert wrapper.loss_scaler.get_scale() == 2.**15  # backed off
    # The next, finite step goes through.
    wrapper.zero_grad()
    wrapper.update_params(loss_fn(model, make_batch(1)))
    assert not torch.equal(model.stem.weight.detach(), before['stem.weight'])
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --------------------------------------------------------------------------------------
# Stability (fast version of tools/experiments/agc_divergence.py)
# --------------------------------------------------------------------------------------


def _load_divergence_experiment():
    import importlib.util
    import os.path as osp
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'experiments',
                    'agc_divergence.py')
    spec = importlib.util.spec_from_file_location('agc_divergence', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agc_prevents_divergence_at_large_lr():
    """Same seed, data and lr (16x the paper's batch-scaled lr): plain SGD blows up, AGC
    trains."""
    experiment = _load_divergence_experiment()
    kwargs = dict(lr=0.2, steps=12, seed=0)
    plain = experiment.train(False, **kwargs)
    clipped = experiment.train(True, **kwargs)
    assert plain.losses[0] == pytest.approx(clipped.losses[0])  # same start
    assert plain.first_bad_step is not None  # non-finite or > 1e3 x the first loss
    assert clipped.first_bad_step is None and clipped.finite
    assert len(clipped.losses) == 12
    assert max(clipped.losses) <= 1.5 * clipped.losses[0]
    assert clipped.losses[-1] < 0.5 * clipped.losses[0]


def test_constructor_merges_groups_with_equal_options():
    """One group per distinct option set (not per parameter), options preserved."""
    model = make_model()
    names = {id(p): n for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, agc_cfg())
    groups = wrapper.optimizer.param_groups
    options = [tuple(sorted((k, repr(v)) for k, v in g.items() if k != 'params'))
               for g in groups]
    assert len(set(options)) == len(groups) < len(names)
    seen = [names[id(p)] for g in groups for p in g['params']]
    assert sorted(seen) == sorted(names.values())  # every parameter exactly once
    by_name = {names[id(p)]: g for g in groups for p in g['params']}
    assert by_name['head.fc.weight']['agc'] is False
    assert by_name['head.fc.weight']['weight_decay'] == 2e-5
    assert by_name['block.skip_gain']['weight_decay'] == 0.0


def test_stacked_same_shape_path_equals_per_tensor_path():
    """The launch-saving GPU strategy (stack equal shapes) gives the same result."""
    from nfnets_mm.engine.optim_wrappers.agc import adaptive_clip_grad_
    torch.manual_seed(3)
    shapes = [(8, 4, 3, 3), (8, 4, 3, 3), (6, 5), (8, 4, 3, 3), (6, 5), (7, ), (), (3, 1, 1, 1),
              (7, ), (), (3, 1, 1, 1)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    grads = [torch.randn(s) * (0.001 if i % 2 else 1.0) for i, s in enumerate(shapes)]
    results = []
    for stack in (False, True):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        stats = adaptive_clip_grad_(params, clipping=0.01, stack_same_shapes=stack)
        results.append(([p.grad.clone() for p in params], stats))
    (per_tensor, s0), (stacked, s1) = results
    for a, b in zip(per_tensor, stacked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert int(s0.clipped_units) == int(s1.clipped_units) and s0.total_units == s1.total_units
    assert 0 < int(s0.clipped_units) < s0.total_units
    torch.testing.assert_close(s0.mean_factor, s1.mean_factor)


def test_nf_no_decay_defaults_can_be_dropped():
    model = make_model()
    names = {id(p): n for n, p in model.named_parameters()}
    cfg = agc_cfg()
    cfg['paramwise_cfg'] = dict(nf_no_decay=False)
    wrapper = build_optim_wrapper(model, cfg)
    decay = {names[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert set(decay.values()) == {2e-5}
    assert 'block.skip_gain' in decay and 'head.fc.bias' in decay


def test_half_precision_vectors_and_repeated_grads():
    """fp16 norms are taken in fp32 (no overflow to a zero factor) and a gradient
    listed twice is clipped once, on both strategies."""
    from nfnets_mm.engine.optim_wrappers.agc import adaptive_clip_grad_
    for stack in (False, True):
        p = torch.nn.Parameter(torch.ones(100_000, dtype=torch.float16))
        p.grad = torch.full_like(p, 300.)
        adaptive_clip_grad_([p], clipping=0.01, stack_same_shapes=stack)
        # ||W|| = 316.2, ||G|| = 94868: factor 0.01 * 316.2 / 94868, grad -> ~0.01
        assert torch.allclose(p.grad.float(), torch.full((100_000, ), 0.01), rtol=1e-2)
        q = torch.nn.Parameter(torch.ones(4, 3))
        q.grad = torch.full_like(q, 10.)
        adaptive_clip_grad_([q, q], clipping=0.01, stack_same_shapes=stack)
        torch.testing.assert_close(q.grad, torch.full((4, 3), 0.01 * 3**0.5 / 3**0.5))


def test_nf_no_decay_keeps_user_paramwise_options():
    """The NF no-decay rule composes with MMEngine's paramwise options instead of
    shadowing them (a short user key, bias_lr_mult)."""
    model = make_model()
    names = {id(p): n for n, p in model.named_parameters()}
    cfg = agc_cfg()
    cfg['paramwise_cfg'] = dict(custom_keys={'head': dict(lr_mult=10.)}, bias_lr_mult=2.)
    wrapper = build_optim_wrapper(model, cfg)
    group_of = {names[id(p)]: g for g in wrapper.optimizer.param_groups for p in g['params']}
    assert group_of['head.fc.bias']['lr'] == pytest.approx(1.0)  # custom key, not bias rule
    assert group_of['head.fc.bias']['weight_decay'] == 0.0  # still a bias
    assert group_of['head.fc.weight']['weight_decay'] == 2e-5
    assert group_of['block.conv.bias']['lr'] == pytest.approx(0.2)  # bias_lr_mult
    assert group_of['block.conv.bias']['weight_decay'] == 0.0
    assert group_of['block.skip_gain']['weight_decay'] == 0.0
    # a user decay_mult on a matching key wins over the NF rule
    cfg['paramwise_cfg'] = dict(custom_keys={'head.fc.bias': dict(decay_mult=1.)})
    model = make_model()
    names = {id(p): n for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, cfg)
    group_of = {names[id(p)]: g for g in wrapper.optimizer.param_groups for p in g['params']}
    assert group_of['head.fc.bias']['weight_decay'] == 2e-5
    assert group_of['block.conv.bias']['weight_decay'] == 0.0


# --------------------------------------------------------------------------------------
# Every dtype a user may train in (issue 9.4)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('dtype, rtol', [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2),
                                         (torch.float32, 2e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize('stack', [False, True])
def test_every_real_dtype_clips_like_eq3(dtype, rtol, stack):
    """fp16/bf16 norms in fp32, fp32 in fp32, fp64 in fp64 (an fp32 norm of an fp64
    tensor would miss the 1e-12 tolerance), for conv, linear, vector and scalar units."""
    from nfnets_mm.engine.optim_wrappers.agc import agc_reference
    shapes = [(6, 4, 3, 3), (5, 7), (9, ), ()]
    params = []
    for i, shape in enumerate(shapes):
        p = _param(shape, scale=1.0, grad_scale=0.2, seed=40 + i)
        params.append(nn.Parameter(p.detach().to(dtype)))
        params[-1].grad = p.grad.to(dtype)
    raw = [p.grad.clone() for p in params]
    stats = adaptive_clip_grad_(params, clipping=0.2, stack_same_shapes=stack)
    assert bool(stats.all_finite)
    assert 0 < int(stats.clipped_units) < stats.total_units  # a real mix of units
    for p, g in zip(params, raw):
        expected, _ = eq3_clip(p, g, 0.2)
        assert p.grad.dtype == dtype
        torch.testing.assert_close(p.grad.double(), expected.double(), rtol=rtol, atol=0)
        torch.testing.assert_close(agc_reference(p, g, 0.2).double(), expected.double(),
                                   rtol=rtol, atol=0)


@pytest.mark.parametrize('stack', [False, True])
def test_complex_parameters_clip_by_modulus(stack):
    """Complex units: the norm is sqrt(sum |z|^2), the factor real, the phase kept."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 6, dtype=torch.complex128, generator=gen)
    g = torch.randn(4, 6, dtype=torch.complex128, generator=gen) * 0.3
    p = nn.Parameter(w.clone())
    p.grad = g.clone()
    adaptive_clip_grad_([p], clipping=0.05, stack_same_shapes=stack)
    w_norm = w.abs().pow(2).sum(1).sqrt().clamp_min(1e-3)
    g_norm = g.abs().pow(2).sum(1).sqrt()
    factor = torch.where(g_norm > 0.05 * w_norm, 0.05 * w_norm / g_norm,
                         torch.ones_like(g_norm))
    assert (factor < 1).any()
    torch.testing.assert_close(p.grad, g * factor[:, None], rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------
# Non-finite gradients (issue 9.3)
# --------------------------------------------------------------------------------------


def _snapshot(model, wrapper):
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            copy.deepcopy(wrapper.optimizer.state_dict()))


def _poisoned_backward(wrapper, model, batch, where='stem.weight', value=float('nan')):
    wrapper.backward(loss_fn(model, batch))
    with torch.no_grad():
        dict(model.named_parameters())[where].grad.view(-1)[0] = value


def _scalar(wrapper, key):
    return float(wrapper.message_hub.get_scalar(key).current())


@pytest.mark.parametrize('where, value', [('stem.weight', float('nan')),
                                          ('block.skip_gain', float('inf')),
                                          ('head.fc.weight', float('nan'))])
@FUSED
def test_fp32_nonfinite_update_is_skipped_and_never_looks_healthy(where, value, fused):
    """A NaN/Inf gradient anywhere (head.fc.weight is excluded from AGC) skips the update:
    weights and momentum unchanged, statistics NaN, ``agc_skipped`` 1; the next finite
    update goes through and is exactly what it would have been without the bad batch."""
    model, twin = make_model(), make_model()
    wrapper = build_optim_wrapper(model, agc_cfg(0.02, 0.05, 2e-5, fused=fused))
    twin_wrapper = build_optim_wrapper(twin, agc_cfg(0.02, 0.05, 2e-5))
    wrapper.update_params(loss_fn(model, make_batch(0)))
    twin_wrapper.update_params(loss_fn(twin, make_batch(0)))
    params, optim_state = _snapshot(model, wrapper)

    _poisoned_backward(wrapper, model, make_batch(1), where, value)
    wrapper.step()
    wrapper.zero_grad()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params[name]), name
    _assert_same_state(wrapper.optimizer.state_dict(), optim_state)
    assert math.isnan(_scalar(wrapper, 'train/agc_clip_fraction'))
    assert math.isnan(_scalar(wrapper, 'train/agc_mean_factor'))
    assert _scalar(wrapper, 'train/agc_skipped') == 1
    assert wrapper.consecutive_skips == wrapper.skipped_updates == 1

    wrapper.update_params(loss_fn(model, make_batch(2)))
    twin_wrapper.update_params(loss_fn(twin, make_batch(2)))
    assert _scalar(wrapper, 'train/agc_skipped') == 0
    assert 0 <= _scalar(wrapper, 'train/agc_clip_fraction') <= 1
    assert wrapper.consecutive_skips == 0 and wrapper.skipped_updates == 1
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p.detach(), q.detach()), name


def _assert_same_state(a, b):
    for (k, x), (_, y) in zip(sorted(a['state'].items()), sorted(b['state'].items())):
        for key in x:
            assert torch.equal(torch.as_tensor(x[key]), torch.as_tensor(y[key])), (k, key)
    assert a['param_groups'] == b['param_groups']


def test_consecutive_nonfinite_updates_stop_training_with_a_clear_error():
    from nfnets_mm.engine.optim_wrappers import NonFiniteGradientError
    model = make_model()
    wrapper = build_optim_wrapper(model, agc_cfg(max_consecutive_skips=3))
    wrapper.update_params(loss_fn(model, make_batch(0)))
    params, _ = _snapshot(model, wrapper)
    for step in range(2):  # two skips, then a finite update resets the count
        _poisoned_backward(wrapper, model, make_batch(1 + step))
        wrapper.step()
        wrapper.zero_grad()
    assert wrapper.consecutive_skips == 2
    wrapper.update_params(loss_fn(model, make_batch(5)))
    assert wrapper.consecutive_skips == 0
    params, _ = _snapshot(model, wrapper)
    for step in range(2):
        _poisoned_backward(wrapper, model, make_batch(10 + step))
        wrapper.step()
        wrapper.zero_grad()
    _poisoned_backward(wrapper, model, make_batch(20))
    with pytest.raises(NonFiniteGradientError, match='3 consecutive updates.*max_consecutive'):
        wrapper.step()
    assert wrapper.skipped_updates == 5
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params[name]), name


def test_nonfinite_loss_in_a_runner_keeps_the_weights_finite(tmp_path):
    """End to end through MMEngine's loop: a NaN batch mid-run is skipped, training
    continues, every logged loss after it is finite, and the final weights are finite."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class NanOnBatch(BaseModel):

        def __init__(self):
            super().__init__()
            self.net = make_model()

        def forward(self, x, y, mode='loss'):
            return dict(loss=loss_fn(self.net, (x, y)))

    class Data(torch.utils.data.Dataset):

        def __len__(self):
            return 8

        def __getitem__(self, i):
            x, y = make_batch(100 + i, n=1)
            if i == 3:
                x = x * float('nan')
            return dict(x=x[0], y=y[0])

    runner = Runner(
        model=NanOnBatch(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=Data(), batch_size=1, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        optim_wrapper=agc_cfg(0.05, 0.05, 2e-5, exclude=['net.head.fc.weight']),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=1)),
        default_scope='mmpretrain', log_level='WARNING',
        experiment_name=f'nan_skip_{tmp_path.name}')
    runner.train()
    wrapper = runner.optim_wrapper
    assert wrapper.skipped_updates == 2  # sample 3 in each epoch
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    skipped = wrapper.message_hub.get_scalar('train/agc_skipped')
    assert skipped.data[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0] * 2


@FUSED
def test_accumulated_update_with_one_nan_micro_batch_is_skipped_once(fused):
    """``accumulative_counts=2``: a NaN in one micro-batch poisons the summed gradient; the
    whole update is skipped and counted once, and the next update is unaffected."""
    model, twin = make_model(), make_model()
    cfg = agc_cfg(0.02, 0.05, 2e-5, fused=fused)
    cfg['accumulative_counts'] = 2
    wrapper, twin_wrapper = build_optim_wrapper(model, cfg), build_optim_wrapper(twin, cfg)
    params, _ = _snapshot(model, wrapper)
    x, y = make_batch(0)
    wrapper.update_params(loss_fn(model, (x * float('nan'), y)))  # micro-batch 1 of 2
    assert wrapper.skipped_updates == 0  # not an update yet
    wrapper.update_params(loss_fn(model, make_batch(1)))
    assert wrapper.skipped_updates == 1 and wrapper.consecutive_skips == 1
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params[name]), name
    twin_wrapper.update_params(loss_fn(twin, make_batch(2)))  # the twin skips nothing
    twin_wrapper.update_params(loss_fn(twin, make_batch(3)))
    wrapper.update_params(loss_fn(model, make_batch(2)))
    wrapper.update_params(loss_fn(model, make_batch(3)))
    assert wrapper.skipped_updates == 1 and wrapper.consecutive_skips == 0
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p.detach(), q.detach()), name


def test_max_consecutive_skips_validated():
    model = make_model()
    for bad in (0, -1, 2.5, True, 'x'):
        with pytest.raises(ValueError, match='max_consecutive_skips'):
            build_optim_wrapper(model, agc_cfg(max_consecutive_skips=bad))
    wrapper = build_optim_wrapper(model, agc_cfg(max_consecutive_skips=None))
    for step in range(30):  # None: never stops
        _poisoned_backward(wrapper, model, make_batch(step))
        wrapper.step()
        wrapper.zero_grad()
    assert wrapper.consecutive_skips == 30


@FUSED
def test_amp_overflow_is_counted_and_logged_as_skipped(monkeypatch, fused):
    model = make_model()
    wrapper = build_amp_wrapper(model, monkeypatch, 0.01, 0.1, 2e-5, fused=fused)
    _poisoned_backward(wrapper, model, make_batch(0), value=float('inf'))
    wrapper.step()
    wrapper.zero_grad()
    assert wrapper.loss_scaler.get_scale() == 2.**15  # the scaler skipped it
    assert wrapper.skipped_updates == 1
    assert _scalar(wrapper, 'train/agc_skipped') == 1
    assert math.isnan(_scalar(wrapper, 'train/agc_clip_fraction'))
    wrapper.update_params(loss_fn(model, make_batch(1)))
    assert _scalar(wrapper, 'train/agc_skipped') == 0 and wrapper.consecutive_skips == 0


# --------------------------------------------------------------------------------------
# Statistics per unit kind (issue 12: SkipInit x AGC made visible)
# --------------------------------------------------------------------------------------

KIND_SHAPES = {'weights': [(8, 4, 3, 3), (6, 5)], 'gains_biases': [(7, ), (5, 1)],
               'skip_gains': [(), (1, )]}


def _kind_params():
    """Parameters of every kind, with a zero skip gain (the eps floor clips it) and a mix
    of clipped and unclipped units elsewhere; listed in a shuffled kind order."""
    params = {}
    for kind, shapes in KIND_SHAPES.items():
        params[kind] = [_param(s, seed=10 + i) for i, s in enumerate(shapes)]
    params['weights'][0].grad[::2] *= 1e-4
    params['gains_biases'][0].grad *= 1e-4
    with torch.no_grad():
        params['skip_gains'][0].zero_()  # SkipInit: norm 0, capped at clipping * eps
    params['skip_gains'][0].grad.fill_(1e-2)
    params['skip_gains'][1].grad.fill_(1e-6)  # tiny: not clipped
    order = [params['gains_biases'][1], params['weights'][0], params['skip_gains'][0],
             params['gains_biases'][0], params['skip_gains'][1], params['weights'][1]]
    return params, order


def _expected_kind_stats(params, clipping, eps=1e-3):
    clipped, units, ratios = {}, {}, []
    for kind, plist in params.items():
        factors = []
        for p in plist:
            factors += eq3_clip(p, p.grad, clipping, eps)[1]
            single = sum(1 for s in p.shape if s > 1) <= 1
            w = p.detach().double().reshape(1 if single else p.shape[0], -1)
            g = p.grad.double().reshape(1 if single else p.shape[0], -1)
            ratios += (g.norm(dim=1) / (clipping * w.norm(dim=1).clamp_min(eps))).tolist()
        clipped[kind] = sum(f < 1 for f in factors)
        units[kind] = len(factors)
    return clipped, units, max(ratios)


@pytest.mark.parametrize('stack', [False, True])
def test_clip_statistics_per_unit_kind_and_max_ratio(stack):
    from nfnets_mm.engine.optim_wrappers.agc import UNIT_KINDS
    clipping = 0.05
    params, order = _kind_params()
    clipped, units, max_ratio = _expected_kind_stats(params, clipping)
    assert clipped['skip_gains'] == 1 and 0 < clipped['weights'] < units['weights']
    stats = adaptive_clip_grad_(order, clipping=clipping, stack_same_shapes=stack)
    assert stats.units_by_kind == tuple(units[k] for k in UNIT_KINDS)
    assert stats.clipped_by_kind.tolist() == [clipped[k] for k in UNIT_KINDS]
    assert int(stats.clipped_units) == sum(clipped.values())
    # the zero skip gain's ratio: 1e-2 / (0.05 * 1e-3) = 200
    assert max_ratio == pytest.approx(200.)
    assert float(stats.max_clip_ratio) == pytest.approx(max_ratio, rel=1e-5)


@FUSED
def test_wrapper_logs_clip_fraction_per_kind_in_one_host_read(monkeypatch, fused):
    """A zero-initialised skip gain (SkipInit) is clipped by the eps floor every step: the
    per-kind fraction shows it although the unit-weighted overall fraction is small."""
    model = make_model()
    with torch.no_grad():
        model.block.skip_gain.zero_()
    wrapper = build_optim_wrapper(model, agc_cfg(0.01, fused=fused))
    reads = []
    original = torch.Tensor.tolist

    def counting_tolist(self):
        reads.append(self.numel())
        return original(self)

    batch = make_batch(3)
    monkeypatch.setattr(torch.Tensor, 'tolist', counting_tolist)
    wrapper.update_params(loss_fn(model, batch))
    monkeypatch.undo()
    assert len(reads) == 1  # the flag and every statistic in one read
    hub = wrapper.message_hub
    for kind in ('weights', 'gains_biases', 'skip_gains'):
        assert f'train/agc_clip_fraction_{kind}' in hub.log_scalars
    assert _scalar(wrapper, 'train/agc_clip_fraction_skip_gains') == 1.0
    assert _scalar(wrapper, 'train/agc_max_clip_ratio') > 1
    # against the reference on the same gradients (recomputed on an unclipped twin)
    twin = make_model()
    with torch.no_grad():
        twin.block.skip_gain.zero_()
    loss_fn(twin, batch).backward()
    named = dict(twin.named_parameters())
    groups = {'weights': ['stem.weight', 'block.conv.weight'],
              'gains_biases': ['stem.bias', 'stem.gain', 'block.conv.bias', 'block.conv.gain',
                               'head.fc.bias'],
              'skip_gains': ['block.skip_gain']}
    clipped, units, max_ratio = _expected_kind_stats(
        {k: [named[n] for n in names] for k, names in groups.items()}, 0.01)
    for kind in groups:
        assert _scalar(wrapper, f'train/agc_clip_fraction_{kind}') == pytest.approx(
            clipped[kind] / units[kind])
    assert _scalar(wrapper, 'train/agc_max_clip_ratio') == pytest.approx(max_ratio, rel=1e-4)
    overall = _scalar(wrapper, 'train/agc_clip_fraction')
    assert overall == pytest.approx(sum(clipped.values()) / sum(units.values()))


def test_skipped_update_logs_nan_for_every_kind():
    model = make_model()
    wrapper = build_optim_wrapper(model, agc_cfg(0.02, 0.05, 2e-5))
    _poisoned_backward(wrapper, model, make_batch(1))
    wrapper.step()
    for key in ('agc_clip_fraction_weights', 'agc_clip_fraction_gains_biases',
                'agc_clip_fraction_skip_gains', 'agc_max_clip_ratio'):
        assert math.isnan(_scalar(wrapper, f'train/{key}')), key
