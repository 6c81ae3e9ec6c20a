"""Every config under configs/ loads, builds in its scope and trains one step; the
ImageNet / transfer / detection / DeepMind-eval configs carry the paper's numbers.

Building all ~30 models at full size (F7: 500M parameters) would take minutes on two
CPU cores, so only the smallest model of each kind (F0, NF-ResNet-50, the DeepMind-forward
F0, Mask R-CNN F0 and the demos) is built exactly as configured; the others are built at
full width with one block per stage, and their real depths are checked against the
paper's table through the arch zoo instead.
"""
import copy
import glob
import os.path as osp
import re

import numpy as np
import pytest
import torch
from conftest import detector_step
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.optim import build_optim_wrapper

import nfnets_mm  # noqa: F401
from nfnets_mm.models.backbones import NFNet
from nfnets_mm.variants import get_variant

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                                            recursive=True)
    if '_base_' not in p.split(osp.sep))

#: The variants of the ImageNet recipe; their numbers come from the variant table.
VARIANTS = ('F0', 'F1', 'F2', 'F3', 'F4', 'F5', 'F6', 'F7')
#: Configs whose model is built exactly as configured (no depth shrinking).
FULL_BUILD = {
    'configs/nfnet/f0_imagenet.py', 'configs/nfnet/nf_resnet50_imagenet.py',
    'configs/nfnet/dm_weights/f0_imagenet.py', 'configs/nfnet/nfnet_demo.py',
    'configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_1x_coco.py',
    'configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py',
}
DET_OUTPUT_LAYERS = ('rpn_head.rpn_cls.weight', 'rpn_head.rpn_reg.weight',
                     'roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_reg.weight',
                     'roi_head.mask_head.conv_logits.weight')


def load(path: str) -> Config:
    return Config.fromfile(osp.join(REPO, path))


def registry(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def shrink(model_cfg, path: str):
    """Full width, one block per stage, for the configs not in FULL_BUILD."""
    model_cfg = copy.deepcopy(model_cfg)
    backbone = model_cfg.backbone
    if path not in FULL_BUILD and backbone.type == 'NFNet' and isinstance(backbone.arch, str):
        widths = NFNet.arch_zoo[backbone.arch.lower()]['widths']
        backbone.arch = dict(depths=(1, 1, 1, 1), widths=widths)
    return model_cfg


def classifier_step(model, size: int):
    from mmpretrain.structures import DataSample
    num_classes = model.head.num_classes
    data = dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i % num_classes) for i in range(2)])
    data = model.data_preprocessor(data, training=True)
    return model(**data, mode='loss')


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_trains_one_step(path):
    cfg = load(path)
    assert cfg.custom_imports == dict(imports=['nfnets_mm'], allow_failed_imports=False)
    assert cfg.default_scope in ('mmpretrain', 'mmdet')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry(cfg.default_scope).build(shrink(cfg.model, path))
        if 'demo' in path:  # configured init (no pretrained file); cheap at demo size
            model.init_weights()
        model.train()
        if cfg.default_scope == 'mmdet':
            losses = detector_step(model, 64)
        else:
            heavy = path in FULL_BUILD and path != 'configs/nfnet/nfnet_demo.py'
            losses = classifier_step(model, 32 if heavy else 64)
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    grads = {n: p.grad for n, p in model.named_parameters()}
    stem = next(g for n, g in grads.items() if n.startswith('backbone.stem'))
    assert stem.abs().sum() > 0, 'no gradient reaches the backbone stem'


def variant_path(variant: str) -> str:
    return f'configs/nfnet/{variant.lower()}_imagenet.py'


def pipeline_step(pipeline, type_name):
    steps = [t for t in pipeline if t['type'] == type_name]
    assert len(steps) == 1, f'expected one {type_name} in {pipeline}'
    return steps[0]


def check_eval_pipeline(pipeline, test_px):
    # DeepMind's eval_preproc='resize_crop_32' with TF's bicubic
    # (tests/test_eval_preprocessing.py checks pixels).
    step = pipeline_step(pipeline, 'NFNetEvalResizeCrop')
    assert (step.crop_size, step.pad, step.mode, step.backend) == (
        test_px, 32, 'deepmind', 'tf')
    assert not [t for t in pipeline if t['type'] in ('ResizeEdge', 'CenterCrop')]


def check_train_crop(pipeline, train_px):
    # DeepMind's crop: TF's sample_distorted_bounding_box + TF bicubic
    # (tests/test_train_crop.py checks the sampler, tests/test_tf_resize.py the resize).
    step = pipeline_step(pipeline, 'NFNetRandomResizedCrop')
    assert (step.scale, step.sampler, step.backend) == (train_px, 'deepmind', 'tf')
    assert not [t for t in pipeline if t['type'] in ('RandomResizedCrop', 'RandAugment')]


