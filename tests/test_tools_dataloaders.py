"""Dataloader options and annotation files in tools/train.py and tools/test.py
(issue 9.7 and the empty-annotation part of 9.8)."""
import os.path as osp

import pytest
from conftest import REPO_ROOT as REPO
from conftest import load_test_tool, tools_on_path
from mmengine.config import Config
from torch.utils.data import DataLoader

from demo_data import ensure_demo_data  # tools/data/demo_data.py (conftest puts it on sys.path)

DEMO = 'configs/nfnet/nfnet_demo.py'
tools_on_path()
import runner_utils  # noqa: E402
import train as train_tool  # noqa: E402

test_tool = load_test_tool()

LOADER_KEYS = ('num_workers', 'pin_memory', 'persistent_workers', 'prefetch_factor')


def build_loader(loader_cfg):
    """A torch DataLoader with the config's worker options (raises like MMEngine's)."""
    kwargs = {k: loader_cfg[k] for k in LOADER_KEYS if k in loader_cfg}
    return DataLoader(list(range(4)), batch_size=2, **kwargs)


def demo_cfg(num_workers=None, **loader_options):
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if num_workers is not None:
            cfg[field].num_workers = num_workers
        cfg[field].update(loader_options)
    return cfg


def test_train_cli_num_workers_zero_turns_persistent_workers_off(tmp_path):
    cfg = demo_cfg(num_workers=2)
    args = train_tool.parse_args([DEMO, '--work-dir', str(tmp_path), '--cfg-options',
                                  'train_dataloader.num_workers=0',
                                  'val_dataloader.num_workers=0'])
    cfg = train_tool.merge_args(cfg, args)
    for field in ('train_dataloader', 'val_dataloader'):
        assert cfg[field].num_workers == 0
        assert not cfg[field].get('persistent_workers', False)
        build_loader(cfg[field])
    assert cfg.test_dataloader.persistent_workers is True  # still 2 workers


def test_train_cli_num_workers_gets_the_defaults(tmp_path):
    """Defaults follow the merged num_workers: 0 in the config, 2 from the CLI."""
    args = train_tool.parse_args([DEMO, '--work-dir', str(tmp_path), '--cfg-options',
                                  'train_dataloader.num_workers=2'])
    cfg = train_tool.merge_args(demo_cfg(), args)
    assert cfg.train_dataloader.persistent_workers is True
    assert cfg.train_dataloader.pin_memory is True
    args = train_tool.parse_args([DEMO, '--work-dir', str(tmp_path),
                                  '--no-persistent-workers', '--cfg-options',
                                  'train_dataloader.num_workers=2'])
    cfg = train_tool.merge_args(demo_cfg(), args)
    assert cfg.train_dataloader.persistent_workers is False


def test_config_persistent_workers_without_workers_is_turned_off(tmp_path):
    cfg = demo_cfg(num_workers=0, persistent_workers=True, prefetch_factor=2)
    args = train_tool.parse_args([DEMO, '--work-dir', str(tmp_path)])
    with pytest.warns(UserWarning, match='train_dataloader: persistent_workers=True needs '
                      'num_workers > 0'):
        cfg = train_tool.merge_args(cfg, args)
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[field].persistent_workers is False and 'prefetch_factor' not in cfg[field]
        build_loader(cfg[field])


def test_test_tool_cli_num_workers_zero(tmp_path):
    cfg = demo_cfg(num_workers=2)
    args = test_tool.parse_args([DEMO, 'ckpt.pth', '--work-dir', str(tmp_path),
                                 '--cfg-options', 'test_dataloader.num_workers=0'])
    cfg = test_tool.merge_args(cfg, args, 'mmpretrain')
    assert not cfg.test_dataloader.get('persistent_workers', False)
    build_loader(cfg.test_dataloader)
    cfg = test_tool.merge_args(demo_cfg(num_workers=0, persistent_workers=True),
                               test_tool.parse_args([DEMO, 'ckpt.pth']), 'mmpretrain')
    build_loader(cfg.test_dataloader)


# ----------------------------------------------------------------------------
# empty annotation files
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_data():
    ensure_demo_data(osp.join(REPO, 'data', 'demo'))


@pytest.fixture
def empty_ann(tmp_path):
    path = tmp_path / 'empty.txt'
    path.write_text('')
    return str(path)


def test_train_tool_names_an_empty_annotation_file(demo_data, empty_ann, tmp_path):
    """Without the check: ``need at least one array to concatenate`` from the runner."""
    with pytest.raises(ValueError, match=f'train_dataloader: the annotation file '
                       f'{empty_ann} .* is empty'):
        train_tool.main([DEMO, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                         f'train_dataloader.dataset.ann_file={empty_ann}'])


def test_test_tool_names_an_empty_annotation_file(demo_data, empty_ann, tmp_path):
    ckpt = tmp_path / 'any.pth'
    ckpt.write_bytes(b'not read')
    with pytest.raises(ValueError, match=f'test_dataloader: the annotation file '
                       f'{empty_ann} .* is empty'):
        test_tool.main([DEMO, str(ckpt), '--work-dir', str(tmp_path / 'w'),
                        '--cfg-options', f'test_dataloader.dataset.ann_file={empty_ann}'])


def test_annotation_check_joins_data_root_and_walks_wrappers(tmp_path):
    (tmp_path / 'meta').mkdir()
    (tmp_path / 'meta' / 'ok.txt').write_text('a.png 0\n')
    (tmp_path / 'meta' / 'blank.txt').write_text('\n \n')
    good = dict(type='CustomDataset', data_root=str(tmp_path), ann_file='meta/ok.txt')
    bad = dict(good, ann_file='meta/blank.txt')
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
            good, dict(type='RepeatDataset', times=2, dataset=bad)])),
        val_dataloader=dict(dataset=dict(type='CustomDataset', data_root=str(tmp_path),
                                          ann_file='', data_prefix='val'))))
    runner_utils.check_annotation_files(cfg, ['val_dataloader'])  # folder scan: no file
    with pytest.raises(ValueError, match=f'{tmp_path}/meta/blank.txt'):
        runner_utils.check_annotation_files(cfg, ['train_dataloader', 'val_dataloader'])
