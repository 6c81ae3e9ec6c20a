"""Benchmark nfnets_mm's Adaptive Gradient Clipping on NFNet-F0's parameters.

Times :func:`nfnets_mm.engine.optim_wrappers.adaptive_clip_grad_` against timm's
``timm.utils.agc.adaptive_clip_grad`` in the same process on the same parameters
(NFNet-F0 backbone + a 1000-class ``head.fc``; ``head.fc.weight`` excluded from both, as
in the paper), checks that both clip to the same gradients, and relates the cost to one
F0 training step (forward + backward + SGD) at the demo resolution.

Timings: ``--warmup`` untimed calls, then the median (and min) of ``--repeats`` calls.
Threads: ``torch.set_num_threads(--threads)``; the default keeps PyTorch's own choice
(the number of cores) and the value used is printed.

Example::

    python tools/benchmark_agc.py
    python tools/benchmark_agc.py --threads 2 --repeats 20 --out docs/benchmarks.md
"""
import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from nfnets_mm.engine.optim_wrappers import adaptive_clip_grad_  # noqa: E402
from nfnets_mm.engine.optim_wrappers.agc import is_single_unit  # noqa: E402
from nfnets_mm.models.backbones import NFNet  # noqa: E402

SECTION = '## AGC'
#: Targets from the task (reported, never asserted).
TARGET_VS_TIMM = 0.5
TARGET_VS_STEP = 0.03


class Classifier(nn.Module):
    """NFNet backbone + global average pool + ``head.fc`` (MMPretrain's names)."""

    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        self.backbone = NFNet(arch=arch)
        self.head = nn.Module()
        self.head.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> logits (N, num_classes)."""
        return self.head.fc(self.backbone(x)[-1].mean((2, 3)))


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='F0', help='NFNet arch (default F0).')
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--clipping', type=float, default=0.01, help='AGC lambda.')
    parser.add_argument('--warmup', type=int, default=3, help='Untimed calls first.')
    parser.add_argument('--repeats', type=int, default=15, help='Timed AGC calls (median).')
    parser.add_argument('--train-steps', type=int, default=5,
                        help='Timed train steps (median), after one untimed step.')
    parser.add_argument('--img-size', type=int, default=64, help='Train step resolution.')
    parser.add_argument('--batch-size', type=int, default=8, help='Train step batch.')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads value (default: PyTorch\'s choice).')
    parser.add_argument('--skip-timm', action='store_true',
                        help='Do not compare with timm (when it is not installed).')
    parser.add_argument('--profile', action='store_true',
                        help='Print a torch.profiler table of one adaptive_clip_grad_ call.')
    parser.add_argument('--out', default=None,
                        help=f'Markdown file to append the "{SECTION}" section to (an existing '
                        'section of that name is replaced, the rest of the file is kept).')
    args = parser.parse_args(argv)
    for name in ('warmup', 'repeats', 'train_steps', 'img_size', 'batch_size'):
        if getattr(args, name) < (0 if name == 'warmup' else 1):
            parser.error(f'--{name.replace("_", "-")} must be positive, got '
                         f'{getattr(args, name)}.')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}.')
    if args.out is not None and not args.out.endswith('.md'):
        parser.error(f'--out must be a markdown file (*.md), got {args.out!r}.')
    return args


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> List[float]:
    """Seconds per call of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns: Dict[str, Callable[[], object]], warmup: int,
                     repeats: int) -> Dict[str, List[float]]:
    """Seconds per call of each function, calls alternating round by round.

    Alternating makes a change in machine load hit every contender alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def fill_grads(params: List[nn.Parameter], seed: int = 0) -> None:
    """Random grads whose per-tensor ratio ``||G|| / ||W||`` spans 1e-4 ... 1e0.

    So that with lambda = 0.01 some units are clipped and some are not.
    """
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        g = torch.randn(p.shape, generator=gen)
        rel = 10 ** (-4 * torch.rand((), generator=gen))
        scale = rel * max(p.detach().norm().item(), 1e-3) / max(g.norm().item(), 1e-12)
        p.grad = g * scale


def compare_with_timm(params: List[nn.Parameter], timm_clip: Callable,
                      clipping: float) -> Dict[str, float]:
    """Clip the same grads with both; report differences (timm decides units by ndim)."""
    raw = [p.grad.clone() for p in params]
    adaptive_clip_grad_(params, clipping=clipping)
    ours = [p.grad.clone() for p in params]
    for p, g in zip(params, raw):
        p.grad = g.clone()
    timm_clip(params, clip_factor=clipping, eps=1e-3)
    theirs = [p.grad for p in params]
    # Tensors where the unit definitions differ: >= 2-D with <= 1 non-singleton dim
    # (e.g. a (O, 1, 1, 1) gain): one unit for us (DeepMind), O units for timm.
    differing = [i for i, p in enumerate(params) if is_single_unit(p) != (p.ndim <= 1)]
    max_abs = max_rel = 0.
    clipped_tensors = 0
    for i, (a, b, g) in enumerate(zip(ours, theirs, raw)):
        if i in differing:
            continue
        diff = (a - b).abs().max().item()
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / max(g.abs().max().item(), 1e-30))
        clipped_tensors += int(not torch.equal(a, g))
    for p, g in zip(params, raw):
        p.grad = g
    return dict(max_abs=max_abs, max_rel=max_rel, differing=len(differing),
                clipped_tensors=clipped_tensors, tensors=len(params))


def train_step_times(model: Classifier, args: argparse.Namespace) -> List[float]:
    """Seconds of forward + backward + SGD step at ``img_size`` x ``batch_size``."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=2e-5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=gen)
    y = torch.randint(0, args.num_classes, (args.batch_size, ), generator=gen)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    times = time_calls(step, 1, args.train_steps)
    optimizer.zero_grad(set_to_none=True)
    return times


