"""Does AGC keep a normalizer-free network stable at a large learning rate? (paper Sec. 4)

Trains the same small NFNet (seeded, no stochastic depth) on synthetic, linearly
separable images twice, with identical data and initialisation, at a learning rate far
above the usual one: once with MMEngine's plain ``OptimWrapper`` and once with
``AGCOptimWrapper`` (``head.fc.weight`` excluded, as in the paper).  It prints both loss
curves' summaries; without AGC the loss is expected to blow up (become non-finite or
exceed ``--explode-factor`` x its initial value), with AGC to stay finite.

Example::

    python tools/experiments/agc_divergence.py
    python tools/experiments/agc_divergence.py --lr 0.1 0.5 --steps 60 --out docs/benchmarks.md
"""
import argparse
import copy
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.logging import MMLogger  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402

from nfnets_mm.models.backbones import NFNet  # noqa: E402

SECTION = '## AGC stability'
#: A small NFNet with the F-series structure (grouped 3x3s, SE, transitions, final conv).
TINY_ARCH = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
                 stem_channels=(8, 8, 16, 16))


class TinyClassifier(nn.Module):
    """Tiny NFNet + mean pool + ``head.fc`` (MMPretrain's parameter names)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = NFNet(arch=TINY_ARCH, drop_path_rate=0.)
        self.head = nn.Module()
        self.head.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)
        nn.init.normal_(self.head.fc.weight, std=0.01)
        nn.init.zeros_(self.head.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> logits (N, num_classes)."""
        return self.head.fc(self.backbone(x)[-1].mean((2, 3)))


