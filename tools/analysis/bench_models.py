"""The contenders of ``tools/analysis/benchmark.py``, each built as its own users build it.

* ``nfnets_mm``: the ``ImageClassifier`` of ``configs/nfnet/f{0,1,2}_imagenet.py`` (data
  preprocessor, label-smoothed loss, the recipe's ``AGCOptimWrapperConstructor`` groups,
  AGC, SGD Nesterov), stepped by ``model.train_step(data, optim_wrapper)`` exactly as
  MMEngine's train loops do; ``compile`` replaces ``model.train_step`` by
  ``torch.compile(model.train_step)``, as the runner's ``compile=dict(...)`` option does.
  The recipe mixes (MixUp / CutMix) in the data loader, so the step gets the loader's
  output: uint8 images and soft targets (``gt_score``); a config with
  ``model.train_cfg.augments`` mixes in the step instead, and then so does timm.
* ``timm``: ``dm_nfnet_f*`` stepped as timm's ``train.py`` steps it: uint8 batch to the
  device, normalize, soft targets from the loader (timm's ``FastCollateMixup``; with
  in-step mixing ``timm.data.Mixup``, MixUp 0.2 / CutMix 1.0, label smoothing 0.1),
  ``SoftTargetCrossEntropy``, ``create_optimizer_v2('sgd')`` (Nesterov, no decay on 1-d
  parameters), AGC 0.01 through ``timm.utils.dispatch_clip_grad`` on all parameters but
  the classifier's, a ``NativeScaler`` for fp16 only (timm uses none for bf16);
  ``compile`` is timm's ``--torchcompile`` (``torch.compile(model)``).
* ``nfnets_mm_unfused_ws`` (train only, on request): ``nfnets_mm`` with every
  ``ScaledStdConv2d.fused_ws = False``, the plain autograd weight standardization.
* ``resnet50``: MMPretrain's ``resnet/resnet50_8xb32_in1k.py`` classifier with
  ``OptimWrapper`` / ``AmpOptimWrapper`` and SGD, stepped like ``nfnets_mm``.

``tiny=True`` swaps each network for a few-channel version of the same family (CPU tests).
"""
import contextlib
import copy
import functools
import importlib
import os.path as osp
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn as nn

from bench_common import FORMATS, PRECISIONS

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: Few-channel NFNet used by ``--tiny`` (same block structure as F0).
TINY_NFNET = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
                  stem_channels=(8, 8, 16, 16))
TINY_RESNET = dict(depth=18, stem_channels=8, base_channels=8)
TINY_SIZE = 32
#: Every contender the tool knows; ``DEFAULT_CONTENDERS`` run unless ``--contenders`` says.
CONTENDERS = ('nfnets_mm', 'timm', 'resnet50', 'nfnets_mm_unfused_ws')
DEFAULT_CONTENDERS = CONTENDERS[:3]
#: ``torch.compile`` options when none are given (MMEngine's ``compile=True``).
DEFAULT_COMPILE = dict()


@dataclass
class Setting:
    """One benchmark point."""
    arch: str  # 'F0', 'F1', ...
    batch: int
    size: int
    precision: str  # key of PRECISIONS
    memory_format: str  # key of FORMATS
    mode: str  # 'eager' or 'compile'
    device: torch.device
    tiny: bool = False
    compile_kwargs: Optional[dict] = None
    num_classes: int = 1000

    @property
    def amp(self) -> bool:
        return self.precision != 'fp32'

    @property
    def mf(self) -> torch.memory_format:
        return FORMATS[self.memory_format]

    @property
    def lr(self) -> float:
        """The paper's linear rule, 0.1 x batch / 256 (finite losses on random data)."""
        return 0.1 * self.batch / 256


# --------------------------------------------------------------------------- helpers
def autocast(setting: Setting):
    """The autocast context of ``setting`` (a null context for fp32)."""
    if not setting.amp:
        return contextlib.nullcontext()
    return torch.autocast(setting.device.type, dtype=PRECISIONS[setting.precision])


def nfnet_out_channels(arch) -> int:
    """Channels of the last NFNet feature map, from the backbone itself (built on meta)."""
    from nfnets_mm.models.backbones import NFNet
    with torch.device('meta'):
        return NFNet(arch=arch).out_channels[-1]


