#!/usr/bin/env python
"""Train a model from an nfnets_mm config (MMPretrain or MMDetection scope).

    python tools/train.py configs/nfnet/nfnet_demo.py
    bash tools/dist_train.sh configs/nfnet/f1_imagenet.py 8

The command line follows MMPretrain's ``tools/train.py``.  The runner is built from the
registry of the config's ``default_scope`` (``mmpretrain`` or ``mmdet``), so classifier
and detector configs both work; the script puts the repository root on ``sys.path`` so it
runs from a checkout without installing the package or setting ``PYTHONPATH``.

``--resume`` without a path resumes from the work dir's own checkpoints (see
:func:`resolve_resume`): the file ``last_checkpoint`` names, looked up in the work dir,
else the newest ``epoch_N.pth`` / ``iter_N.pth`` of the config's loop; a work dir without
checkpoints starts a new run.  It never falls back to training from scratch over
existing checkpoints.
"""
import argparse
import glob
import os
import os.path as osp
import re
import sys
from typing import Optional, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

# tools/ is sys.path[0] when this file runs as a script (also under torchrun).
from runner_utils import (apply_amp, build_runner, check_annotation_files,  # noqa: E402
                          check_scope, distributed_session, set_default_dataloader_cfg)

#: Periodic checkpoints of MMEngine's ``CheckpointHook``: ``epoch_N.pth`` / ``iter_N.pth``.
PERIODIC_CHECKPOINT = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (nfnets_mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or, without a value, from the work dir: '
        'the checkpoint named by its last_checkpoint file (looked up in the work dir, so '
        'a copied work dir resumes from its own files), else the newest epoch_N.pth / '
        'iter_N.pth of the config\'s train loop (never best_*.pth); a work dir without '
        'checkpoints starts a new run')
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
    parser.add_argument(
        '--no-persistent-workers', action='store_true',
        help='disable persistent_workers in the dataloaders (always off for dataloaders '
        'with num_workers=0)')
    parser.add_argument(
        '--force', action='store_true',
        help='train into a work dir that already holds checkpoints (they may be '
        'overwritten); without it such a work dir is refused unless --resume is given. '
        'With --resume and no resumable checkpoint it starts a new run there')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config, e.g. '
        'train_dataloader.batch_size=64, train_dataloader.num_workers=0 or key="[a,b]" '
        'for lists; the dataloader defaults (pin_memory, persistent_workers) are applied '
        'after them')
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
    """Merge the command line into the config (CLI wins, ``--cfg-options`` last).

    The dataloader defaults are applied to the merged config, so ``--cfg-options
    train_dataloader.num_workers=0`` also turns ``persistent_workers`` off.  ``--resume``
    without a path leaves ``load_from=None``; :func:`resolve_resume` then picks the
    checkpoint.
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
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint {args.resume} does not exist.')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr', None) is None or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in '
                           f'the config {args.config}.')
        cfg.auto_scale_lr.enable = True
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        set_default_dataloader_cfg(cfg, field, pin_memory=not args.no_pin_memory,
                                   persistent_workers=not args.no_persistent_workers)
    return cfg


def train_loop_kind(cfg: Config) -> str:
    """``'epoch'`` or ``'iter'``: how the config's train loop counts (and so how its
    ``CheckpointHook`` names checkpoints by default)."""
    loop = cfg.get('train_cfg', None) or {}
    loop_type = loop.get('type', None)
    loop_type = getattr(loop_type, '__name__', loop_type)
    if loop_type == 'IterBasedTrainLoop':
        return 'iter'
    if loop_type == 'EpochBasedTrainLoop':
        return 'epoch'
    if 'by_epoch' in loop:
        return 'epoch' if loop['by_epoch'] else 'iter'
    return 'iter' if 'max_iters' in loop and 'max_epochs' not in loop else 'epoch'


def newest_periodic_checkpoint(work_dir: str, kind: str) -> Optional[str]:
    """The ``{kind}_N.pth`` in ``work_dir`` with the largest N (``best_*.pth`` and the
    other kind are ignored), or ``None``."""
    numbered = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        match = PERIODIC_CHECKPOINT.match(name)
        if match and match.group(1) == kind and osp.isfile(osp.join(work_dir, name)):
            numbered.append((int(match.group(2)), name))
    return osp.join(work_dir, max(numbered)[1]) if numbered else None


def read_last_checkpoint(pointer: str) -> str:
    """The checkpoint path recorded in MMEngine's ``last_checkpoint`` file."""
    try:
        with open(pointer, encoding='utf-8') as f:
            recorded = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeError(f'--resume: cannot read {pointer} ({exc}). It should hold the '
                           'path of the last checkpoint; delete it to resume from the newest '
                           'checkpoint of the work dir, or pass --resume PATH.') from exc
    if not recorded or '\n' in recorded:
        what = 'is empty' if not recorded else 'holds several lines'
        raise ValueError(f'--resume: {pointer} {what}; it should hold the path of the '
                         'last checkpoint (it was probably cut short when the run was '
                         'killed). Delete it to resume from the newest checkpoint of the work '
                         'dir, or pass --resume PATH.')
    return recorded


