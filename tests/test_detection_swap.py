"""The README's NFNet swap, applied verbatim to stock MMDetection configs.

``docs/snippets/nfnet_swap.py`` holds the lines; the README shows them (checked
here), and each test pastes them below ``_base_ = '<stock mmdet config>'`` exactly as a user
would.  The swapped Mask R-CNN and RetinaNet are built at F0 size (wiring and AGC exclusion
checked on the real parameter names) and, with a tiny NFNet arch, run one training
iteration and one COCO evaluation on a 64 px demo set.
"""
import os.path as osp
import re

import pytest
import torch
from conftest import REPO_ROOT, TINY_NFNET_ARCH
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.priority import get_priority

from nfnets_mm.engine.hooks import NeckWiringError, NFNeckWiringCheckHook, check_neck_wiring
from nfnets_mm.models.backbones import NFNet

SNIPPET = osp.join(REPO_ROOT, 'docs', 'snippets', 'nfnet_swap.py')
#: stock config, metric keys, output-layer weights AGC must leave alone.
DETECTORS = {
    'mask_rcnn': ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', ('bbox', 'segm'),
                  ('rpn_head.rpn_cls.weight', 'rpn_head.rpn_reg.weight',
                   'roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_reg.weight',
                   'roi_head.mask_head.conv_logits.weight')),
    'retinanet': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', ('bbox', ),
                  ('bbox_head.retina_cls.weight', 'bbox_head.retina_reg.weight')),
}
CLASSES = ('circle', 'square', 'triangle')


def snippet_lines() -> str:
    """The lines a user pastes: the snippet file without its leading comment block."""
    with open(SNIPPET) as f:
        lines = f.readlines()
    first = next(i for i, line in enumerate(lines) if not line.startswith('#'))
    return ''.join(lines[first:])


def stock_config(tmp_path, detector: str) -> Config:
    path = tmp_path / f'{detector}_stock.py'
    path.write_text(f"_base_ = '{DETECTORS[detector][0]}'\n")
    return Config.fromfile(str(path))


def swapped_config(tmp_path, detector: str) -> Config:
    """The user's config: the stock ``_base_`` line, then the documented lines."""
    path = tmp_path / f'{detector}_nfnet.py'
    path.write_text(f"_base_ = '{DETECTORS[detector][0]}'\n" + snippet_lines())
    return Config.fromfile(str(path))


def test_readme_shows_the_snippet_lines():
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        readme = f.read()
    blocks = re.findall(r'```python\n(.*?)```', readme, flags=re.S)
    body = snippet_lines()
    assert any(body in block for block in blocks), \
        'README.md must show docs/snippets/nfnet_swap.py (without its header)'


@pytest.mark.parametrize('detector', sorted(DETECTORS))
def test_swap_wires_f0_and_excludes_exactly_the_output_layers(tmp_path, detector):
    cfg = swapped_config(tmp_path, detector)
    assert cfg.model.backbone.type == 'NFNet' and 'depth' not in cfg.model.backbone
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='dm-nfnets://F0',
                                               prefix='backbone.')
    stock = stock_config(tmp_path, detector)
    assert stock.model.backbone.type == 'ResNet'
    assert cfg.optim_wrapper.optimizer == stock.optim_wrapper.optimizer  # SGD and lr kept
    assert cfg.train_dataloader == stock.train_dataloader
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)  # F0 size; no init_weights (no download)
        assert check_neck_wiring(model)
        assert list(model.backbone.out_channels) == cfg.model.neck.in_channels
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    unclipped = sorted(names[id(p)] for g in wrapper.optimizer.param_groups
                       if g['agc'] is False for p in g['params'])
    assert unclipped == sorted(DETECTORS[detector][2])


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from demo_data import make_coco_demo  # tools/data/demo_data.py
    root = tmp_path_factory.mktemp('demo')
    make_coco_demo(str(root), seed=0, num_train=2, num_val=2, image_size=64, max_objects=2)
    return osp.join(str(root), 'coco') + '/'


def tiny_run_cfg(cfg: Config, coco_root: str, work_dir: str) -> Config:
    """Tiny arch, the 64 px demo set, 1 iteration; what a test changes, not the swap."""
    backbone = cfg.model.backbone
    backbone.update(arch=TINY_NFNET_ARCH, init_cfg=None, drop_path_rate=0.)
    cfg.model.neck.in_channels = list(
        NFNet(arch=TINY_NFNET_ARCH, out_indices=backbone.out_indices,
              with_final_conv=backbone.with_final_conv).out_channels)
    for head in ('bbox_head', 'mask_head'):
        if head in cfg.model.get('roi_head', {}):
            cfg.model.roi_head[head].num_classes = len(CLASSES)
    if 'bbox_head' in cfg.model:
        cfg.model.bbox_head.num_classes = len(CLASSES)
        cfg.model.test_cfg.score_thr = 0.  # untrained scores sit at the 0.01 prior
    # fewer proposals / detections: the stock 1000 x 256-channel RoIs take seconds on a CPU
    if 'rpn' in cfg.model.test_cfg:
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        cfg.model.train_cfg.rcnn.sampler.num = 64
        cfg.model.test_cfg.rpn.update(nms_pre=100, max_per_img=50)
    cfg.model.test_cfg.get('rcnn', cfg.model.test_cfg).max_per_img = 10
    for split, loader in (('train', cfg.train_dataloader), ('val', cfg.val_dataloader)):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        for step in loader.dataset.pipeline:
            if step.type == 'Resize':
                step.scale = (64, 64)
        loader.dataset.update(data_root=coco_root, metainfo=dict(classes=CLASSES),
                              serialize_data=False,  # skips a gc.collect() per dataset
                              ann_file=f'annotations/instances_{split}.json',
                              data_prefix=dict(img=f'{split}/'))
    cfg.val_evaluator.ann_file = coco_root + 'annotations/instances_val.json'
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.train_cfg.update(max_epochs=1, val_begin=2)  # validate once, below
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('detector', sorted(DETECTORS))
def test_swapped_detector_trains_and_evaluates_on_demo_coco(tmp_path, coco_root, detector):
    torch.set_num_threads(1)
    cfg = tiny_run_cfg(swapped_config(tmp_path, detector), coco_root, str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    scalars = runner.message_hub.log_scalars
    assert 'train/agc_clip_fraction' in scalars
    assert torch.isfinite(torch.tensor(scalars['train/loss'].current()))
    metrics = runner.val()
    for kind in DETECTORS[detector][1]:
        assert f'coco/{kind}_mAP' in metrics and 0. <= metrics[f'coco/{kind}_mAP'] <= 1.


def test_swapped_config_with_wrong_fpn_channels_stops_before_training(tmp_path, coco_root):
    """The snippet registers NFNeckWiringCheckHook; at before_run it names both lists."""
    cfg = tiny_run_cfg(swapped_config(tmp_path, 'mask_rcnn'), coco_root, str(tmp_path / 'w'))
    cfg.model.neck.in_channels = [256, 512, 1024, 2048]  # left from ResNet-50
    runner = Runner.from_cfg(cfg)
    (hook, ) = [h for h in runner.hooks if isinstance(h, NFNeckWiringCheckHook)]
    assert get_priority(hook.priority) == get_priority('VERY_HIGH')  # first before_run
    with pytest.raises(NeckWiringError) as info:
        hook.before_run(runner)
    message = str(info.value)
    assert '[32, 64, 128, 128]' in message and '[256, 512, 1024, 2048]' in message