def profile_ours(params: List[nn.Parameter], clipping: float) -> str:
    from torch.profiler import ProfilerActivity, profile
    adaptive_clip_grad_(params, clipping=clipping)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        adaptive_clip_grad_(params, clipping=clipping)
    return prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=12)


def floors(params: List[nn.Parameter],
           args: argparse.Namespace) -> Dict[str, Tuple[float, float]]:
    """Memory-bound floors: the least any AGC must do is read W and G and rewrite G."""
    grads = [p.grad for p in params]
    weights = [p.detach() for p in params]
    norms = time_calls(lambda: (torch._foreach_norm(weights), torch._foreach_norm(grads)),
                       args.warmup, args.repeats)
    mul = time_calls(lambda: torch._foreach_mul_(grads, 1.0), args.warmup, args.repeats)
    return dict(norms=(statistics.median(norms), min(norms)),
                mul=(statistics.median(mul), min(mul)))


def render(args: argparse.Namespace, info: Dict[str, object], rows: List[Tuple]) -> str:
    lines = [
        SECTION, '',
        'Adaptive Gradient Clipping on the parameters of NFNet-'
        f'{args.arch} + a {args.num_classes}-class `head.fc` '
        f'({info["numel"] / 1e6:.1f}M parameters in {info["tensors"]} tensors; '
        '`head.fc.weight` excluded), gradients filled at random.', '',
        f'Command: `{info["command"]}`', '',
        f'- Machine: {info["machine"]}; torch {torch.__version__}; '
        f'`torch.set_num_threads({info["threads"]})`; load average before the run '
        f'{info["load_before"]}, after {info["load_after"]} (the machine is shared with '
        'other jobs, so absolute times are noisy).',
        f'- Timing: {args.warmup} warm-up calls, then median (min) of {args.repeats} calls, '
        'ours and timm alternating call by call; '
        f'train step: median (min) of {args.train_steps} steps after one warm-up, batch '
        f'{args.batch_size} at {args.img_size}x{args.img_size}, SGD Nesterov + weight decay.',
        '',
        '| what | median ms | min ms | relative |',
        '|---|---:|---:|---|',
    ]
    for name, med, low, rel in rows:
        lines.append(f'| {name} | {med * 1e3:.1f} | {low * 1e3:.1f} | {rel} |')
    lines.append('')
    lines.extend(info['notes'])
    lines.append('')
    return '\n'.join(lines)


