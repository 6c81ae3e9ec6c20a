"""Generate the synthetic demo data sets (no download) under ``data/demo``.

Usage::

    python tools/data/make_demo_data.py [--root data/demo] [--seed 0] [--force]

Writes ``<root>/cls`` (MMPretrain ImageNet-style folders, 6 classes, 480 images),
``<root>/coco`` (COCO instance segmentation, 3 classes, 224 images) and
``<root>/manifest.json``.  Re-running with the same seed is a no-op; a foreign,
modified or differently seeded folder is refused unless ``--force``.
"""
import argparse
import os.path as osp
import sys

# The generator lives next to this script (tools/data/demo_data.py): it is a tool, not
# part of the nfnets_mm package.
HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from demo_data import DemoDataError, ensure_demo_data  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate the nfnets_mm demo data sets.')
    parser.add_argument('--root', default='data/demo', help='output folder')
    parser.add_argument('--seed', type=int, default=0, help='random seed (>= 0)')
    parser.add_argument(
        '--force', action='store_true',
        help='delete <root>/cls, <root>/coco and <root>/manifest.json and regenerate '
        'if they do not match')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = ensure_demo_data(args.root, seed=args.seed, force=args.force)
    except (DemoDataError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    counts = manifest['counts']
    if not manifest['generated']:
        print(f'{args.root}: demo data (seed {args.seed}) already present and valid; '
              'nothing written.')
        return 0
    total = sum(rec['size'] for rec in manifest['files'].values())
    print(f'Wrote {len(manifest["files"])} files ({total / 2**20:.1f} MiB) to '
          f'{args.root} (seed {args.seed}):')
    print(f'  {osp.join(args.root, "cls")}: {counts["cls_classes"]} classes, '
          f'{counts["cls_train"]} train / {counts["cls_val"]} val images, '
          'meta/train.txt, meta/val.txt, classes.txt')
    print(f'  {osp.join(args.root, "coco")}: {counts["coco_classes"]} categories, '
          f'{counts["coco_train"]} train / {counts["coco_val"]} val images, '
          'annotations/instances_{train,val}.json')
    print(f'  {osp.join(args.root, "manifest.json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
