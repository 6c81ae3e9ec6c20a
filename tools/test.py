#!/usr/bin/env python
"""Evaluate a checkpoint with an nfnets_mm config (MMPretrain or MMDetection scope).

    python tools/test.py configs/nfnet/dm_weights/f0_imagenet.py f0_converted.pth
    python tools/test.py CONFIG            # evaluates the config's load_from
    bash tools/dist_test.sh configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_1x_coco.py ckpt.pth 8

Follows MMPretrain's ``tools/test.py``; the runner comes from the config's
``default_scope`` and the repository root is put on ``sys.path``.  Unlike MMEngine's
non-strict loading, a checkpoint that lacks weights of the model or holds them in other
shapes (another architecture) is refused unless ``--allow-mismatch`` is given (checked by
``checkpoint_match.CheckpointMatchHook`` on the checkpoint the runner reads, before any
other hook's ``after_load_checkpoint`` and before its weights are loaded).
"""
import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

# tools/ is sys.path[0] when this file runs as a script (also under torchrun).
from checkpoint_match import CheckpointMatchHook  # noqa: E402
from resume_utils import is_uri  # noqa: E402
from runner_utils import (build_runner, check_annotation_files, check_scope,  # noqa: E402
                          distributed_session, set_default_dataloader_cfg,
                          unpin_without_cuda)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (nfnets_mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', nargs='?', default=None,
        help='checkpoint file or URI (e.g. dm-nfnets://F0, an https:// URL, s3://...); '
        'it must hold every weight of the model in the '
        "model's shapes (a 'module.' prefix and EMA checkpoints are fine) unless "
        "--allow-mismatch is given. Optional when the config sets load_from (e.g. "
        "load_from='dm-nfnets://F0'), which is then evaluated")
    parser.add_argument(
        '--allow-mismatch', action='store_true',
        help='evaluate even if the checkpoint lacks weights of the model or has them in '
        'other shapes (MMEngine then loads the matching weights with warnings and the '
        'others keep their initialisation)')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics / logs')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--force', action='store_true',
                        help='overwrite the --out file if it exists, write into a non-empty '
                        '--show-dir')
    parser.add_argument(
        '--show-dir',
        help='save images with the predictions drawn (MMPretrain / MMDetection '
        'visualizer: labels, or boxes and masks) in this directory; a relative path is '
        'taken from the current directory (not from the work dir). An existing non-empty '
        'directory is refused unless --force')
    parser.add_argument('--amp', action='store_true', help='mixed-precision test')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the dataloader')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config, e.g. '
        'test_dataloader.num_workers=0; the dataloader defaults (pin_memory, '
        'persistent_workers only with workers) are applied after them')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg: Config, scope: str, show_dir: str) -> None:
    """Turn on the scope's visualization hook, writing images under ``show_dir``.

    ``show_dir`` is made absolute here: MMDetection's hook joins a relative
    ``test_out_dir`` under ``<work_dir>/<timestamp>/``, MMPretrain's takes it from the
    current directory; ``--show-dir out`` means ``./out`` for both.
    """
    show_dir = osp.abspath(show_dir)
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise KeyError('--show-dir needs a visualization hook in default_hooks '
                       '(the default runtimes of mmpretrain / mmdet define one).')
    if scope == 'mmdet':
        hooks.visualization.draw = True
        hooks.visualization.test_out_dir = show_dir
    else:
        hooks.visualization.enable = True
        hooks.visualization.out_dir = show_dir


def merge_args(cfg: Config, args: argparse.Namespace, scope: str) -> Config:
    """Merge the command line into the config (``--cfg-options`` last; the dataloader
    defaults are applied to the merged config)."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.checkpoint is not None:
        cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg', None) or {}
        cfg.test_cfg.fp16 = True
    if args.show_dir is not None:
        enable_visualization(cfg, scope, args.show_dir)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_default_dataloader_cfg(cfg, 'test_dataloader', pin_memory=not args.no_pin_memory)
    return cfg


def main(argv=None) -> dict:
    """Evaluate; the process group of a distributed run is destroyed when it ends."""
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file {args.config} does not exist.')
    if args.checkpoint is not None and not is_uri(args.checkpoint) \
            and not osp.isfile(args.checkpoint):
        from nfnets_mm.converters.pretrained import CheckpointNotFoundError, how_to_get
        raise CheckpointNotFoundError(f'Checkpoint {args.checkpoint} does not exist. '
                                      + how_to_get(args.checkpoint))
    if args.show_dir is not None and not args.force and osp.isdir(args.show_dir) and \
            os.listdir(args.show_dir):
        raise FileExistsError(f'--show-dir {args.show_dir} exists and is not empty; images '
                              'written there could replace files of the same name. Pass '
                              '--force to write into it or choose another directory.')
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out}.')
        if osp.exists(args.out) and not args.force:
            raise FileExistsError(f'--out file {args.out} exists; pass --force to overwrite '
                                  'it or choose another path.')
    cfg = Config.fromfile(args.config)
    scope = check_scope(cfg, args.config)
    cfg = merge_args(cfg, args, scope)
    if not cfg.get('load_from', None):
        raise ValueError(f'No checkpoint to evaluate: give one (tools/test.py {args.config} '
                         'CHECKPOINT) or set load_from in the config (e.g. '
                         "load_from='dm-nfnets://F0' or a path / URL).")
    check_annotation_files(cfg, ['test_dataloader'])
    unpin_without_cuda(cfg, ['test_dataloader'])
    with distributed_session(cfg):
        return evaluate(cfg, args, scope)


def evaluate(cfg: Config, args: argparse.Namespace, scope: str) -> dict:
    """Build the runner and test; returns the metrics.  The runner lives only in this
    call (see :func:`distributed_session`)."""
    runner = build_runner(cfg)
    if not args.allow_mismatch:
        # Checks the checkpoint runner.test() reads, before its weights are loaded.
        runner.register_hook(CheckpointMatchHook(cfg.load_from))
    if args.out is not None:
        add_dump_metric(runner, scope, args.out)
    return runner.test()


def add_dump_metric(runner, scope: str, out: str) -> None:
    """Dump the predictions to ``out`` with the scope's dump metric."""
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    else:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))


if __name__ == '__main__':
    from nfnets_mm.converters import PRETRAINED_LOAD_ERRORS
    try:
        main()
    except PRETRAINED_LOAD_ERRORS as error:  # missing / undownloadable weights: the how-to
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
