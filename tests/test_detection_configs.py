"""The paper's COCO setting (configs/mask_rcnn/*lsj-22.5k*), AGC exclusion on the built
detector, ``frozen_stages`` in a detector and the backbone / neck wiring check."""
import copy
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO_ROOT, TINY_NFNET_ARCH, detector_step
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from nfnets_mm.engine.hooks import (NeckWiringError, NFNeckWiringCheckHook, check_neck_wiring,
                                    install_neck_input_check)
from nfnets_mm.engine.optim_wrappers.agc_constructor import (DETECTOR_OUTPUT_LAYERS,
                                                             detector_output_layers)
from nfnets_mm.variants import get_variant

LSJ = 'configs/mask_rcnn/mask-rcnn_nfnet-{}_fpn_64xb4-amp-lsj-22.5k_coco.py'
MODEL_BASE = 'configs/_base_/models/mask-rcnn_nfnet_fpn.py'
#: Mask R-CNN's output layers, as named by model.named_parameters().
OUTPUT_LAYERS = ('rpn_head.rpn_cls.weight', 'rpn_head.rpn_reg.weight',
                 'roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_reg.weight',
                 'roi_head.mask_head.conv_logits.weight')


def load(path: str) -> Config:
    return Config.fromfile(osp.join(REPO_ROOT, path))


def build_detector(model_cfg):
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(model_cfg)


def mmdet_lsj_base() -> Config:
    """MMDetection's own LSJ setting, the configs' base."""
    import mmdet
    return Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'common',
                                    'lsj-100e_coco-instance.py'))


@pytest.mark.parametrize('variant', ['F0', 'F1'])
def test_lsj_config_is_the_papers_setting(variant):
    cfg = load(LSJ.format(variant.lower()))
    backbone = cfg.model.backbone
    assert backbone.type == 'NFNet' and backbone.arch == variant
    assert backbone.out_indices == (0, 1, 2, 3) and backbone.with_final_conv is False
    assert (backbone.padding, backbone.act_cfg) == ('same', dict(type='GELU',
                                                                  approximate='tanh'))
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'dm-nfnets://{variant}',
                                     prefix='backbone.')
    assert cfg.model.neck.in_channels == list(get_variant(variant).widths)
    # 22,500 iterations at batch 256 (paper Sec. 6.3)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 22500
    assert cfg.gpus * cfg.train_dataloader.batch_size == cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.train_dataloader.sampler.type == 'InfiniteSampler'
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'  # no epoch RepeatDataset
    # Ghiasi et al.'s large-scale jitter at 1024 px, from mmdet's LSJ base
    mmdet_lsj = mmdet_lsj_base()
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [{k: v for k, v in t.items() if k != '_scope_'} for t in pipeline] == \
        mmdet_lsj.train_pipeline
    (jitter, ) = [t for t in pipeline if t.type == 'RandomResize']
    assert tuple(jitter.scale) == (1024, 1024) and tuple(jitter.ratio_range) == (0.1, 2.0)
    (crop, ) = [t for t in pipeline if t.type == 'RandomCrop']
    assert tuple(crop.crop_size) == (1024, 1024)
    # the input normalization DeepMind's weights were trained with (nfnets/dataset.py)
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.bgr_to_rgb is True
    assert preprocessor.mean == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert preprocessor.std == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])
    (pad, ) = preprocessor.batch_augments
    assert pad.type == 'BatchFixedSizePad' and tuple(pad.size) == (1024, 1024) and pad.pad_mask
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        (resize, ) = [t for t in loader.dataset.pipeline if t.type == 'Resize']
        assert tuple(resize.scale) == (1024, 1024) and resize.keep_ratio
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
    # Ghiasi et al.'s optimisation: SGD 0.32 at batch 256, wd 4e-5, warmup 1000 steps from
    # 0.0032, x0.1 at 90 / 95 / 97.5% of the steps; bf16 autocast; AGC.
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpAGCOptimWrapper'
    assert (optim.dtype, optim.loss_scale) == ('float16', 'auto')  # see the next test
    assert optim.constructor == 'AGCOptimWrapperConstructor'
    assert optim.optimizer == dict(type='SGD', lr=0.32, momentum=0.9, weight_decay=4e-5)
    assert optim.clip_grad == dict(type='agc', clipping=0.01, eps=1e-3,
                                   exclude=detector_output_layers('MaskRCNN'))
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.begin, warmup.end) == ('LinearLR', False, 0,
                                                                        1000)
    assert warmup.start_factor * optim.optimizer.lr == pytest.approx(0.0032)
    assert (steps.type, steps.by_epoch, steps.end, steps.gamma) == ('MultiStepLR', False,
                                                                    22500, 0.1)
    assert [m / 22500 for m in steps.milestones] == pytest.approx([0.9, 0.95, 0.975],
                                                                  abs=1e-4)
    assert cfg.default_hooks.checkpoint.by_epoch is False and cfg.log_processor.by_epoch is False
    assert cfg.default_hooks.neck_wiring.type == 'NFNeckWiringCheckHook'


