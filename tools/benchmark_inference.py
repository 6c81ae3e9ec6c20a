#!/usr/bin/env python
"""Inference latency of an NFNet backbone: WS every forward vs eval cache vs deploy.

    python tools/benchmark_inference.py --arch F0 --size 256 --batch 1 --threads 2

* ``ws-every-forward``: eval mode but gradients enabled, so weight standardization runs
  in every forward (what a naive WS conv does at inference);
* ``eval-cached``: eval mode under ``torch.no_grad()``: the standardized weights are
  computed once and cached until the raw weights change;
* ``deployed``: after ``switch_to_deploy()``: plain convs, no WS code path at all.
"""
import argparse
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from nfnets_mm.models import NFNet  # noqa: E402


def timed(fn, warmup: int, repeats: int):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='F0')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = NFNet(arch=args.arch, drop_path_rate=0.).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)

    def ws_every_forward():
        with torch.enable_grad():
            model(x)

    def no_grad_forward():
        with torch.no_grad():
            return model(x)[-1]

    rows = [('ws-every-forward', *timed(ws_every_forward, args.warmup, args.repeats))]
    rows.append(('eval-cached', *timed(no_grad_forward, args.warmup, args.repeats)))
    reference = no_grad_forward()
    model.switch_to_deploy()
    rows.append(('deployed', *timed(no_grad_forward, args.warmup, args.repeats)))
    diff = (no_grad_forward() - reference).abs().max() / reference.abs().max()
    print(f'NFNet-{args.arch}, {args.batch}x3x{args.size}x{args.size}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}')
    print('| mode | median ms | min ms |\n|---|---:|---:|')
    for name, median, best in rows:
        print(f'| {name} | {median:.1f} | {best:.1f} |')
    print(f'deployed vs eval output: max abs diff / max abs = {diff:.2e}')


if __name__ == '__main__':
    main()