def nfnet_config(arch: str, tiny: bool, memory_format: Optional[str] = None):
    """The recipe config of ``arch`` (``configs/nfnet/{arch}_imagenet.py``), a fresh copy;
    ``memory_format`` sets the backbone's own option (what a user sets), if given."""
    cfg = copy.deepcopy(_nfnet_config(arch, tiny))
    if memory_format is not None:
        cfg.model.backbone.memory_format = memory_format
    return cfg


@functools.lru_cache(maxsize=None)
def _nfnet_config(arch: str, tiny: bool):
    from mmengine.config import Config
    path = osp.join(REPO_ROOT, 'configs', 'nfnet', f'{arch.lower()}_imagenet.py')
    if not osp.exists(path):
        raise FileNotFoundError(f'No recipe config {path} for NFNet-{arch}.')
    cfg = Config.fromfile(path)
    if tiny:
        cfg.model.backbone.arch = copy.deepcopy(TINY_NFNET)
        cfg.model.head.in_channels = nfnet_out_channels(TINY_NFNET)
    return cfg


def resnet50_config(tiny: bool):
    """MMPretrain's ``resnet50_8xb32_in1k.py`` (tiny: ResNet-18 layout, 8 stem channels)."""
    return copy.deepcopy(_resnet50_config(tiny))


@functools.lru_cache(maxsize=None)
def _resnet50_config(tiny: bool):
    from mmengine.hub import get_config
    cfg = get_config('mmpretrain::resnet/resnet50_8xb32_in1k.py')
    if tiny:
        cfg.model.backbone.update(TINY_RESNET)
        cfg.model.head.in_channels = TINY_RESNET['base_channels'] * 8
    return cfg


@contextlib.contextmanager
def _cuda_check_passes():
    """Let MMEngine's ``AmpOptimWrapper`` be built on a CPU-only machine.

    Its constructor asserts a GPU/NPU/MLU/MUSA; the tool's CPU runs (``--device cpu``)
    then swap in torch's CPU ``GradScaler`` and CPU autocast (:func:`cpu_amp`).
    """
    module = importlib.import_module('mmengine.optim.optimizer.amp_optimizer_wrapper')
    saved = module.is_cuda_available
    module.is_cuda_available = lambda: True
    try:
        yield
    finally:
        module.is_cuda_available = saved


def cpu_amp(wrapper) -> None:
    """Make an MMEngine AMP wrapper run on CPU: CPU ``GradScaler``, ``torch.autocast``.

    MMEngine builds a CUDA ``GradScaler`` and its ``autocast`` refuses fp16 on CPU;
    torch itself supports both on CPU, so the same wrapper logic runs there.
    """
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', **_scaler_kwargs(wrapper))
    dtype = wrapper.cast_dtype

    @contextlib.contextmanager
    def optim_context(model):
        with torch.autocast('cpu', dtype=dtype):
            yield

    wrapper.optim_context = optim_context


def _scaler_kwargs(wrapper) -> dict:
    scale = wrapper._scale_update_param
    return {} if scale is None else dict(init_scale=scale)


def build_mm_optim_wrapper(model: nn.Module, cfg: dict, setting: Setting):
    """Build an MMEngine optim wrapper for ``setting``'s precision and device."""
    from mmengine.optim import build_optim_wrapper
    cfg = copy.deepcopy(cfg)
    if setting.amp:
        cfg['dtype'] = {'bf16': 'bfloat16', 'fp16': 'float16'}[setting.precision]
        cfg.setdefault('loss_scale', 'dynamic')
    else:
        cfg.pop('dtype', None)
        cfg.pop('loss_scale', None)
    with _cuda_check_passes() if setting.device.type == 'cpu' else contextlib.nullcontext():
        wrapper = build_optim_wrapper(model, cfg)
    if setting.amp and setting.device.type == 'cpu':
        cpu_amp(wrapper)
    return wrapper


def uint8_batch(setting: Setting, seed: int = 0):
    """Random uint8 images (N, 3, S, S) on the host (pinned for CUDA) and labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (setting.batch, 3, setting.size, setting.size),
                           generator=g, dtype=torch.uint8)
    labels = torch.randint(0, setting.num_classes, (setting.batch, ), generator=g)
    if setting.device.type == 'cuda':
        images = images.pin_memory()
    return images, labels


def soft_targets(labels: torch.Tensor, num_classes: int, lam: float = 0.7,
                 smoothing: float = 0.1) -> torch.Tensor:
    """Two-class mixtures (N, K), label-smoothed by ``smoothing``: what timm's in-step
    ``Mixup`` produces with ``smoothing=0.1``; ``NFNetMixDataset`` hands the unsmoothed
    mixture (``smoothing=0``), which the recipe's ``LabelSmoothLoss`` smooths."""
    n = labels.numel()
    target = torch.full((n, num_classes), smoothing / num_classes)
    keep = 1. - smoothing
    target.scatter_add_(1, labels[:, None], torch.full((n, 1), keep * lam))
    target.scatter_add_(1, labels.roll(1)[:, None], torch.full((n, 1), keep * (1. - lam)))
    return target


