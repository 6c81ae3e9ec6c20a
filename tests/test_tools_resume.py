"""tools/train.py --resume without a path: which checkpoint it resumes from (issue 9.2).

In-process tests of ``train.resolve_resume``; the end-to-end run (a work dir with
``epoch_1.pth`` but no ``last_checkpoint``) is in ``test_train_tools.py``.
"""
import os.path as osp
import sys

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = 'configs/nfnet/nfnet_demo.py'
sys.path.insert(0, osp.join(REPO, 'tools'))
import train as train_tool  # noqa: E402


def touch(path, text='x'):
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def resumed_cfg(work_dir, *extra):
    """The demo config merged with ``--resume --work-dir work_dir``."""
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    args = train_tool.parse_args([DEMO, '--resume', '--work-dir', str(work_dir), *extra])
    return train_tool.merge_args(cfg, args), args


def test_resume_without_last_checkpoint_picks_the_newest_epoch_checkpoint(tmp_path):
    for name in ('epoch_2.pth', 'epoch_10.pth', 'epoch_9.pth', 'iter_500.pth',
                 'best_accuracy_top1_epoch_12.pth'):
        touch(tmp_path / name)
    cfg, args = resumed_cfg(tmp_path)
    note = train_tool.resolve_resume(cfg, force=args.force)
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'epoch_10.pth')
    assert 'no last_checkpoint' in note and 'epoch_10.pth' in note


def test_resume_iter_based_loop_picks_iter_checkpoints(tmp_path):
    for name in ('epoch_3.pth', 'iter_900.pth', 'iter_1000.pth', 'best_x_iter_2000.pth'):
        touch(tmp_path / name)
    cfg, args = resumed_cfg(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=3000)
    assert train_tool.train_loop_kind(cfg) == 'iter'
    train_tool.resolve_resume(cfg)
    assert cfg.load_from == str(tmp_path / 'iter_1000.pth')
    cfg.train_cfg = dict(by_epoch=False, max_iters=3000)
    assert train_tool.train_loop_kind(cfg) == 'iter'


def test_resume_of_a_copied_work_dir_uses_its_own_files(tmp_path):
    """``last_checkpoint`` holds the original folder's absolute path."""
    touch(tmp_path / 'epoch_4.pth')
    touch(tmp_path / 'epoch_5.pth')
    touch(tmp_path / 'last_checkpoint', '/somewhere/else/original_run/epoch_4.pth\n')
    cfg, _ = resumed_cfg(tmp_path)
    note = train_tool.resolve_resume(cfg)
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'epoch_4.pth')
    assert '/somewhere/else/original_run/epoch_4.pth' in note


def test_resume_recorded_file_missing_from_the_work_dir_names_both_paths(tmp_path):
    touch(tmp_path / 'epoch_5.pth')
    touch(tmp_path / 'last_checkpoint', '/orig/run/epoch_6.pth')
    cfg, _ = resumed_cfg(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        train_tool.resolve_resume(cfg)
    message = str(info.value)
    assert '/orig/run/epoch_6.pth' in message and str(tmp_path / 'epoch_6.pth') in message


@pytest.mark.parametrize('content', ['', '  \n'])
def test_resume_empty_last_checkpoint_names_the_file(tmp_path, content):
    touch(tmp_path / 'epoch_1.pth')
    pointer = touch(tmp_path / 'last_checkpoint', content)
    cfg, _ = resumed_cfg(tmp_path)
    with pytest.raises(ValueError, match=f'{pointer} is empty'):
        train_tool.resolve_resume(cfg)


def test_resume_unreadable_last_checkpoint_names_the_file(tmp_path):
    (tmp_path / 'last_checkpoint').mkdir()  # exists but cannot be read as a file
    cfg, _ = resumed_cfg(tmp_path)
    with pytest.raises(RuntimeError, match='cannot read .*last_checkpoint'):
        train_tool.resolve_resume(cfg)


@pytest.mark.parametrize('exists', [False, True])
def test_resume_without_any_checkpoint_starts_a_new_run(tmp_path, exists):
    work_dir = tmp_path / 'run'
    if exists:
        work_dir.mkdir()
    cfg, _ = resumed_cfg(work_dir)
    note = train_tool.resolve_resume(cfg)
    assert cfg.resume is False and cfg.get('load_from') is None
    assert 'starting a new run' in note


def test_resume_refuses_a_work_dir_with_only_other_checkpoints(tmp_path):
    touch(tmp_path / 'best_accuracy_top1_epoch_7.pth')
    cfg, args = resumed_cfg(tmp_path)
    with pytest.raises(FileNotFoundError, match='no last_checkpoint and no epoch_N.pth.*'
                       'best_accuracy_top1_epoch_7.pth.*--force'):
        train_tool.resolve_resume(cfg, force=args.force)
    cfg, args = resumed_cfg(tmp_path, '--force')
    note = train_tool.resolve_resume(cfg, force=args.force)
    assert cfg.resume is False and '(--force)' in note


def test_explicit_resume_path_is_kept(tmp_path):
    ckpt = touch(tmp_path / 'epoch_1.pth')
    touch(tmp_path / 'epoch_2.pth')
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    args = train_tool.parse_args([DEMO, '--resume', ckpt, '--work-dir', str(tmp_path)])
    cfg = train_tool.merge_args(cfg, args)
    assert train_tool.resolve_resume(cfg) is None and cfg.load_from == ckpt
