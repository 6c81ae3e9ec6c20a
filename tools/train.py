#!/usr/bin/env python
"""Train a model from an nfnets_mm config (MMPretrain or MMDetection scope).

    python tools/train.py configs/nfnet/nfnet_demo.py
    bash tools/dist_train.sh configs/nfnet/f1_imagenet.py 8

The command line follows MMPretrain's ``tools/train.py``.  The runner is built from the
registry of the config's ``default_scope`` (``mmpretrain`` or ``mmdet``), so classifier
and detector configs both work; the script puts the repository root on ``sys.path`` so it
runs from a checkout without installing the package or setting ``PYTHONPATH``.

``--resume`` without a path resumes from the run's own checkpoints, where the config's
``CheckpointHook`` saves them (the work dir, or ``<out_dir>/<work dir name>``; see
``tools/resume_utils.py``): the file ``last_checkpoint`` names, else the newest periodic
checkpoint; a run without checkpoints starts anew.  It never falls back to training from
scratch over existing checkpoints, and a new run refuses a work dir / checkpoint folder
holding checkpoints unless ``--force``; so does ``--resume PATH`` with a checkpoint from
outside that folder (another run's).  ``--resume s3://...`` (a URI) is handed to MMEngine
unchecked.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

# tools/ is sys.path[0] when this file runs as a script (also under torchrun).
from resume_utils import (is_uri, refuse_foreign_resume, refuse_overwrite,  # noqa: E402
                          resolve_resume)
from runner_utils import (apply_amp, build_runner, check_annotation_files,  # noqa: E402
                          check_scope, distributed_session, follow_training_length,
                          schedule_snapshot, set_default_dataloader_cfg,
                          unpin_without_cuda)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (nfnets_mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or, without a value, from the run\'s own: '
        'the checkpoint named by the work dir\'s last_checkpoint file (looked up where the '
        'CheckpointHook saves - the work dir, or OUT_DIR/<work dir name> with its out_dir - '
        'so a copied run resumes from its own files), else the newest periodic checkpoint '
        'there (epoch_N.pth / iter_N.pth or the hook\'s filename_tmpl; never best_*.pth); '
        'a run without checkpoints starts anew')
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
                        help='disable pin_memory in the dataloaders (always off on machines '
                        'without CUDA)')
    parser.add_argument(
        '--no-persistent-workers', action='store_true',
        help='disable persistent_workers in the dataloaders (always off for dataloaders '
        'with num_workers=0)')
    parser.add_argument(
        '--force', action='store_true',
        help='train into a work dir (or CheckpointHook out_dir folder) that already holds '
        'checkpoints (they may be overwritten); without it such a run is refused unless '
        '--resume is given. With --resume and no resumable checkpoint it starts a new run '
        'there; with --resume PATH from another folder it resumes into a work dir / folder '
        'holding checkpoints (the resumed max_keep_ckpts may delete them)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config, e.g. '
        'train_dataloader.batch_size=64, train_dataloader.num_workers=0 or key="[a,b]" '
        'for lists; the dataloader defaults (pin_memory, persistent_workers) are applied '
        'after them; a changed train_cfg.max_epochs / max_iters also moves the end of the '
        'schedulers that ended at the old value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (>= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command line into the config (CLI wins, ``--cfg-options`` last).

    The dataloader defaults are applied to the merged config, so ``--cfg-options
    train_dataloader.num_workers=0`` also turns ``persistent_workers`` off.  A
    ``train_cfg.max_epochs`` (``max_iters``) changed there moves the end of the
    schedulers that ended at the old length (``runner_utils.follow_training_length``).  ``--resume``
    without a path leaves ``load_from=None``; ``resume_utils.resolve_resume`` then picks
    the checkpoint.
    """
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
        # A URI (s3://..., as suggested for a remote CheckpointHook out_dir) is left to
        # MMEngine's CheckpointLoader.
        if not is_uri(args.resume) and not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint {args.resume} does not exist.')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr', None) is None or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in '
                           f'the config {args.config}.')
        cfg.auto_scale_lr.enable = True
    if args.cfg_options is not None:
        before = schedule_snapshot(cfg)
        cfg.merge_from_dict(args.cfg_options)
        for note in follow_training_length(cfg, before):
            print_log(f'--cfg-options: {note}', logger='current')
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        set_default_dataloader_cfg(cfg, field, pin_memory=not args.no_pin_memory,
                                   persistent_workers=not args.no_persistent_workers)
    return cfg


def main(argv=None) -> None:
    """Train; the process group of a distributed run is destroyed when it ends."""
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file {args.config} does not exist.')
    cfg = Config.fromfile(args.config)
    check_scope(cfg, args.config)
    cfg = merge_args(cfg, args)
    refuse_foreign_resume(cfg, force=args.force)
    resume_note = resolve_resume(cfg, force=args.force)
    refuse_overwrite(cfg, force=args.force)
    check_annotation_files(cfg, ['train_dataloader', 'val_dataloader'])
    unpin_without_cuda(cfg, ('train_dataloader', 'val_dataloader', 'test_dataloader'))
    with distributed_session(cfg):
        train(cfg, resume_note)


def train(cfg: Config, resume_note: Optional[str] = None) -> None:
    """Build the runner and train.  The runner lives only in this call, so that
    :func:`distributed_session` can free it, and with it the process group its DDP model
    holds, before the interpreter shuts down."""
    runner = build_runner(cfg)
    if resume_note is not None:
        runner.logger.info(resume_note)
    runner.train()


if __name__ == '__main__':
    from nfnets_mm.converters import PRETRAINED_LOAD_ERRORS
    try:
        main()
    except PRETRAINED_LOAD_ERRORS as error:  # missing / undownloadable weights: the how-to
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