def test_mmcv_roi_align_still_lacks_bf16():
    """Why the detection configs autocast to fp16, not bf16 (DeepMind's precision): mmcv's
    RoIAlign has no bf16 kernel. When this fails, mmcv gained one: switch the LSJ base to
    dtype='auto' and update its comment."""
    from mmcv.ops import roi_align
    feats, rois = torch.randn(1, 4, 16, 16), torch.tensor([[0., 1., 1., 9., 9.]])
    assert roi_align(feats.half(), rois.half(), (7, 7), 1.0, 0).dtype == torch.float16
    with pytest.raises((NotImplementedError, RuntimeError), match='BFloat16'):
        roi_align(feats.bfloat16(), rois.bfloat16(), (7, 7), 1.0, 0)


def test_f1_differs_from_f0_only_in_the_variant():
    f0, f1 = load(LSJ.format('f0')), load(LSJ.format('f1'))
    f0_dict, f1_dict = copy.deepcopy(f0.to_dict()), copy.deepcopy(f1.to_dict())
    for d in (f0_dict, f1_dict):
        d['model']['backbone'].pop('arch')
        d['model']['backbone'].pop('init_cfg')
        d.pop('variant')
    assert f0_dict == f1_dict


@pytest.mark.parametrize('variant', ['F0', 'F1'])
def test_1x_configs_share_the_model_base(variant):
    """mmdet's 1x schedule (fp32, batch 16) with the same NFNet model as the LSJ configs."""
    cfg = load(f'configs/mask_rcnn/mask-rcnn_nfnet-{variant.lower()}_fpn_1x_coco.py')
    lsj = load(LSJ.format(variant.lower()))
    model = copy.deepcopy(cfg.model.to_dict())
    lsj_model = copy.deepcopy(lsj.model.to_dict())
    model.pop('data_preprocessor')
    lsj_model.pop('data_preprocessor')  # LSJ pads to 1024 x 1024
    assert model == lsj_model
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2
    assert cfg.optim_wrapper.type == 'AGCOptimWrapper'
    assert cfg.optim_wrapper.clip_grad.exclude == detector_output_layers('MaskRCNN')
    assert cfg.default_hooks.neck_wiring.type == 'NFNeckWiringCheckHook'


@pytest.fixture(scope='module')
def f0_lsj_detector():
    """The F0 LSJ detector as configured (F0 size; no init_weights: no download)."""
    cfg = load(LSJ.format('f0'))
    return cfg, build_detector(cfg.model)


def build_configured_wrapper(model, optim_cfg, monkeypatch):
    """The configured (AMP) wrapper; MMEngine's AmpOptimWrapper refuses to build without
    a GPU, which only matters for the step, not for the parameter groups tested here."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    return build_optim_wrapper(model, optim_cfg)


def test_agc_excludes_exactly_the_output_layers_of_the_built_detector(f0_lsj_detector,
                                                                        monkeypatch):
    cfg, model = f0_lsj_detector
    assert check_neck_wiring(model)
    wrapper = build_configured_wrapper(model, cfg.optim_wrapper, monkeypatch)
    assert type(wrapper).__name__ == 'AmpAGCOptimWrapper'
    names = {id(p): n for n, p in model.named_parameters()}
    unclipped = sorted(names[id(p)] for g in wrapper.optimizer.param_groups
                       if g['agc'] is False for p in g['params'])
    assert unclipped == sorted(OUTPUT_LAYERS)
    assert len(detector_output_layers('MaskRCNN')) == len(OUTPUT_LAYERS)  # one match each
    decayed = {names[id(p)] for g in wrapper.optimizer.param_groups if g['weight_decay'] > 0
               for p in g['params']}
    assert 'backbone.stem.conv1.weight' in decayed
    assert not any(n.endswith(('.gain', '.bias', 'skip_gain')) for n in decayed)


@pytest.mark.parametrize('pattern', ['*fc_cls.weights', 'roi_head.mask_head.logits.weight'])
def test_exclusion_pattern_matching_nothing_in_the_detector_is_an_error(
        f0_lsj_detector, monkeypatch, pattern):
    cfg, model = f0_lsj_detector
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg.clip_grad.exclude = detector_output_layers('MaskRCNN') + [pattern]
    with pytest.raises(ValueError) as info:
        build_configured_wrapper(model, optim_cfg, monkeypatch)
    message = str(info.value)
    assert pattern in message and 'MaskRCNN' in message
    assert any(name in message for name in OUTPUT_LAYERS)  # the closest real names


def test_unknown_detector_type_names_the_known_ones():
    with pytest.raises(ValueError) as info:
        detector_output_layers('FCOS')
    message = str(info.value)
    assert "'FCOS'" in message and all(k in message for k in DETECTOR_OUTPUT_LAYERS)


def tiny_mask_rcnn(**backbone):
    """The configs' model base with a tiny NFNet arch (and matching FPN)."""
    cfg = load(MODEL_BASE).model
    cfg.backbone.update(arch=TINY_NFNET_ARCH, init_cfg=None, drop_path_rate=0., **backbone)
    cfg.neck.update(in_channels=list(TINY_NFNET_ARCH['widths']), out_channels=32)
    cfg.rpn_head.update(in_channels=32, feat_channels=32)
    cfg.roi_head.bbox_roi_extractor.out_channels = 32
    cfg.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64, num_classes=2)
    cfg.roi_head.mask_roi_extractor.out_channels = 32
    cfg.roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_convs=1,
                                  num_classes=2)
    return cfg