def make_data(num_classes: int, samples: int, size: int, noise: float,
              seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images = class template + Gaussian noise: linearly separable for small ``noise``.

    Returns:
        tuple: images ``(samples, 3, size, size)`` and labels ``(samples,)``.
    """
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(num_classes, 3, size, size, generator=gen)
    labels = torch.arange(samples) % num_classes
    images = templates[labels] + noise * torch.randn(samples, 3, size, size, generator=gen)
    return images, labels


@dataclass
class Curve:
    """Loss curve of one run and its summary."""

    name: str
    losses: List[float] = field(default_factory=list)
    first_bad_step: Optional[int] = None  # first non-finite or exploded loss
    final_acc: float = float('nan')
    seconds: float = 0.

    @property
    def finite(self) -> bool:
        return all(math.isfinite(x) for x in self.losses)

    def summary(self, lr: float) -> str:
        """One markdown table row."""
        finite = [x for x in self.losses if math.isfinite(x)]
        peak = max(finite) if finite else float('nan')
        bad = '-' if self.first_bad_step is None else str(self.first_bad_step)
        return (f'| {lr:g} | {self.name} | {self.losses[0]:.3f} | {peak:.3g} | '
                f'{self.losses[-1]:.3g} | {"yes" if self.finite else "no"} | {bad} | '
                f'{self.final_acc:.2f} | {len(self.losses)} |')


def optim_cfg(use_agc: bool, lr: float, clipping: float) -> dict:
    optimizer = dict(type='SGD', lr=lr, momentum=0.9, nesterov=True, weight_decay=2e-5)
    if not use_agc:
        # Same param groups (no decay on gains / biases) as the AGC run, no clipping.
        return dict(type='OptimWrapper', constructor='AGCOptimWrapperConstructor',
                    optimizer=optimizer)
    return dict(type='AGCOptimWrapper', constructor='AGCOptimWrapperConstructor',
                optimizer=optimizer,
                clip_grad=dict(type='agc', clipping=clipping, exclude=['head.fc.weight']))


def train(use_agc: bool, lr: float = 0.2, steps: int = 40, clipping: float = 0.01,
          batch_size: int = 32, num_classes: int = 4, size: int = 32, noise: float = 0.5,
          seed: int = 0, explode_factor: float = 1e3, stop_on_bad: bool = True) -> Curve:
    """Train one model and return its loss curve.

    Args:
        use_agc (bool): ``AGCOptimWrapper`` (True) or plain ``OptimWrapper``.
        lr (float): SGD learning rate (Nesterov momentum 0.9, weight decay 2e-5).
        steps (int): Optimizer steps.
        clipping (float): AGC lambda.
        explode_factor (float): A loss above ``explode_factor`` x the first loss (or
            non-finite) counts as divergence.
        stop_on_bad (bool): Stop at the first non-finite loss.
    """
    torch.manual_seed(seed)
    model = TinyClassifier(num_classes)
    images, labels = make_data(num_classes, batch_size * 4, size, noise, seed + 1)
    wrapper = build_optim_wrapper(model, optim_cfg(use_agc, lr, clipping))
    curve = Curve('AGC' if use_agc else 'no clipping')
    gen = torch.Generator().manual_seed(seed + 2)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size, ), generator=gen)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        value = loss.item()
        curve.losses.append(value)
        bad = not math.isfinite(value) or value > explode_factor * curve.losses[0]
        if bad and curve.first_bad_step is None:
            curve.first_bad_step = step
        if not math.isfinite(value) and stop_on_bad:
            break
        wrapper.update_params(loss)
    with torch.no_grad():
        pred = model(images).argmax(1)
        curve.final_acc = (pred == labels).float().mean().item()
    curve.seconds = time.perf_counter() - start
    return curve


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--lr', type=float, nargs='+', default=[0.05, 0.2, 1.0],
                        help='Learning rates; each is run without and with AGC.')
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--clipping', type=float, default=0.01, help='AGC lambda.')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--explode-factor', type=float, default=1e3)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads.')
    parser.add_argument('--out', default=None,
                        help=f'Markdown file to append the "{SECTION}" section to (an '
                        'existing section of that name is replaced, the rest kept).')
    args = parser.parse_args(argv)
    if min(args.lr) <= 0 or args.steps < 1 or args.clipping <= 0 or args.batch_size < 1:
        parser.error('--lr, --clipping must be > 0 and --steps, --batch-size >= 1.')
    if args.out is not None and not args.out.endswith('.md'):
        parser.error(f'--out must be a markdown file (*.md), got {args.out!r}.')
    return args


def write_section(path: str, section: str) -> str:
    """Replace the ``## AGC stability`` section of ``path`` or append it."""
    text = ''
    if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            text = f.read()
    pattern = re.compile(r'^## AGC stability[ \t]*\n.*?(?=^## |\Z)', re.S | re.M)
    if pattern.search(text):
        new, action = pattern.sub(lambda _: section + '\n', text, count=1), 'replaced'
    else:
        new = (text or '# Benchmarks\n').rstrip('\n') + '\n\n' + section
        action = 'appended'
    with open(path, 'w', encoding='utf-8') as f:
        f.write(new if new.endswith('\n') else new + '\n')
    return action


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    # Keep MMEngine's per-parameter "paramwise_options" INFO lines out of the output.
    MMLogger.get_instance('agc_divergence', log_level='WARNING')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    kwargs = dict(steps=args.steps, clipping=args.clipping, batch_size=args.batch_size,
                  seed=args.seed, explode_factor=args.explode_factor)
    runs = [(lr, train(use_agc, lr=lr, **kwargs))
            for lr in args.lr for use_agc in (False, True)]
    command = shlex.join(['python', os.path.relpath(sys.argv[0], REPO_ROOT)] +
                         list(sys.argv[1:] if argv is None else argv))
    lines = [
        SECTION, '',
        f'Tiny NFNet (`{TINY_ARCH}`, no stochastic depth) on synthetic separable images '
        f'(4 classes, 32x32, template + 0.5 noise), batch {args.batch_size}, SGD Nesterov '
        f'0.9, weight decay 2e-5 (not on gains/biases), {args.steps} steps, seed {args.seed}, '
        f'same data and initialisation for every run; AGC lambda {args.clipping} with '
        '`head.fc.weight` excluded. "Diverged at" = first step whose loss is non-finite or '
        f'> {args.explode_factor:g} x the first loss; a run stops at its first non-finite '
        'loss. For scale: the paper\'s rule lr = 0.1 x batch / 256 gives '
        f'{0.1 * args.batch_size / 256:g} here.', '',
        f'Command: `{command}` (torch.set_num_threads({torch.get_num_threads()}))', '',
        '| lr | run | first loss | max finite loss | last loss | all finite | diverged at | '
        'train acc | steps run |',
        '|---:|---|---:|---:|---:|---|---:|---:|---:|',
    ]
    lines += [c.summary(lr) for lr, c in runs]
    lines += ['', 'Loss every 5 steps:', '']
    for lr, c in runs:
        lines.append(f'- lr {lr:g}, {c.name}: ' + ', '.join(f'{x:.3g}' for x in c.losses[::5]))
    lines.append('')
    section = '\n'.join(lines)
    print(section)
    if args.out is not None:
        print(f'{write_section(args.out, section)} section "{SECTION}" in {args.out}.')


if __name__ == '__main__':
    main()
