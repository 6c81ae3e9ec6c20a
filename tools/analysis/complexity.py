#!/usr/bin/env python
"""Params and FLOPs of NFNet-F0..F6 via MMEngine's complexity analysis vs paper Table 3.

    python tools/analysis/complexity.py --archs F0 F1 F2 F3 F4 F5 F6
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from nfnets_mm.analysis.complexity import TABLE3, nfnet_complexity  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=list(TABLE3), choices=list(TABLE3))
    args = parser.parse_args(argv)
    print('| arch | test px | params (M) | Table 3 | FLOPs (B) | Table 3 | FLOPs diff |')
    print('|---|---|---|---|---|---|---|')
    for arch in args.archs:
        t0 = time.time()
        r = nfnet_complexity(arch)
        ref = TABLE3[arch]
        print(f'| {arch} | {r["size"]} | {r["params"] / 1e6:.1f} | {ref["params"]} | '
              f'{r["flops"] / 1e9:.2f} | {ref["flops"]} | '
              f'{(r["flops"] / 1e9 / ref["flops"] - 1) * 100:+.2f}% |', flush=True)
        print(f'<!-- {arch}: {time.time() - t0:.1f}s -->', file=sys.stderr)


if __name__ == '__main__':
    main()
