"""AGC under DDP: clipping must act on the all-reduced (averaged) gradient.

Two CPU processes (gloo) train the same tiny model wrapped in MMEngine's
``MMDistributedDataParallel`` on *different* data with an ``AGCOptimWrapper``.  Both
ranks must end with identical parameters equal to a single-process run that averages
the two ranks' gradients first and clips afterwards (Eq. 3 written out here).
"""
import math
import os
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from conftest import free_port

WORLD_SIZE = 2
STEPS = 2
CLIPPING = 0.02
LR = 0.05
WEIGHT_DECAY = 2e-5
NO_DECAY = ('stem.bias', 'stem.gain', 'skip_gain', 'head.fc.bias')
EXCLUDED = ('head.fc.weight', )


class TinyNF(nn.Module):
    """Gained conv stem, a residual branch with a scalar skip gain and ``head.fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.stem.gain = nn.Parameter(torch.ones(6))
        self.branch = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.skip_gain = nn.Parameter(torch.full((), 0.5))
        self.head = nn.Module()
        self.head.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 4)."""
        x = F.relu(self.stem(x) * self.stem.gain.view(1, -1, 1, 1))
        x = x + self.skip_gain * F.relu(self.branch(x))
        return self.head.fc(x.mean((2, 3)))


def make_model() -> TinyNF:
    torch.manual_seed(0)
    return TinyNF()


def make_batch(step: int, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + rank)
    scale = 1.0 + 3.0 * rank  # ranks see clearly different data
    return (torch.randn(4, 3, 5, 5, generator=gen) * scale,
            torch.randint(0, 4, (4, ), generator=gen))


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y) * 10.0


def eq3_clip(param: torch.Tensor, grad: torch.Tensor, clipping: float, eps: float = 1e-3,
             grad_eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3 unit by unit in float64 (a tensor with <= 1 non-singleton dim is one unit)."""
    single = sum(1 for s in param.shape if s > 1) <= 1
    w = param.detach().double()
    g = grad.detach().double()
    w = w.reshape(1, -1) if single else w.reshape(w.shape[0], -1)
    g = g.reshape(1, -1) if single else g.reshape(g.shape[0], -1)
    out = g.clone()
    for i in range(w.shape[0]):
        w_norm = max(math.sqrt(float((w[i] ** 2).sum())), eps)
        g_norm = math.sqrt(float((g[i] ** 2).sum()))
        if g_norm / w_norm > clipping:
            out[i] *= clipping * w_norm / max(g_norm, grad_eps)
    return out.reshape(grad.shape).to(grad.dtype)


def optim_cfg() -> dict:
    return dict(
        type='AGCOptimWrapper',
        constructor='AGCOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=LR, momentum=0.9, nesterov=True,
                       weight_decay=WEIGHT_DECAY),
        clip_grad=dict(type='agc', clipping=CLIPPING, exclude=list(EXCLUDED)))


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One DDP rank: train ``STEPS`` steps on its own data, save params and stats."""
    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        from mmengine.model import MMDistributedDataParallel
        from mmengine.optim import build_optim_wrapper

        import nfnets_mm  # noqa: F401  (registers the AGC wrapper and constructor)
        model = make_model()
        ddp = MMDistributedDataParallel(module=model)
        wrapper = build_optim_wrapper(ddp, optim_cfg())
        fractions = []
        for step in range(STEPS):
            with wrapper.optim_context(ddp):
                loss = loss_fn(ddp, make_batch(step, rank))
            wrapper.update_params(loss)
            fractions.append(
                float(wrapper.message_hub.get_scalar('train/agc_clip_fraction').current()))
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        # Then a NaN batch on rank 1 only: the all-reduced gradient is NaN on both ranks,
        # so both skip the update (and stay in sync), and the next clean step goes on.
        x, y = make_batch(STEPS, rank)
        if rank == 1:
            x = x * float('nan')
        with wrapper.optim_context(ddp):
            loss = loss_fn(ddp, (x, y))
        wrapper.update_params(loss)
        after_nan = {n: p.detach().clone() for n, p in model.named_parameters()}
        skipped = (wrapper.skipped_updates,
                   float(wrapper.message_hub.get_scalar('train/agc_skipped').current()))
        with wrapper.optim_context(ddp):
            loss = loss_fn(ddp, make_batch(STEPS + 1, rank))
        wrapper.update_params(loss)
        final = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save(dict(params=params, fractions=fractions, after_nan=after_nan,
                        skipped=skipped, final=final), os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def single_process_run(clip_after_reduce: bool) -> Dict[str, torch.Tensor]:
    """Average the ranks' gradients, clip (after or, for contrast, before), step SGD."""
    model = make_model()
    named = dict(model.named_parameters())
    optimizer = torch.optim.SGD(
        [dict(params=[p for n, p in named.items() if n not in NO_DECAY],
              weight_decay=WEIGHT_DECAY),
         dict(params=[p for n, p in named.items() if n in NO_DECAY], weight_decay=0.)],
        lr=LR, momentum=0.9, nesterov=True)
    for step in range(STEPS):
        per_rank: List[Dict[str, torch.Tensor]] = []
        for rank in range(WORLD_SIZE):
            model.zero_grad()
            loss_fn(model, make_batch(step, rank)).backward()
            grads = {n: p.grad.clone() for n, p in named.items()}
            if not clip_after_reduce:
                grads = {n: g if n in EXCLUDED else eq3_clip(named[n], g, CLIPPING)
                         for n, g in grads.items()}
            per_rank.append(grads)
        for name, p in named.items():
            mean = sum(g[name] for g in per_rank) / WORLD_SIZE
            if clip_after_reduce and name not in EXCLUDED:
                mean = eq3_clip(p, mean, CLIPPING)
            p.grad = mean
        optimizer.step()
    return {n: p.detach().clone() for n, p in named.items()}


def test_agc_clips_all_reduced_gradient(tmp_path):
    mp.spawn(_worker, args=(WORLD_SIZE, free_port(), str(tmp_path)), nprocs=WORLD_SIZE,
             join=True)
    results = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD_SIZE)]
    params0, params1 = results[0]['params'], results[1]['params']
    # Both ranks hold the same model.
    assert params0.keys() == params1.keys()
    for name in params0:
        assert torch.equal(params0[name], params1[name]), name
    # Clipping actually happened on every step and rank.
    for result in results:
        assert all(f > 0 for f in result['fractions'])
    # Equal to clipping the averaged gradient ...
    expected = single_process_run(clip_after_reduce=True)
    for name, value in expected.items():
        torch.testing.assert_close(params0[name], value, rtol=1e-5, atol=1e-7, msg=name)
    # ... and not to averaging per-rank clipped gradients (the test can tell them apart).
    before = single_process_run(clip_after_reduce=False)
    assert any(not torch.allclose(params0[n], before[n], rtol=1e-4, atol=1e-6) for n in before)
    # The initial model moved.
    init = dict(make_model().named_parameters())
    assert any(not torch.equal(params0[n], init[n].detach()) for n in init)
    # A NaN batch on one rank: both ranks skipped that update and are still identical.
    for result in results:
        assert result['skipped'] == (1, 1.0)
        for name in params0:
            assert torch.equal(result['after_nan'][name], params0[name]), name
            assert torch.isfinite(result['final'][name]).all(), name
    for name in params0:
        assert torch.equal(results[0]['final'][name], results[1]['final'][name]), name
    assert any(not torch.equal(results[0]['final'][n], params0[n]) for n in params0)