@pytest.mark.parametrize('variant', VARIANTS)
def test_imagenet_recipe_numbers(variant):
    row = get_variant(variant)
    cfg = load(variant_path(variant))
    backbone, head = cfg.model.backbone, cfg.model.head
    assert backbone.type == 'NFNet' and backbone.arch == variant
    assert NFNet.arch_zoo[variant.lower()]['depths'] == row.depths
    assert backbone.drop_path_rate == row.drop_path_rate
    assert head.dropout_rate == row.dropout and head.in_channels == 3072
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    # MixUp / CutMix in the loader before RandAugment (NFNetMixDataset, half each, DeepMind's
    # alphas); the model's data preprocessor only normalizes (no batch augments).
    assert not cfg.model.get('train_cfg')
    mix = cfg.train_dataloader.dataset
    assert mix.type == 'NFNetMixDataset' and (mix.mixup_alpha, mix.cutmix_alpha) == (0.2, 1.0)
    assert mix.get('mix', True) and mix.get('mode_choice', 'alternate') == 'alternate'
    # batch 4096 = 8 GPUs x per-GPU batch; lr 0.1 x 4096 / 256.
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 4096
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpAGCOptimWrapper'
    assert optim.constructor == 'AGCOptimWrapperConstructor'
    assert optim.optimizer == dict(type='SGD', lr=1.6, momentum=0.9, nesterov=True,
                                   weight_decay=2e-5)
    assert optim.clip_grad == dict(type='agc', clipping=0.01, eps=1e-3,
                                   exclude=['head.fc.weight'])
    assert cfg.train_cfg.max_epochs == 360
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 5)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == (
        'CosineAnnealingLR', 5, 360, 0.)
    ema = [h for h in cfg.custom_hooks if 'EMA' in h.type]
    assert len(ema) == 1 and ema[0].momentum == 1e-5 and ema[0].ema_type == 'NFDeepMindEMA'
    raw = mix.dataset.pipeline  # before the mix: load, crop, flip
    check_train_crop(raw, row.train_size)
    pipeline_step(raw, 'RandomFlip')
    assert [t.type for t in mix.pipeline] == ['NFNetRandAugment', 'PackInputs']  # after it
    ra_cfg = pipeline_step(mix.pipeline, 'NFNetRandAugment')
    assert (ra_cfg.magnitude, ra_cfg.num_layers, ra_cfg.image_size) == (
        row.ra_magnitude, row.ra_num_layers, row.train_size)
    check_eval_pipeline(cfg.val_dataloader.dataset.pipeline, row.test_size)
    check_eval_pipeline(cfg.test_dataloader.dataset.pipeline, row.test_size)
    assert cfg.val_evaluator == dict(type='Accuracy', topk=(1, 5))


