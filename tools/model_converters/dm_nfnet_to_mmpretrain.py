#!/usr/bin/env python
"""Convert DeepMind's released NFNet Haiku parameters to an MMPretrain checkpoint.

Example::

    python tools/model_converters/dm_nfnet_to_mmpretrain.py F0_haiku.npz \
        checkpoints/nfnet-f0_dm-in1k.pth [--variant F0] [--force]

A command line over :func:`nfnets_mm.converters.deepmind.convert` (reading with the
package's restricted unpickler, architecture inference, layout mapping and checks live
there).  No conversion step is needed to use the released weights in a config:
``load_from = 'dm-nfnets://F0'`` (docs/converters.md).
"""
import argparse
import os.path as osp
import sys

_HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(osp.dirname(_HERE)))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _cli import run_conversion  # noqa: E402

from nfnets_mm.converters import deepmind  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert DeepMind NFNet Haiku parameters (F{n}_haiku.npz) to an '
        'MMPretrain checkpoint.')
    parser.add_argument('src', help='DeepMind parameter file, e.g. F0_haiku.npz')
    parser.add_argument('dst', help='output MMPretrain checkpoint (.pth)')
    parser.add_argument('--variant', default=None,
                        help='expected variant, F0 ... F7 or F0+ ... F7+; inferred from the '
                        'parameter shapes (number of blocks, widths) when omitted')
    parser.add_argument('--force', action='store_true', help='overwrite dst if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Convert; failures are one ``error:`` line and exit status 2 (see ``_cli``)."""
    args = parse_args(argv)

    def report(meta: dict) -> None:
        print(f'converted {args.src} ({meta["arch"]}, {meta["num_classes"]} classes) -> '
              f'{args.dst}')
        print(f'model: {meta["model"]}')

    return run_conversion(
        lambda: deepmind.convert(args.src, args.dst, args.variant, args.force), report)


if __name__ == '__main__':
    sys.exit(main())
