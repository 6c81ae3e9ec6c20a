#!/usr/bin/env python
"""Signal Propagation Plot of an NF backbone and its batch-normalized counterpart.

Example::

    python tools/analysis/signal_propagation.py --model NFNet --arch F0 --size 64 \
        --out work_dirs/spp_f0.png

Plots, per residual block, the mean squared activation of the residual stream, the
average squared channel mean and the average channel variance (paper Fig. 2) at
initialisation, for the NF model (skip gains set to 1, i.e. branches on), its BN
counterpart (``norm_cfg=dict(type='BN')``) and the analytic NF variance schedule.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from nfnets_mm.analysis import (expected_block_output_variances,  # noqa: E402
                                signal_propagation_stats)
from nfnets_mm.models import NFNet, NFResNet  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=['NFNet', 'NFResNet'], default='NFNet')
    parser.add_argument('--arch', default='F0', help="NFNet arch, e.g. F0 (default) or F1+")
    parser.add_argument('--depth', type=int, default=50, help='NFResNet depth')
    parser.add_argument('--size', type=int, default=64, help='input resolution')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='work_dirs/signal_propagation.png')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    return parser.parse_args(argv)


def build(args, norm_cfg=None):
    if args.model == 'NFNet':
        return NFNet(arch=args.arch, norm_cfg=norm_cfg, drop_path_rate=0.)
    return NFResNet(depth=args.depth, norm_cfg=norm_cfg, drop_path_rate=0.)


def main(argv=None):
    args = parse_args(argv)
    if osp.exists(args.out) and not args.force:
        sys.exit(f'{args.out} exists; pass --force to overwrite it.')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    torch.manual_seed(args.seed)
    inputs = torch.randn(args.batch, 3, args.size, args.size)
    nf_model = build(args).eval()
    nf_stats = signal_propagation_stats(nf_model, inputs, skip_gain=1.0)
    expected = expected_block_output_variances(nf_model)
    bn_model = build(args, norm_cfg=dict(type='BN'))
    bn_model.train()  # BN uses batch statistics, as during training
    bn_stats = signal_propagation_stats(bn_model, inputs, skip_gain=None)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    blocks = range(len(nf_stats))
    panels = [('mean_sq', 'mean squared activation'),
              ('avg_channel_sq_mean', 'avg squared channel mean'),
              ('avg_channel_var', 'avg channel variance')]
    for ax, (key, title) in zip(axes, panels):
        ax.plot(blocks, [getattr(s, key) for s in nf_stats], 'o-', label='NF (skip gain 1)')
        ax.plot(blocks, [getattr(s, key) for s in bn_stats], 's--', label='BN counterpart')
        if key != 'avg_channel_sq_mean':
            ax.plot(blocks, expected, 'k:', label='NF analytic schedule')
        ax.set_title(title)
        ax.set_xlabel('residual block')
        ax.set_yscale('log')
        ax.legend()
    name = args.arch if args.model == 'NFNet' else f'NF-ResNet-{args.depth}'
    fig.suptitle(f'Signal propagation at init: {name}, {args.size}px, batch {args.batch}')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f'{"block":<14}{"NF E[x^2]":>12}{"expected":>10}{"NF mean^2":>12}{"BN E[x^2]":>12}')
    for s, e, b in zip(nf_stats, expected, bn_stats):
        print(f'{s.name:<14}{s.mean_sq:12.3f}{e:10.3f}{s.avg_channel_sq_mean:12.4f}{b.mean_sq:12.3f}')
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