def test_lr_schedule_curve():
    """Built schedulers: ~0 at step 0, 1.6 after 5 epochs, cosine to 0 at epoch 360."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = load('configs/nfnet/f0_imagenet.py')
    epoch_len = 4
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = []
    for sched in copy.deepcopy(cfg.param_scheduler):
        sched.pop('convert_to_iter_based')
        sched.pop('by_epoch')
        cls = PARAM_SCHEDULERS.get(sched.pop('type'))
        schedulers.append(cls.build_iter_from_epoch(optimizer, epoch_length=epoch_len,
                                                    **sched))
    lrs = []
    for _ in range(360 * epoch_len):
        lrs.append(optimizer.param_groups[0]['lr'])
        for s in schedulers:
            s.step()
    warm = 5 * epoch_len
    assert lrs[0] < 1e-5
    assert np.allclose(lrs[warm - 1], 1.6, rtol=1e-6) and np.allclose(lrs[warm], 1.6)
    assert np.allclose(lrs[1], 1.6 / (warm - 1), rtol=1e-3)  # linear ramp
    mid = warm + (360 * epoch_len - warm) // 2
    assert np.isclose(lrs[mid], 0.8, rtol=1e-6)
    assert lrs[-1] < 1e-4 and all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))


@pytest.mark.parametrize('path,px', [
    ('configs/nfnet/f0_finetune_imagenet.py', 224),
    ('configs/nfnet/f0_finetune-320px_imagenet.py', 320),
    ('configs/nfnet/f0_finetune-384px_imagenet.py', 384),
    ('configs/nfnet/nf_resnet50_finetune_imagenet.py', 224),
    ('configs/nfnet/nf_resnet50_finetune-320px_imagenet.py', 320),
    ('configs/nfnet/nf_resnet50_finetune-384px_imagenet.py', 384),
])
def test_finetune_recipe_numbers(path, px):
    cfg = load(path)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 15000
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 2048
    assert cfg.optim_wrapper.optimizer.lr == 0.1
    (cosine, ) = cfg.param_scheduler
    assert (cosine.type, cosine.by_epoch, cosine.end, cosine.eta_min) == (
        'CosineAnnealingLR', False, 15000, 0.)
    init = cfg.model.backbone.init_cfg
    assert init.type == 'Pretrained' and init.prefix == 'backbone.' and init.checkpoint
    assert cfg.model.train_cfg is None  # fine-tune: no MixUp / CutMix
    assert cfg.train_dataloader.dataset.type == 'ImageNet'  # nor the recipe's mix wrapper
    if 'resnet' not in path:  # DeepMind's released F0 weights, with DeepMind's forward
        assert init.checkpoint == 'dm-nfnets://F0'
        assert cfg.model.backbone.padding == 'same'
        assert cfg.model.backbone.act_cfg == dict(type='GELU', approximate='tanh')
    check_train_crop(cfg.train_dataloader.dataset.pipeline, px)
    check_eval_pipeline(cfg.test_dataloader.dataset.pipeline, px)
    check_eval_pipeline(cfg.val_dataloader.dataset.pipeline, px)
    assert not any('EMA' in h.type for h in cfg.custom_hooks)
    expected = 'NFResNet' if 'resnet' in path else 'NFNet'
    assert cfg.model.backbone.type == expected


@pytest.mark.parametrize('variant', ['F0', 'F1', 'F2', 'F3', 'F4', 'F5', 'F6'])
def test_deepmind_eval_configs(variant):
    cfg = load(f'configs/nfnet/dm_weights/{variant.lower()}_imagenet.py')
    backbone = cfg.model.backbone
    assert backbone.arch == variant and backbone.padding == 'same'
    assert backbone.act_cfg == dict(type='GELU', approximate='tanh')
    assert (backbone.ws_eps, backbone.ws_eps_mode) == (1e-4, 'max')
    assert cfg.model.head.in_channels == 3072 and cfg.model.head.num_classes == 1000
    assert cfg.model.data_preprocessor.to_rgb is True
    check_eval_pipeline(cfg.test_dataloader.dataset.pipeline, get_variant(variant).test_size)
    assert cfg.model.head.dropout_rate == get_variant(variant).dropout
    assert cfg.test_evaluator.type == 'Accuracy'
    assert 'optim_wrapper' not in cfg and 'train_dataloader' not in cfg
    # the released weights in one line (downloaded, converted and cached by the loader)
    assert cfg.load_from == f'dm-nfnets://{variant}'


@pytest.mark.parametrize('path', [
    'configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_1x_coco.py',
    'configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_1x_coco.py',
    'configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py',
])
def test_detection_config_wiring(path):
    """FPN takes the backbone's channels; AGC skips exactly the detector's output layers."""
    cfg = load(path)
    assert cfg.default_scope == 'mmdet'
    backbone = cfg.model.backbone
    assert backbone.out_indices == (0, 1, 2, 3) and backbone.with_final_conv is False
    if 'demo' not in path:
        assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
        assert cfg.model.neck.in_channels == [256, 512, 1536, 1536]
        assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
    assert cfg.val_evaluator.type == 'CocoMetric'
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = registry('mmdet').build(shrink(cfg.model, path))
        assert list(model.backbone.out_channels) == list(cfg.model.neck.in_channels)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(wrapper).__name__ == 'AGCOptimWrapper'
    names = {id(p): n for n, p in model.named_parameters()}
    unclipped = sorted(names[id(p)] for g in wrapper.optimizer.param_groups
                       if g['agc'] is False for p in g['params'])
    assert unclipped == sorted(DET_OUTPUT_LAYERS)


def test_demo_config_is_cpu_friendly():
    cfg = load('configs/nfnet/nfnet_demo.py')
    assert cfg.optim_wrapper.type == 'AGCOptimWrapper'  # no AMP on CPU
    assert cfg.optim_wrapper.clip_grad.exclude == ['head.fc.weight', '*.bias']
    assert cfg.default_hooks.logger.interval <= 10
    assert {h.type for h in cfg.custom_hooks} >= {'NFPlotCurveHook'}
    assert cfg.train_dataloader.dataset.data_root == 'data/demo/cls'
    assert cfg.model.head.num_classes == 6


def test_every_config_is_tested():
    """The parametrization above covers all leaf configs, and there are all the variants."""
    names = set(CONFIGS)
    for variant in VARIANTS:
        assert variant_path(variant) in names
    for variant in ('F0', 'F1', 'F2', 'F3', 'F4', 'F5', 'F6'):
        assert f'configs/nfnet/dm_weights/{variant.lower()}_imagenet.py' in names
    assert all(re.match(r'configs/(nfnet|mask_rcnn)/', p) for p in names)


@pytest.mark.parametrize('path', [p for p in CONFIGS if p.startswith('configs/nfnet/')])
def test_config_holds_only_plain_values_and_round_trips(path, tmp_path):
    """The configs import the variant table: only numbers reach the config (no module,
    function or NFNetVariant object), and pretty_text / dump reload to the same config."""
    cfg = load(path)

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(cfg.to_dict())
    dumped = tmp_path / 'dumped.py'
    cfg.dump(str(dumped))
    assert Config.fromfile(str(dumped)).to_dict() == cfg.to_dict()
    assert Config.fromstring(cfg.pretty_text, '.py').to_dict() == cfg.to_dict()