def write_section(path: str, section: str) -> str:
    """Replace the ``## AGC`` section of ``path`` (exact heading) or append it."""
    text = ''
    if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            text = f.read()
    pattern = re.compile(r'^## AGC[ \t]*\n.*?(?=^## |\Z)', re.S | re.M)
    if pattern.search(text):
        new = pattern.sub(lambda _: section + '\n', text, count=1)
        action = 'replaced'
    else:
        if not text:
            text = '# Benchmarks\n'
        new = text.rstrip('\n') + '\n\n' + section
        action = 'appended'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(new if new.endswith('\n') else new + '\n')
    return action


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    timm_clip = None
    if not args.skip_timm:
        try:
            from timm.utils.agc import adaptive_clip_grad as timm_clip
        except ImportError as e:
            raise SystemExit(f'timm is needed for the comparison ({e}); install the test '
                             'extra or pass --skip-timm.')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = ', '.join(f'{x:.2f}' for x in os.getloadavg())
    torch.manual_seed(0)
    model = Classifier(args.arch, args.num_classes)
    named = list(model.named_parameters())
    params = [p for n, p in named if n != 'head.fc.weight']
    numel = sum(p.numel() for _, p in named)

    # Train step first (its grads are discarded), then random grads for AGC.
    step = train_step_times(model, args)
    fill_grads(params)
    model.head.fc.weight.grad = None

    check = None
    if timm_clip is not None:
        check = compare_with_timm(params, timm_clip, args.clipping)
    stats = adaptive_clip_grad_([p for p in params], clipping=args.clipping)
    fill_grads(params)  # re-fill: the stats call above clipped them

    contenders = dict(ours=lambda: adaptive_clip_grad_(params, clipping=args.clipping))
    if timm_clip is not None:
        contenders['timm'] = lambda: timm_clip(params, clip_factor=args.clipping, eps=1e-3)
    timed = time_interleaved(contenders, args.warmup, args.repeats)
    ours, theirs = timed['ours'], timed.get('timm')
    floor = floors(params, args)
    load_after = ', '.join(f'{x:.2f}' for x in os.getloadavg())

    med_ours, med_step = statistics.median(ours), statistics.median(step)
    rows = [('nfnets_mm `adaptive_clip_grad_`', med_ours, min(ours),
             f'{med_ours / med_step:.1%} of a train step')]
    notes = []
    if theirs is not None:
        med_theirs = statistics.median(theirs)
        rows.append(('timm `adaptive_clip_grad`', med_theirs, min(theirs),
                     f'{med_theirs / med_step:.1%} of a train step'))
        paired = statistics.median(a / b for a, b in zip(ours, theirs))
        rows[0] = rows[0][:3] + (rows[0][3] + f'; {med_ours / med_theirs:.2f}x timm '
                                 f'(median of per-round ratios {paired:.2f}x)', )
        notes.append(
            f'- Same result as timm: max abs difference {check["max_abs"]:.2e}, max '
            f'difference relative to the largest raw gradient entry {check["max_rel"]:.2e} '
            f'over {check["tensors"] - check["differing"]} tensors ({check["clipped_tensors"]} '
            f'of them clipped); {check["differing"]} tensors where the unit definitions differ '
            '(timm decides by `ndim`, we by non-singleton dims: only `(O, 1, 1, 1)`-like '
            'tensors, none in this model, whose gains are `(O,)` and skip gains 0-d).')
        notes.append(f'- Target ours <= {TARGET_VS_TIMM} x timm: '
                     f'{"met" if med_ours <= TARGET_VS_TIMM * med_theirs else "MISSED"} '
                     f'({med_ours / med_theirs:.2f}x).')
    rows.append(('floor: `_foreach_norm` of all W and all G', *floor['norms'],
                 'reads W and G once'))
    rows.append(('floor: `_foreach_mul_(G, 1.0)`', *floor['mul'], 'reads and writes G once'))
    rows.append((f'F0 train step ({args.batch_size}x3x{args.img_size}x{args.img_size})',
                 med_step, min(step), 'forward + backward + SGD'))
    notes.append(f'- Target ours <= {TARGET_VS_STEP:.0%} of a train step: '
                 f'{"met" if med_ours <= TARGET_VS_STEP * med_step else "MISSED"} '
                 f'({med_ours / med_step:.1%}).')
    notes.append(f'- Clipped {int(stats.clipped_units)} of {stats.total_units} units at '
                 f'lambda={args.clipping} (mean factor {float(stats.mean_factor):.3f}).')
    info = dict(numel=numel, tensors=len(named), threads=torch.get_num_threads(),
                machine=f'{platform.machine()} {platform.processor() or ""} '
                f'{os.cpu_count()} cores'.replace('  ', ' '),
                load_before=load_before, load_after=load_after,
                command=shlex.join(['python', os.path.relpath(sys.argv[0], REPO_ROOT)] +
                                   list(sys.argv[1:] if argv is None else argv)),
                notes=notes)
    section = render(args, info, rows)
    print(section)
    if args.profile:
        print(profile_ours(params, args.clipping))
    if args.out is not None:
        action = write_section(args.out, section)
        print(f'{action} section "{SECTION}" in {args.out} '
              f'({datetime.datetime.now():%Y-%m-%d %H:%M}).')


if __name__ == '__main__':
    main()
