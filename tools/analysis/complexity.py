#!/usr/bin/env python
"""Params and FLOPs of NFNet variants via MMEngine's complexity analysis vs paper Table 3.

    python tools/analysis/complexity.py --archs F0 F1 F2 F3 F4 F5 F6

Any variant of ``nfnets_mm.variants.NFNET_VARIANTS`` may be named (F7 and the wide
``F*+`` variants too); Table 3 columns read ``--`` for those the paper does not list.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from nfnets_mm.analysis.complexity import nfnet_complexity  # noqa: E402
from nfnets_mm.variants import NFNET_VARIANTS, get_variant  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    listed = [name for name, v in NFNET_VARIANTS.items() if v.flops_g is not None]
    parser.add_argument('--archs', nargs='+', default=listed, type=str.upper,
                        choices=list(NFNET_VARIANTS),
                        help='variants to count (default: those in Table 3)')
    args = parser.parse_args(argv)
    print('| arch | test px | params (M) | Table 3 | FLOPs (B) | Table 3 | FLOPs diff |')
    print('|---|---|---|---|---|---|---|')
    for arch in args.archs:
        t0 = time.time()
        r = nfnet_complexity(arch)
        ref = get_variant(arch)
        diff = ('--' if ref.flops_g is None
                else f'{(r["flops"] / 1e9 / ref.flops_g - 1) * 100:+.2f}%')
        print(f'| {arch} | {r["size"]} | {r["params"] / 1e6:.1f} | {ref.params_m or "--"} | '
              f'{r["flops"] / 1e9:.2f} | {ref.flops_g or "--"} | {diff} |', flush=True)
        print(f'<!-- {arch}: {time.time() - t0:.1f}s -->', file=sys.stderr)


if __name__ == '__main__':
    main()
