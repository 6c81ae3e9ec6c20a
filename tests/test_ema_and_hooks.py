"""DeepMindEMA (NFNet EMA with TF1 warmup), WarmupEMAHook, PlotCurveHook, WeightDigestHook."""
import json
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.registry import HOOKS, MODELS

import nfnets_mm  # noqa: F401
from nfnets_mm.engine import DeepMindEMA
from nfnets_mm.engine.hooks import PlotCurveHook, read_scalars, state_dict_digest


def deepmind_ema(init, sequence, decay=0.99999):
    """DeepMind's recursion: ema_0 = w_0; ema = d_t ema + (1 - d_t) w_{t+1}."""
    ema = init.clone().double()
    for t, w in enumerate(sequence):
        d = min(decay, (1. + t) / (10. + t))
        ema = ema * d + w.double() * (1 - d)
    return ema


def weight_sequence(steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 3, generator=gen) for _ in range(steps)]


def test_synced_ema_matches_deepmind_exactly():
    model = nn.Linear(3, 5, bias=False)
    init = model.weight.detach().clone()
    ema = DeepMindEMA(model, momentum=1e-5)
    ema.sync(model)
    seq = weight_sequence(40)
    for w in seq:
        model.weight.data.copy_(w)
        ema.update_parameters(model)
    assert torch.allclose(ema.module.weight.double(), deepmind_ema(init, seq), atol=1e-6)
    assert int(ema.steps) == 40
    assert ema.momentum_at(0) == pytest.approx(0.9)
    assert ema.momentum_at(10 ** 7) == pytest.approx(1e-5)


def test_unsynced_ema_copies_first_then_follows_the_warmup():
    model = nn.Linear(3, 5, bias=False)
    ema = DeepMindEMA(model, momentum=1e-5)
    seq = weight_sequence(6, seed=1)
    model.weight.data.copy_(seq[0])
    ema.update_parameters(model)
    assert torch.equal(ema.module.weight, seq[0])  # MMEngine's first-update copy
    expected = seq[0].double()
    for t, w in enumerate(seq[1:], start=1):
        model.weight.data.copy_(w)
        ema.update_parameters(model)
        d = (1. + t) / (10. + t)
        expected = expected * d + w.double() * (1 - d)
    assert torch.allclose(ema.module.weight.double(), expected, atol=1e-6)


def test_no_warmup_is_plain_ema():
    model = nn.Linear(2, 2)
    ema = DeepMindEMA(model, momentum=0.1, warmup=False)
    assert ema.momentum_at(0) == ema.momentum_at(5) == 0.1


def test_warmup_ema_hook_syncs_the_initialised_weights():
    model = nn.Linear(3, 5)
    hook = HOOKS.build(dict(type='NFWarmupEMAHook', ema_type='NFDeepMindEMA', momentum=1e-5))
    runner = SimpleNamespace(model=model, max_iters=10, max_epochs=1)
    hook.before_run(runner)  # copies the not yet initialised model
    nn.init.constant_(model.weight, 3.)  # the runner initialises weights after before_run
    hook.before_train(runner)
    assert isinstance(hook.ema_model, DeepMindEMA) and hook.ema_model.synced
    assert torch.equal(hook.ema_model.module.weight, model.weight)
    model.weight.data.fill_(5.)
    hook.after_train_iter(SimpleNamespace(iter=0, epoch=0), 0)
    # First update averages with the initial weights: 0.1 * 3 + 0.9 * 5.
    assert torch.allclose(hook.ema_model.module.weight, torch.full((5, 3), 4.8))
    assert MODELS.get('NFDeepMindEMA') is DeepMindEMA


def test_plot_curve_hook_reads_scalars_and_writes_png(tmp_path):
    lines = [dict(lr=0.1, loss=2.0, agc_clip_fraction=0.3, iter=1, step=1, time=1.),
             dict(lr=0.2, loss=1.5, agc_clip_fraction=0.2, iter=2, step=2, time=1.),
             {'accuracy/top1': 40.0, 'step': 1}]
    path = tmp_path / 'scalars.json'
    path.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    train, val = read_scalars(str(path))
    assert train['loss'] == ([1, 2], [2.0, 1.5]) and 'time' not in train
    assert val == {'accuracy/top1': ([1], [40.0])}
    hook = PlotCurveHook()
    keys = hook._select(train)
    assert keys == ['loss', 'lr', 'agc_clip_fraction']
    out = hook.plot(train, val, keys, ['accuracy/top1'], str(tmp_path / 'c.png'))
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(ValueError, match='.png'):
        PlotCurveHook(out_file='curves.jpg')


def test_state_dict_digest_sees_every_element():
    sd = {'a': torch.arange(6.).view(2, 3), 'gain': torch.tensor(0.5)}
    same = {k: v.clone() for k, v in sd.items()}
    assert state_dict_digest(sd) == state_dict_digest(same)
    same['gain'] += 1e-7
    assert state_dict_digest(sd) != state_dict_digest(same)
    reshaped = {'a': sd['a'].view(3, 2), 'gain': sd['gain']}
    assert state_dict_digest(sd) != state_dict_digest(reshaped)