def detector_losses(model, size=64):
    losses = detector_step(model, size)
    return sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
               for k, v in losses.items() if 'loss' in k)


def test_frozen_stages_in_a_detector_work_like_resnet():
    """Stem + first N stages: no grad, eval mode after ``model.train()``, unchanged by a
    step; the rest of the backbone and the detector train."""
    model = build_detector(tiny_mask_rcnn(frozen_stages=2, skipinit_value=1.))
    model.train()
    backbone = model.backbone
    frozen = [backbone.stem, backbone.stages[0], backbone.stages[1]]
    assert all(not m.training for f in frozen for m in f.modules())
    assert backbone.stages[2].training and model.neck.training
    frozen_ids = {id(p) for f in frozen for p in f.parameters()}
    assert frozen_ids and all(not p.requires_grad for f in frozen for p in f.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, dict(
        type='AGCOptimWrapper', constructor='AGCOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
        clip_grad=dict(type='agc', clipping=0.01, exclude=detector_output_layers('MaskRCNN'))))
    wrapper.update_params(detector_losses(model))
    for name, param in model.named_parameters():
        if id(param) in frozen_ids:
            assert param.grad is None and torch.equal(param, before[name]), name
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith('backbone.stages.2.') for n in changed)
    assert any(n.startswith('backbone.stages.3.') for n in changed)
    assert any(n.startswith('neck.') for n in changed)


def test_wiring_check_names_both_lists():
    cfg = tiny_mask_rcnn()
    cfg.neck.in_channels = [32, 64, 128, 256]
    model = build_detector(cfg)
    with pytest.raises(NeckWiringError) as info:
        NFNeckWiringCheckHook().before_run(SimpleNamespace(model=model))
    message = str(info.value)
    assert '[32, 64, 128, 128]' in message and '[32, 64, 128, 256]' in message
    assert 'NFNet' in message and 'FPN' in message


def resnet18_fpn(in_channels):
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3)))
        neck = MODELS.build(dict(type='FPN', in_channels=in_channels, out_channels=16,
                                 num_outs=4))
    backbone.eval()  # BN statistics of 1x1 maps; mmdet's ResNet.train returns None
    return SimpleNamespace(backbone=backbone, neck=neck)


def test_wiring_check_for_backbones_without_out_channels_checks_the_first_forward():
    """mmdet's ResNet exposes no out_channels: the neck's first input is checked instead,
    before FPN's bare assert or a convolution shape error."""
    model = resnet18_fpn([256, 512, 1024, 2048])  # ResNet-50's widths on a ResNet-18
    assert not check_neck_wiring(model)
    NFNeckWiringCheckHook().before_run(SimpleNamespace(model=model))
    with pytest.raises(NeckWiringError) as info:
        model.neck(model.backbone(torch.randn(1, 3, 32, 32)))
    message = str(info.value)
    assert '[64, 128, 256, 512]' in message and '[256, 512, 1024, 2048]' in message

    model = resnet18_fpn([64, 128, 256, 512])
    handle = install_neck_input_check(model)
    assert handle is not None and len(model.neck._forward_pre_hooks) == 1
    outs = model.neck(model.backbone(torch.randn(1, 3, 32, 32)))
    assert len(outs) == 4 and not model.neck._forward_pre_hooks  # removed once it passed


def test_wiring_check_of_a_single_map_neck_compares_the_last_map():
    """Necks with an int in_channels (YOLOF's DilatedEncoder ...) take the last map."""
    from nfnets_mm.models.backbones import NFNet
    backbone = NFNet(arch=TINY_NFNET_ARCH, out_indices=(0, 1, 2, 3), with_final_conv=False)
    neck = torch.nn.Module()
    neck.in_channels = 128
    assert check_neck_wiring(SimpleNamespace(backbone=backbone, neck=neck))
    neck.in_channels = 2048
    with pytest.raises(NeckWiringError, match=r'\[32, 64, 128, 128\].*in_channels=2048'):
        check_neck_wiring(SimpleNamespace(backbone=backbone, neck=neck))