def mixes_in_step(cfg) -> bool:
    """Whether the config mixes in the data preprocessor (``train_cfg.augments``)."""
    return bool((cfg.model.get('train_cfg') or {}).get('augments'))


def _channels_last_inputs(model: nn.Module) -> None:
    """Make the data preprocessor hand the network channels_last inputs.

    MMEngine/MMPretrain have no memory-format option; the preprocessor's output is
    re-laid-out once per step (what the NF backbones' ``memory_format='channels_last'``
    does, which ``nfnets_mm`` steps also set; this covers MMPretrain's ResNet-50).
    """
    preprocessor = model.data_preprocessor
    forward = preprocessor.forward

    def channels_last_forward(data, training=False):
        data = forward(data, training)
        data['inputs'] = data['inputs'].contiguous(memory_format=torch.channels_last)
        return data

    preprocessor.forward = channels_last_forward


# ----------------------------------------------------------------------- train steps
def mm_train_step(cfg, setting: Setting, soft: bool = False,
                  prepare: Optional[Callable[[nn.Module], None]] = None
                  ) -> Callable[[], object]:
    """``model.train_step(data, optim_wrapper)`` of an MMPretrain classifier config.

    ``soft``: the data samples carry the loader's soft targets (``gt_score``) too.
    ``prepare``: called on the built model before it is moved and compiled.

    The returned step has ``forward_loss()``: the same step up to the loss (what
    ``BaseModel.train_step`` runs before ``optim_wrapper.update_params``), eager.
    """
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    if prepare is not None:
        prepare(model)
    model = model.to(setting.device, memory_format=setting.mf)
    if setting.memory_format == 'channels_last':
        _channels_last_inputs(model)
    ow_cfg = copy.deepcopy(cfg.optim_wrapper.to_dict() if hasattr(cfg.optim_wrapper, 'to_dict')
                           else dict(cfg.optim_wrapper))
    if 'AGC' in ow_cfg.get('type', 'OptimWrapper'):
        ow_cfg['type'] = 'AmpAGCOptimWrapper' if setting.amp else 'AGCOptimWrapper'
    else:
        ow_cfg['type'] = 'AmpOptimWrapper' if setting.amp else 'OptimWrapper'
    ow_cfg['optimizer']['lr'] = setting.lr
    wrapper = build_mm_optim_wrapper(model, ow_cfg, setting)
    images, labels = uint8_batch(setting)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    if soft:
        for sample, score in zip(samples, soft_targets(labels, setting.num_classes,
                                                       smoothing=0.)):
            sample.set_gt_score(score)
    data = dict(inputs=images, data_samples=samples)
    model.train()
    if setting.mode == 'compile':
        # What MMEngine's Runner._maybe_compile('train_step') does.
        model.train_step = torch.compile(model.train_step, **(setting.compile_kwargs or {}))

    def step():
        return model.train_step(data, wrapper)

    def forward_loss():
        # BaseModel.train_step up to the loss
        with wrapper.optim_context(model):
            batch = model.data_preprocessor(data, True)
            losses = model._run_forward(batch, mode='loss')
        return model.parse_losses(losses)[0]

    step.forward_loss = forward_loss
    step.model = model
    step.wrapper = wrapper
    step.data = data
    return step


def nfnets_mm_train_step(setting: Setting) -> Callable[[], object]:
    cfg = nfnet_config(setting.arch, setting.tiny, setting.memory_format)
    return mm_train_step(cfg, setting, soft=not mixes_in_step(cfg))


def unfused_ws(model: nn.Module) -> None:
    """Select the plain autograd weight standardization in every ``ScaledStdConv2d`` of
    ``model`` (the instance attribute ``fused_ws = False``; other models keep the fused op)."""
    from nfnets_mm.models.layers import ScaledStdConv2d
    found = 0
    for module in model.modules():
        if isinstance(module, ScaledStdConv2d):
            module.fused_ws = False
            found += 1
    if not found:
        raise ValueError('unfused_ws: the model has no ScaledStdConv2d.')