def checkpoint_from_pointer(work_dir: str) -> Tuple[str, str]:
    """``(path, note)``: the file ``last_checkpoint`` names, taken from ``work_dir``.

    MMEngine records an absolute path, so a copied or moved work dir would resume from
    the original folder; the recorded file's name is looked up in ``work_dir`` instead.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    recorded = read_last_checkpoint(pointer)
    local = osp.join(work_dir, osp.basename(recorded))
    if not osp.isfile(local):
        raise FileNotFoundError(
            f'--resume: {pointer} names {recorded}, but {local} (that file in this work '
            'dir) does not exist. Pass --resume PATH to resume from a given checkpoint '
            f'(e.g. --resume {recorded}), or delete {pointer} to resume from the newest '
            'checkpoint of the work dir.')
    note = f'Resuming from {local} (named by {pointer}'
    if osp.abspath(local) != osp.abspath(recorded):
        note += f', which records {recorded}'
    return local, note + ').'


def resolve_resume(cfg: Config, force: bool = False) -> Optional[str]:
    """Pick the checkpoint for ``resume=True`` without ``load_from`` (``--resume``).

    Sets ``cfg.load_from`` to the checkpoint named by ``work_dir/last_checkpoint`` (found
    in the work dir), else to the newest ``epoch_N.pth`` / ``iter_N.pth`` of the config's
    train loop; without any checkpoint in the work dir, ``cfg.resume`` becomes False (a
    new run).  A work dir holding other checkpoints only (``best_*.pth``, the other
    kind) is refused unless ``force``.  Returns a note for the log (``None`` when there
    was nothing to resolve).  MMEngine's own ``find_latest_checkpoint`` is not used: it
    returns ``None`` without ``last_checkpoint`` and the run starts from scratch over the
    existing checkpoints.
    """
    if not cfg.get('resume', False) or cfg.get('load_from', None) is not None:
        return None
    work_dir = cfg.work_dir
    if osp.lexists(osp.join(work_dir, 'last_checkpoint')):
        cfg.load_from, note = checkpoint_from_pointer(work_dir)
        return note
    kind = train_loop_kind(cfg)
    newest = newest_periodic_checkpoint(work_dir, kind)
    if newest is not None:
        cfg.load_from = newest
        return (f'{work_dir} has no last_checkpoint; resuming from its newest {kind} '
                f'checkpoint {newest}.')
    others = existing_checkpoints(work_dir)
    if others and not force:
        raise FileNotFoundError(
            f'--resume: {work_dir} has no last_checkpoint and no {kind}_N.pth (the config\'s '
            f'train loop is {kind}-based), but holds {", ".join(others[:3])}'
            f'{" ..." if len(others) > 3 else ""}. Pass --resume PATH to resume from one '
            'of them, or --force to start a new run there (files may be overwritten).')
    cfg.resume = False
    return (f'--resume: no checkpoint to resume from in {work_dir}; starting a new run'
            + (' (--force).' if others else '.'))


def main(argv=None) -> None:
    """Train; the process group of a distributed run is destroyed when it ends."""
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file {args.config} does not exist.')
    cfg = Config.fromfile(args.config)
    check_scope(cfg, args.config)
    cfg = merge_args(cfg, args)
    resume_note = resolve_resume(cfg, force=args.force)
    if not cfg.get('resume', False) and not args.force:
        found = existing_checkpoints(cfg.work_dir)
        if found:
            raise FileExistsError(
                f'Work dir {cfg.work_dir} already holds checkpoints ({", ".join(found[:3])}'
                f'{" ..." if len(found) > 3 else ""}); a new run could overwrite them. Pass '
                '--resume to continue that run, --force to train there anyway, or choose '
                'another --work-dir.')
    check_annotation_files(cfg, ['train_dataloader', 'val_dataloader'])
    with distributed_session(cfg):
        runner = build_runner(cfg)
        if resume_note is not None:
            runner.logger.info(resume_note)
        runner.train()


if __name__ == '__main__':
    main()
