#!/usr/bin/env python
"""Train a model from an nfnets_mm config (MMPretrain or MMDetection scope).

    python tools/train.py configs/nfnet/nfnet_demo.py
    bash tools/dist_train.sh configs/nfnet/f1_imagenet.py 8

The command line follows MMPretrain's ``tools/train.py``.  The runner is built from the
registry of the config's ``default_scope`` (``mmpretrain`` or ``mmdet``), so classifier
and detector configs both work; the script puts the repository root on ``sys.path`` so it
runs from a checkout without installing the package or setting ``PYTHONPATH``.
"""
import argparse
import glob
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402

# tools/ is sys.path[0] when this file runs as a script (also under torchrun).
from runner_utils import (apply_amp, build_runner, check_scope,  # noqa: E402
                          set_default_dataloader_cfg)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (nfnets_mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or, without a value ("auto"), from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision: AGCOptimWrapper -> AmpAGCOptimWrapper, '
        'OptimWrapper -> AmpOptimWrapper')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr linearly by (GPUs x batch per GPU) / auto_scale_lr.base_batch_size')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the dataloaders')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='disable persistent_workers in the dataloaders')
    parser.add_argument(
        '--force', action='store_true',
        help='train into a work dir that already holds checkpoints (they may be '
        'overwritten); without it such a work dir is refused unless --resume is given')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config, e.g. '
        'train_dataloader.batch_size=64 or key="[a,b]" for lists')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (>= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def existing_checkpoints(work_dir: str):
    """Checkpoints (or MMEngine's ``last_checkpoint`` pointer) already in ``work_dir``."""
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')))
    if osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        found.append(osp.join(work_dir, 'last_checkpoint'))
    return found


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command line into the config (CLI wins, ``--cfg-options`` last)."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        apply_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint {args.resume} does not exist.')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr', None) is None or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in '
                           f'the config {args.config}.')
        cfg.auto_scale_lr.enable = True
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        set_default_dataloader_cfg(cfg, field, pin_memory=not args.no_pin_memory,
                                   persistent_workers=not args.no_persistent_workers)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file {args.config} does not exist.')
    cfg = Config.fromfile(args.config)
    check_scope(cfg, args.config)
    cfg = merge_args(cfg, args)
    if not cfg.get('resume', False) and not args.force:
        found = existing_checkpoints(cfg.work_dir)
        if found:
            raise FileExistsError(
                f'Work dir {cfg.work_dir} already holds checkpoints ({", ".join(found[:3])}'
                f'{" ..." if len(found) > 3 else ""}); a new run could overwrite them. Pass '
                '--resume to continue that run, --force to train there anyway, or choose '
                'another --work-dir.')
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