def nfnets_mm_unfused_ws_train_step(setting: Setting) -> Callable[[], object]:
    """``nfnets_mm`` with ``ScaledStdConv2d.fused_ws = False``: what the fused WS op saves."""
    cfg = nfnet_config(setting.arch, setting.tiny, setting.memory_format)
    return mm_train_step(cfg, setting, soft=not mixes_in_step(cfg), prepare=unfused_ws)


def resnet50_train_step(setting: Setting) -> Callable[[], object]:
    return mm_train_step(resnet50_config(setting.tiny), setting)


def timm_nfnet(arch: str, tiny: bool, **kwargs) -> nn.Module:
    """timm's ``dm_nfnet_{arch}`` (or a tiny ``NormFreeNet`` of the same config family)."""
    import timm
    from timm.models import nfnet as timm_nfnet_module
    if tiny:
        cfg = timm_nfnet_module._dm_nfnet_cfg(depths=TINY_NFNET['depths'],
                                              channels=TINY_NFNET['widths'])
        cfg = replace(cfg, stem_chs=TINY_NFNET['stem_channels'][-1],
                      group_size=TINY_NFNET['group_width'])
        return timm_nfnet_module.NormFreeNet(cfg, **kwargs)
    return timm.create_model(f'dm_nfnet_{arch.lower()}', **kwargs)


