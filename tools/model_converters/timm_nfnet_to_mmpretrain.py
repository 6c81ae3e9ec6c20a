#!/usr/bin/env python
"""Convert timm NFNet / NF-ResNet state dicts to MMPretrain checkpoints.

Example::

    python tools/model_converters/timm_nfnet_to_mmpretrain.py dm_nfnet_f0.pth \
        checkpoints/nfnet-f0_timm-dm-in1k.pth [--act gelu|silu|relu] [--force]

A command line over :func:`nfnets_mm.converters.timm.convert`; the supported families
(``dm_nfnet_f*``, ``nfnet_f*``, ``nfnet_l0``, ``nf_resnet*``) and the refused ones are
described there and in docs/converters.md.  A timm state dict also loads as it is, as a
path or URL in ``load_from`` / ``init_cfg=dict(type='Pretrained', ...)``.
"""
import argparse
import os.path as osp
import sys

_HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(osp.dirname(_HERE)))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _cli import run_conversion  # noqa: E402

from nfnets_mm.converters import timm  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a timm dm_nfnet_f*/nfnet_*/nf_resnet* state dict to an '
        'MMPretrain checkpoint.')
    parser.add_argument('src', help='timm checkpoint (.pth/.bin): a state dict, or a dict '
                        'with "state_dict" or "model"')
    parser.add_argument('dst', help='output MMPretrain checkpoint (.pth)')
    parser.add_argument('--act', choices=sorted(timm.ACTIVATIONS), default=None,
                        help='activation of timm-trained (non-dm) models when it cannot be '
                        'inferred (gelu for nfnet_f*, silu for nfnet_l0, relu for nf_resnet*)')
    parser.add_argument('--force', action='store_true', help='overwrite dst if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Convert; failures are one ``error:`` line and exit status 2 (see ``_cli``)."""
    args = parse_args(argv)

    def report(meta: dict) -> None:
        print(f'converted {args.src} ({meta["converted_from"]}, {meta["num_classes"]} '
              f'classes) -> {args.dst}')
        print(f'model: {meta["model"]}')
        for note in meta['notes']:
            print(f'note: {note}')

    return run_conversion(lambda: timm.convert(args.src, args.dst, args.force, args.act),
                          report)


if __name__ == '__main__':
    sys.exit(main())
