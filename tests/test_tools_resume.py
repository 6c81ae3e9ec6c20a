"""tools/train.py --resume without a path: which checkpoint it resumes from (issue 9.2),
also when the ``CheckpointHook`` saves elsewhere (``out_dir``) or under other names.

In-process tests of ``resume_utils``; the end-to-end runs (a work dir with
``epoch_1.pth`` but no ``last_checkpoint``, a run with ``out_dir``) are in
``test_train_tools.py``.
"""
import os
import os.path as osp

import pytest
from conftest import REPO_ROOT, tools_on_path
from mmengine.config import Config

tools_on_path()
import resume_utils  # noqa: E402
import train as train_tool  # noqa: E402

DEMO = osp.join(REPO_ROOT, 'configs/nfnet/nfnet_demo.py')


def touch(path, text='x'):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def resumed_cfg(work_dir, *extra):
    """The demo config merged with ``--resume --work-dir work_dir``."""
    cfg = Config.fromfile(DEMO)
    args = train_tool.parse_args([DEMO, '--resume', '--work-dir', str(work_dir), *extra])
    return train_tool.merge_args(cfg, args), args


def test_resume_without_last_checkpoint_picks_the_newest_epoch_checkpoint(tmp_path):
    for name in ('epoch_2.pth', 'epoch_10.pth', 'epoch_9.pth', 'iter_500.pth',
                 'best_accuracy_top1_epoch_12.pth'):
        touch(tmp_path / name)
    cfg, args = resumed_cfg(tmp_path)
    note = resume_utils.resolve_resume(cfg, force=args.force)
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'epoch_10.pth')
    assert 'no last_checkpoint' in note and 'epoch_10.pth' in note


def test_resume_iter_checkpoint_hook_picks_iter_checkpoints(tmp_path):
    """The kind comes from the CheckpointHook's ``by_epoch`` (as MMEngine names them)."""
    for name in ('epoch_3.pth', 'iter_900.pth', 'iter_1000.pth', 'best_x_iter_2000.pth'):
        touch(tmp_path / name)
    cfg, args = resumed_cfg(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=3000)
    cfg.default_hooks.checkpoint.by_epoch = False
    layout = resume_utils.checkpoint_layout(cfg)
    assert (layout.kind, layout.filename_tmpl, layout.name) == ('iter', 'iter_{}.pth',
                                                                'iter_N.pth')
    resume_utils.resolve_resume(cfg)
    assert cfg.load_from == str(tmp_path / 'iter_1000.pth')


def test_resume_follows_the_hook_filename_tmpl(tmp_path):
    for name in ('ckpt_0020.pth', 'ckpt_0100.pth', 'epoch_9.pth', 'iter_500.pth',
                 'best_acc_ckpt_0200.pth'):
        touch(tmp_path / name)
    cfg, _ = resumed_cfg(tmp_path)
    cfg.default_hooks.checkpoint.update(by_epoch=False, filename_tmpl='ckpt_{:04d}.pth')
    note = resume_utils.resolve_resume(cfg)
    assert cfg.load_from == str(tmp_path / 'ckpt_0100.pth')
    assert 'newest iter checkpoint' in note


def test_resume_refusal_names_the_hook_pattern(tmp_path):
    touch(tmp_path / 'epoch_9.pth')
    cfg, _ = resumed_cfg(tmp_path)
    cfg.default_hooks.checkpoint.update(by_epoch=False, filename_tmpl='ckpt_{:04d}.pth')
    with pytest.raises(FileNotFoundError, match=r'no last_checkpoint and no ckpt_N\.pth '
                       r'\(the iter checkpoints of the CheckpointHook\).*epoch_9\.pth'):
        resume_utils.resolve_resume(cfg)


def test_resume_of_a_copied_work_dir_uses_its_own_files(tmp_path):
    """``last_checkpoint`` holds the original folder's absolute path."""
    touch(tmp_path / 'epoch_4.pth')
    touch(tmp_path / 'epoch_5.pth')
    touch(tmp_path / 'last_checkpoint', '/somewhere/else/original_run/epoch_4.pth\n')
    cfg, _ = resumed_cfg(tmp_path)
    note = resume_utils.resolve_resume(cfg)
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'epoch_4.pth')
    assert '/somewhere/else/original_run/epoch_4.pth' in note