def timm_train_step(setting: Setting) -> Callable[[], object]:
    """One iteration of timm's ``train.py`` loop for ``dm_nfnet_*`` with AGC."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.models import model_parameters
    from timm.utils import NativeScaler, dispatch_clip_grad

    from nfnets_mm.variants import get_variant
    variant = get_variant(setting.arch)
    device = setting.device
    model = timm_nfnet(setting.arch, setting.tiny, num_classes=setting.num_classes,
                       drop_rate=variant.dropout, drop_path_rate=variant.drop_path_rate)
    model = model.to(device, memory_format=setting.mf).train()
    optimizer = create_optimizer_v2(model, 'sgd', lr=setting.lr, weight_decay=2e-5,
                                    momentum=0.9)
    clip_params = model_parameters(model, exclude_head=True)
    if setting.mode == 'compile':
        model = torch.compile(model, **(setting.compile_kwargs or {}))
    mixup = None
    if mixes_in_step(nfnet_config(setting.arch, setting.tiny)):
        mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1,
                      num_classes=setting.num_classes)
    loss_fn = SoftTargetCrossEntropy()
    scaler = NativeScaler(device.type) if setting.precision == 'fp16' else None
    images, labels = uint8_batch(setting)
    targets = soft_targets(labels, setting.num_classes)
    if device.type == 'cuda':
        targets = targets.pin_memory()
    # timm's loader normalizes with ImageNet mean/std (0-255 scale here)
    mean = torch.tensor([123.675, 116.28, 103.53], device=device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], device=device).view(1, 3, 1, 1)

    def forward_loss():
        x = images.to(device, non_blocking=True).float().sub_(mean).div_(std)
        x = x.contiguous(memory_format=setting.mf)
        if mixup is not None:
            x, target = mixup(x, labels.to(device, non_blocking=True))
        else:  # mixed by the loader (timm's FastCollateMixup)
            target = targets.to(device, non_blocking=True)
        with autocast(setting):
            return loss_fn(model(x), target)

    def step():
        loss = forward_loss()
        optimizer.zero_grad()
        if scaler is not None:
            scaler(loss, optimizer, clip_grad=0.01, clip_mode='agc', parameters=clip_params)
        else:
            loss.backward()
            dispatch_clip_grad(clip_params, 0.01, mode='agc')
            optimizer.step()
        return loss

    step.forward_loss = forward_loss
    step.model = model
    return step


TRAIN_STEPS = dict(nfnets_mm=nfnets_mm_train_step, timm=timm_train_step,
                   resnet50=resnet50_train_step,
                   nfnets_mm_unfused_ws=nfnets_mm_unfused_ws_train_step)


# ------------------------------------------------------- module names for breakdowns
#: timm ``NormFreeNet`` module names -> ours (``NFNet`` in an ``ImageClassifier``, without
#: the ``backbone.`` prefix), by position in the network: timm numbers a block's
#: activations from the pre-activation (``act1``) on, we name that one ``pre_act``; its
#: stem's from ``act2``; its SE's ReLU / sigmoid / identity-norm are modules, ours are ops
#: of the SE module.  Applied in order, each to the result of the previous one.
TIMM_TO_OURS = (
    (r'^(stages\.\d+\.\d+)\.act1$', r'\1.pre_act'), (r'^(stages\.\d+\.\d+)\.act2$', r'\1.act1'),
    (r'^(stages\.\d+\.\d+)\.act2b$', r'\1.act2'), (r'^(stages\.\d+\.\d+)\.act3$', r'\1.act2b'),
    (r'^stem\.act(\d)$', lambda m: f'stem.act{int(m.group(1)) - 1}'),
    (r'\.attn_last', '.se'), (r'\.se\.(act|gate|bn)$', '.se'),
    (r'\.downsample\.conv$', '.shortcut_conv'), (r'\.downsample\.pool$', '.shortcut_pool'),
    (r'\.downsample$', ''), (r'^final_conv$', 'final.conv'), (r'^final_act$', 'final.act'),
    (r'^head\.global_pool(\.\w+)?$', 'neck.gap'), (r'^head\.drop$', 'head.dropout'),
    (r'^head\.flatten$', 'head'), (r'^$', 'loss'),  # timm's loss runs outside the model
)


def common_module_name(contender: str, name: str) -> str:
    """``name`` (a module of ``contender``'s model, ``''`` = outside every module) in one
    naming shared by ``nfnets_mm`` and ``timm``: ours without ``backbone.``, with a gamma
    activation's inner activation (``act1.act``) folded into it and the loss module as
    ``loss``; timm's renamed by :data:`TIMM_TO_OURS`."""
    import re
    if contender.startswith('nfnets_mm'):
        name = re.sub(r'^backbone\.', '', name)
        name = re.sub(r'^head\.loss_module(\.\w+)?$', 'loss', name)
        return re.sub(r'((?:^|\.)(?:pre_act|act\w*))\.act$', r'\1', name)
    if contender == 'timm':
        for pattern, repl in TIMM_TO_OURS:
            name = re.sub(pattern, repl, name)
    return name


def stage_and_role(name: str):
    """``('stages.2', 'conv1')`` for ``stages.2.<block>.conv1`` (a common name; blocks of a
    stage share one row), ``('stem', 'stem.conv1')`` for the rest."""
    parts = name.split('.')
    if parts[0] == 'stages' and len(parts) > 1:
        return f'stages.{parts[1]}', '.'.join(parts[3:]) or '(block)'
    return (parts[0] or '(outside modules)'), (name or '(outside modules)')


# ------------------------------------------------------------------ inference models
def inference_models(setting: Setting, contenders) -> dict:
    """name -> callable(x) for the inference benchmark (eval mode, normalized input).

    ``nfnets_mm`` gives three rows: ``ws-every-forward`` (gradients enabled, so weight
    standardization runs in each call, as in training), ``eval-cached`` (``no_grad``:
    standardized weights cached until the weights change) and ``deployed``
    (``switch_to_deploy()``: plain convs, what export uses).
    """
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    out = {}

    def prepare(model):
        model = model.to(setting.device, memory_format=setting.mf).eval()
        if setting.mode == 'compile':
            return model, torch.compile(model, **(setting.compile_kwargs or {}))
        return model, model

    def no_grad_call(fn):
        def call(x):
            with torch.no_grad(), autocast(setting):
                return fn(x)
        return call

    if 'nfnets_mm' in contenders:
        cfg = nfnet_config(setting.arch, setting.tiny, setting.memory_format)
        ws_model, ws_fn = prepare(MODELS.build(cfg.model))

        def ws_every_forward(x):
            with autocast(setting):
                return ws_fn(x)

        out['nfnets_mm ws-every-forward'] = ws_every_forward
        cached_model, cached_fn = prepare(MODELS.build(cfg.model))
        cached_model.load_state_dict(ws_model.state_dict())
        out['nfnets_mm eval-cached'] = no_grad_call(cached_fn)
        deployed = MODELS.build(cfg.model)
        deployed.load_state_dict(ws_model.state_dict())
        deployed.backbone.switch_to_deploy()
        out['nfnets_mm deployed'] = no_grad_call(prepare(deployed)[1])
    if 'timm' in contenders:
        out['timm'] = no_grad_call(prepare(timm_nfnet(setting.arch, setting.tiny,
                                                      num_classes=setting.num_classes))[1])
    if 'resnet50' in contenders:
        out['resnet50'] = no_grad_call(prepare(MODELS.build(resnet50_config(setting.tiny)
                                                            .model))[1])
    return out
