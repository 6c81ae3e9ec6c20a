"""docs/training.md's demo fine-tuning example: the subset snippet runs as written, and
the documented train command trains *and* validates on the same 3-class subset."""
import argparse
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope

from demo_data import ensure_demo_data  # tools/data/demo_data.py (conftest puts it on sys.path)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOC = osp.join(REPO, 'docs', 'training.md')
KEEP = ['circle', 'square', 'triangle']


def _finetune_blocks():
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    section = text.split('## Fine-tuning after pre-training', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.*?)```', section, re.S)


def _block(marker: str) -> str:
    blocks = [b for b in _finetune_blocks() if marker in b]
    assert len(blocks) == 1, f'expected one fine-tuning code block with {marker!r}'
    return blocks[0]


@pytest.fixture
def subset_dir(tmp_path):
    """Run the documented snippet in a scratch checkout whose data/demo is the real one."""
    ensure_demo_data(osp.join(REPO, 'data', 'demo'))
    os.makedirs(tmp_path / 'data')
    os.symlink(osp.join(REPO, 'data', 'demo'), tmp_path / 'data' / 'demo')
    snippet = _block("<<'EOF'").replace('.venv/bin/python', shlex.quote(sys.executable))
    subprocess.run(['bash', '-euc', snippet], cwd=tmp_path, check=True, timeout=120)
    return tmp_path


def test_subset_snippet_writes_three_class_train_and_val(subset_dir):
    for split, per_class in (('train', 60), ('val', 20)):
        with open(subset_dir / 'data' / 'demo_3cls' / f'{split}.txt') as f:
            rows = [line.split() for line in f.read().splitlines()]
        names = [path.split('/')[0] for path, _ in rows]
        assert sorted(set(names)) == KEEP and len(rows) == 3 * per_class
        assert all(int(label) == KEEP.index(name) for name, (_, label) in zip(names, rows))


def test_documented_command_validates_on_the_subset(subset_dir, monkeypatch):
    command = _block('tools/train.py configs/nfnet/nfnet_demo.py')
    command = command.replace('\\\n', ' ').replace('$PWD', str(subset_dir))
    argv = shlex.split(command)
    config = osp.join(REPO, argv[argv.index('tools/train.py') + 1])
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options, _ = parser.parse_known_args(argv[argv.index('--cfg-options'):])
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options.cfg_options)
    assert cfg.model.head.num_classes == cfg.model.data_preprocessor.num_classes == len(KEEP)

    from mmpretrain.registry import DATASETS
    monkeypatch.chdir(subset_dir)  # data_root 'data/demo/cls' is relative
    for loader, split, size in (('train_dataloader', 'train', 180),
                                ('val_dataloader', 'val', 60)):
        ds_cfg = cfg[loader].dataset
        assert ds_cfg.ann_file == str(subset_dir / 'data' / 'demo_3cls' / f'{split}.txt')
        with DefaultScope.overwrite_default_scope('mmpretrain'):  # as tools/train.py sets it
            dataset = DATASETS.build(ds_cfg)
        assert list(dataset.metainfo['classes']) == KEEP and len(dataset) == size
        labels = {int(dataset.get_data_info(i)['gt_label']) for i in range(len(dataset))}
        assert labels == {0, 1, 2}


def test_documented_own_checkpoint_override_restores_the_recipe_forward():
    """The fine-tune configs default to DeepMind's weights and forward; the documented
    override for one's own pre-training run gives the f0_imagenet.py backbone's numerics."""
    command = _block('model.backbone.padding=symmetric').replace('\\\n', ' ')
    (line, ) = [c for c in command.splitlines() if 'padding=symmetric' in c]
    argv = shlex.split(line)
    argv = argv[argv.index('--cfg-options') + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options = parser.parse_args(['--cfg-options'] + argv).cfg_options
    cfg = Config.fromfile(osp.join(REPO, 'configs/nfnet/f0_finetune-384px_imagenet.py'))
    assert cfg.model.backbone.init_cfg.checkpoint == 'dm-nfnets://F0'
    cfg.merge_from_dict(options)
    assert cfg.model.backbone.init_cfg.checkpoint == 'work_dirs/pretrain/epoch_10.pth'
    recipe = Config.fromfile(osp.join(REPO, 'configs/nfnet/f0_imagenet.py')).model.backbone

    import torch.nn as nn

    from nfnets_mm.models import NFNet
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')}
    ours = NFNet(**dict(kwargs, arch=dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128),
                                        group_width=16)))
    reference = NFNet(**dict({k: v for k, v in recipe.items() if k != 'type'},
                             arch=dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128),
                                        group_width=16)))
    gelus = [m for m in ours.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(m.approximate == 'none' for m in gelus)
    assert repr(ours) == repr(reference)  # padding modules, activations, WS settings