def test_resume_recorded_file_missing_from_the_work_dir_names_both_paths(tmp_path):
    touch(tmp_path / 'epoch_5.pth')
    touch(tmp_path / 'last_checkpoint', '/orig/run/epoch_6.pth')
    cfg, _ = resumed_cfg(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        resume_utils.resolve_resume(cfg)
    message = str(info.value)
    assert '/orig/run/epoch_6.pth' in message and str(tmp_path / 'epoch_6.pth') in message


@pytest.mark.parametrize('content', ['', '  \n'])
def test_resume_empty_last_checkpoint_names_the_file(tmp_path, content):
    touch(tmp_path / 'epoch_1.pth')
    pointer = touch(tmp_path / 'last_checkpoint', content)
    cfg, _ = resumed_cfg(tmp_path)
    with pytest.raises(ValueError, match=f'{pointer} is empty'):
        resume_utils.resolve_resume(cfg)


def test_resume_unreadable_last_checkpoint_names_the_file(tmp_path):
    (tmp_path / 'last_checkpoint').mkdir()  # exists but cannot be read as a file
    cfg, _ = resumed_cfg(tmp_path)
    with pytest.raises(RuntimeError, match='cannot read .*last_checkpoint'):
        resume_utils.resolve_resume(cfg)


@pytest.mark.parametrize('exists', [False, True])
def test_resume_without_any_checkpoint_starts_a_new_run(tmp_path, exists):
    work_dir = tmp_path / 'run'
    if exists:
        work_dir.mkdir()
    cfg, _ = resumed_cfg(work_dir)
    note = resume_utils.resolve_resume(cfg)
    assert cfg.resume is False and cfg.get('load_from') is None
    assert 'starting a new run' in note


def test_resume_refuses_a_work_dir_with_only_other_checkpoints(tmp_path):
    touch(tmp_path / 'best_accuracy_top1_epoch_7.pth')
    cfg, args = resumed_cfg(tmp_path)
    with pytest.raises(FileNotFoundError, match='no last_checkpoint and no epoch_N.pth.*'
                       'best_accuracy_top1_epoch_7.pth.*--force'):
        resume_utils.resolve_resume(cfg, force=args.force)
    cfg, args = resumed_cfg(tmp_path, '--force')
    note = resume_utils.resolve_resume(cfg, force=args.force)
    assert cfg.resume is False and '(--force)' in note


def test_explicit_resume_path_is_kept(tmp_path):
    ckpt = touch(tmp_path / 'epoch_1.pth')
    touch(tmp_path / 'epoch_2.pth')
    cfg = Config.fromfile(DEMO)
    args = train_tool.parse_args([DEMO, '--resume', ckpt, '--work-dir', str(tmp_path)])
    cfg = train_tool.merge_args(cfg, args)
    assert resume_utils.resolve_resume(cfg) is None and cfg.load_from == ckpt


# ----------------------------------------------------------------------------
# CheckpointHook(out_dir=...): checkpoints in <out_dir>/<basename(work_dir)>,
# last_checkpoint (naming that path) in the work dir
# ----------------------------------------------------------------------------
def out_dir_cfg(tmp_path, *extra, resume=True):
    """Work dir ``tmp_path/work/run``, checkpoints in ``tmp_path/store/run``."""
    work_dir, store = tmp_path / 'work' / 'run', tmp_path / 'store'
    cfg = Config.fromfile(DEMO)
    args = train_tool.parse_args(
        [DEMO, *(['--resume'] if resume else []), '--work-dir', str(work_dir), *extra,
         '--cfg-options', f'default_hooks.checkpoint.out_dir={store}'])
    return train_tool.merge_args(cfg, args), work_dir, store / 'run'


def test_checkpoint_layout_follows_mmengine(tmp_path):
    cfg, work_dir, folder = out_dir_cfg(tmp_path)
    layout = resume_utils.checkpoint_layout(cfg)
    assert layout.work_dir == str(work_dir) and layout.folder == str(folder)
    assert not layout.remote and (layout.kind, layout.name) == ('epoch', 'epoch_N.pth')
    cfg.default_hooks.checkpoint.out_dir = str(work_dir)  # MMEngine: no subfolder then
    assert resume_utils.checkpoint_layout(cfg).folder == str(work_dir)
    cfg.default_hooks.checkpoint.out_dir = 's3://bucket/ckpts'
    layout = resume_utils.checkpoint_layout(cfg)
    assert layout.remote and layout.folder == 's3://bucket/ckpts/run'


def test_resume_with_out_dir_follows_last_checkpoint_into_the_checkpoint_folder(tmp_path):
    """MMEngine's auto-resume works here; --resume raised FileNotFoundError."""
    cfg, work_dir, folder = out_dir_cfg(tmp_path)
    for name in ('epoch_3.pth', 'epoch_4.pth'):
        touch(folder / name)
    touch(work_dir / 'last_checkpoint', str(folder / 'epoch_3.pth'))
    note = resume_utils.resolve_resume(cfg)
    assert cfg.resume is True and cfg.load_from == str(folder / 'epoch_3.pth')
    assert str(work_dir / 'last_checkpoint') in note


def test_resume_with_out_dir_and_a_moved_store_names_the_folders(tmp_path):
    cfg, work_dir, folder = out_dir_cfg(tmp_path)
    touch(work_dir / 'last_checkpoint', '/old/store/run/epoch_3.pth')
    with pytest.raises(FileNotFoundError) as info:
        resume_utils.resolve_resume(cfg)
    message = str(info.value)
    assert str(folder / 'epoch_3.pth') in message and 'the checkpoint folder)' in message
    assert str(work_dir / 'epoch_3.pth') not in message  # not recorded in the work dir
    touch(folder / 'epoch_3.pth')  # found in the configured folder
    resume_utils.resolve_resume(cfg)
    assert cfg.load_from == str(folder / 'epoch_3.pth')


def test_resume_with_out_dir_without_last_checkpoint_scans_the_checkpoint_folder(tmp_path):
    """It started a new run (the work dir holds no checkpoint)."""
    cfg, work_dir, folder = out_dir_cfg(tmp_path)
    for name in ('epoch_3.pth', 'epoch_4.pth', 'best_accuracy_top1_epoch_4.pth'):
        touch(folder / name)
    note = resume_utils.resolve_resume(cfg)
    assert cfg.resume is True and cfg.load_from == str(folder / 'epoch_4.pth')
    assert str(folder) in note


def test_resume_with_out_dir_refuses_only_other_checkpoints_there(tmp_path):
    cfg, _, folder = out_dir_cfg(tmp_path)
    touch(folder / 'best_accuracy_top1_epoch_4.pth')
    with pytest.raises(FileNotFoundError, match='best_accuracy_top1_epoch_4.pth.*--force'):
        resume_utils.resolve_resume(cfg)


class _NotBuilt(Exception):
    pass


def _no_runner(cfg):
    raise _NotBuilt


def test_new_run_refuses_a_checkpoint_folder_with_checkpoints(tmp_path, monkeypatch):
    """The overwrite guard looked at the work dir only."""
    monkeypatch.setattr(train_tool, 'build_runner', _no_runner)
    _, work_dir, folder = out_dir_cfg(tmp_path)
    touch(folder / 'epoch_1.pth')
    argv = [DEMO, '--work-dir', str(work_dir), '--cfg-options',
            f'default_hooks.checkpoint.out_dir={tmp_path / "store"}']
    with pytest.raises(FileExistsError, match=f'already holds? checkpoints.*{folder}'):
        train_tool.main(argv)
    with pytest.raises(_NotBuilt):  # --force: on to building the runner
        train_tool.main(['--force', *argv])


def test_resume_with_a_remote_out_dir(tmp_path):
    """A remote folder is not searched: the recorded path is used as MMEngine would;
    without last_checkpoint --resume is refused unless --force."""
    cfg, work_dir, _ = out_dir_cfg(tmp_path)
    cfg.default_hooks.checkpoint.out_dir = 's3://bucket/ckpts'
    touch(work_dir / 'last_checkpoint', 's3://bucket/ckpts/run/epoch_7.pth')
    note = resume_utils.resolve_resume(cfg)
    assert cfg.load_from == 's3://bucket/ckpts/run/epoch_7.pth' and 'remote' in note

    os.remove(work_dir / 'last_checkpoint')
    cfg, _, _ = out_dir_cfg(tmp_path)
    cfg.default_hooks.checkpoint.out_dir = 's3://bucket/ckpts'
    with pytest.raises(FileNotFoundError, match='s3://bucket/ckpts/run.*not searched.*'
                       '--resume PATH.*--force'):
        resume_utils.resolve_resume(cfg)
    cfg, _, _ = out_dir_cfg(tmp_path, '--force')
    cfg.default_hooks.checkpoint.out_dir = 's3://bucket/ckpts'
    note = resume_utils.resolve_resume(cfg, force=True)
    assert cfg.resume is False and 'new run' in note


def test_resume_with_out_dir_refuses_a_purged_checkpoint(tmp_path):
    """The recorded file was deleted from the checkpoint folder: a same-named file of an
    older run in the work dir is not resumed from."""
    cfg, work_dir, folder = out_dir_cfg(tmp_path)
    touch(folder / 'epoch_2.pth')
    touch(work_dir / 'epoch_3.pth')  # an older run's, without out_dir
    touch(work_dir / 'last_checkpoint', str(folder / 'epoch_3.pth'))
    with pytest.raises(FileNotFoundError) as info:
        resume_utils.resolve_resume(cfg)
    message = str(info.value)
    assert str(folder / 'epoch_3.pth') in message and 'does not exist' in message
    # Recorded in the work dir itself (a run before out_dir was set): found there.
    touch(work_dir / 'last_checkpoint', str(work_dir / 'epoch_3.pth'))
    cfg, _, _ = out_dir_cfg(tmp_path)
    resume_utils.resolve_resume(cfg)
    assert cfg.load_from == str(work_dir / 'epoch_3.pth')


def test_resume_uri_path_with_a_remote_out_dir(tmp_path):
    """The path the refusal suggests for a remote out_dir is accepted by merge_args
    (it raised FileNotFoundError: not a local file) and handed to MMEngine."""
    work_dir = tmp_path / 'run'
    options = ['--cfg-options', 'default_hooks.checkpoint.out_dir=s3://bucket/ckpts']
    cfg = Config.fromfile(DEMO)
    args = train_tool.parse_args([DEMO, '--resume', '--work-dir', str(work_dir), *options])
    cfg = train_tool.merge_args(cfg, args)
    with pytest.raises(FileNotFoundError, match=r'--resume s3://bucket/ckpts/run/epoch_N'):
        resume_utils.resolve_resume(cfg)
    uri = 's3://bucket/ckpts/run/epoch_3.pth'
    cfg = Config.fromfile(DEMO)
    args = train_tool.parse_args([DEMO, '--resume', uri, '--work-dir', str(work_dir),
                                  *options])
    cfg = train_tool.merge_args(cfg, args)
    assert cfg.resume is True and cfg.load_from == uri
    resume_utils.refuse_foreign_resume(cfg)
    assert resume_utils.resolve_resume(cfg) is None and cfg.load_from == uri
    with pytest.raises(FileNotFoundError, match='does not exist'):  # local: still checked
        train_tool.merge_args(Config.fromfile(DEMO), train_tool.parse_args(
            [DEMO, '--resume', str(tmp_path / 'missing.pth')]))


def test_resume_path_of_another_run_into_a_folder_with_checkpoints(tmp_path, monkeypatch):
    """Its max_keep_ckpts would delete this folder's epoch_N.pth by number."""
    monkeypatch.setattr(train_tool, 'build_runner', _no_runner)
    other = touch(tmp_path / 'other' / 'epoch_5.pth')
    work_dir = tmp_path / 'run'
    touch(work_dir / 'epoch_1.pth')
    argv = [DEMO, '--resume', other, '--work-dir', str(work_dir)]
    with pytest.raises(FileExistsError, match=f'--resume {other}: .*already holds '
                       rf'checkpoints \({work_dir / "epoch_1.pth"}.*max_keep_ckpts.*--force'):
        train_tool.main(argv)
    with pytest.raises(_NotBuilt):  # --force: on to building the runner
        train_tool.main([*argv, '--force'])
    with pytest.raises(_NotBuilt):  # its own checkpoint
        train_tool.main([DEMO, '--resume', str(work_dir / 'epoch_1.pth'), '--work-dir',
                         str(work_dir)])
    with pytest.raises(_NotBuilt):  # an empty work dir
        train_tool.main([DEMO, '--resume', other, '--work-dir', str(tmp_path / 'new')])
    # With out_dir: checkpoints in the checkpoint folder count too.
    _, out_work, folder = out_dir_cfg(tmp_path)
    touch(folder / 'epoch_2.pth')
    with pytest.raises(FileExistsError, match=f'checkpoint folder {folder}'):
        train_tool.main([DEMO, '--resume', other, '--work-dir', str(out_work),
                         '--cfg-options',
                         f'default_hooks.checkpoint.out_dir={tmp_path / "store"}'])
