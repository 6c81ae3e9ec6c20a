"""AMP + AGC correctness on CPU: the recipe's ``AmpAGCOptimWrapper`` vs fp32 ``AGCOptimWrapper``.

The checks the GPU benchmark used to run (formerly ``tools/benchmark_amp_gpu.py``, part 1),
on the recipe config's classifier (``configs/nfnet/f0_imagenet.py``, tiny arch), for
bfloat16 and float16:

* injected gradients: the AMP wrapper gets the fp32 gradients multiplied by its loss scale
  (as ``backward`` leaves them); AGC must clip the *unscaled* gradients, so clipped
  gradients and updated weights equal the fp32 wrapper's to 1e-6;
* one ``inf`` in a gradient: the update is skipped (weights bitwise equal, no momentum
  state), the loss scale halves, ``train/agc_skipped`` is 1 and the clip statistics NaN;
* a real autocast forward/backward through the wrapper's own ``optim_context``.

What CPU cannot reach, and how it is stood in for: MMEngine's ``AmpOptimWrapper`` asserts
a GPU/NPU/MLU/MUSA in its constructor (patched here) and builds a *CUDA* ``GradScaler``,
which disables itself without CUDA (no scaling, no inf skipping); the tests swap in torch's
CPU ``GradScaler`` (same class, same ``unscale_`` / ``step`` / ``update`` logic).
MMEngine's ``autocast`` supports bfloat16 on CPU, so the bf16 forward uses the wrapper's
real ``optim_context``; it refuses float16 on CPU (asserted below), so the fp16 forward
uses ``torch.autocast('cpu', dtype=torch.float16)`` directly.
"""
import copy
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from nfnets_mm.engine.optim_wrappers import AGCOptimWrapper, AmpAGCOptimWrapper

TINY = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
            stem_channels=(8, 8, 16, 16))
DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}
SCALE = 2.**16
LR = 0.1


def recipe_cfg() -> Config:
    cfg = Config.fromfile('configs/nfnet/f0_imagenet.py')
    cfg.model.backbone.arch = copy.deepcopy(TINY)
    cfg.model.backbone.drop_path_rate = 0.  # deterministic forward for the comparisons
    cfg.model.head.in_channels = 256  # tiny final conv: 2 x 128
    cfg.model.head.dropout_rate = 0.
    cfg.model.train_cfg = None  # no MixUp/CutMix: the same batch for every forward
    return cfg


def make_model(cfg: Config):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    # non-zero skip gains: every residual branch gets a gradient (0 at the paper's init)
    for name, p in model.named_parameters():
        if name.endswith('skip_gain'):
            p.data.fill_(0.5)
    return model


def make_wrapper(model, cfg: Config, precision: str, monkeypatch):
    ow = copy.deepcopy(cfg.optim_wrapper.to_dict())
    ow['optimizer']['lr'] = LR
    if precision == 'fp32':
        ow['type'] = 'AGCOptimWrapper'
        ow.pop('loss_scale', None)
        ow.pop('dtype', None)
        return build_optim_wrapper(model, ow)
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    ow.update(type='AmpAGCOptimWrapper', dtype=DTYPES[precision], loss_scale='dynamic')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "torch.cuda.amp.GradScaler ... CUDA is not available"
        wrapper = build_optim_wrapper(model, ow)
    assert isinstance(wrapper, AmpAGCOptimWrapper)
    assert not wrapper.loss_scaler.is_enabled()  # MMEngine's CUDA scaler is off on CPU
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=SCALE)
    # GradScaler creates its scale in the first scale(); injected gradients skip that
    wrapper.loss_scaler.scale(torch.zeros(()))
    return wrapper


def batch(model, seed: int = 1):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    data = dict(inputs=torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8),
                data_samples=[DataSample().set_gt_label(int(y))
                              for y in torch.randint(0, 1000, (4, ), generator=g)])
    return model.data_preprocessor(data, True)


def loss_of(model, data):
    losses = model(**data, mode='loss')
    return sum(v for k, v in losses.items() if 'loss' in k)


def rel(a, b) -> float:
    """max over tensors of ||a - b|| / ||b||."""
    return max(float(torch.linalg.vector_norm(x.double() - y.double()) /
                     torch.linalg.vector_norm(y.double()).clamp_min(1e-30))
               for x, y in zip(a, b))


@pytest.fixture(scope='module')
def reference():
    """fp32 gradients (x 20: many units clipped) and one fp32 AGCOptimWrapper step."""
    cfg = recipe_cfg()
    model = make_model(cfg)
    init = copy.deepcopy(model.state_dict())
    data = batch(model)
    loss_of(model, data).backward()
    grads = [p.grad.detach() * 20 for p in model.parameters()]
    mp = pytest.MonkeyPatch()
    wrapper = make_wrapper(model, cfg, 'fp32', mp)
    assert isinstance(wrapper, AGCOptimWrapper)
    w0 = [p.detach().clone() for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    wrapper.step()
    fraction = float(wrapper.message_hub.get_scalar('train/agc_clip_fraction').current())
    return dict(cfg=cfg, init=init, data=data, grads=grads, w0=w0, fraction=fraction,
                clipped=[p.grad.clone() for p in model.parameters()],
                weights=[p.detach().clone() for p in model.parameters()])


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_injected_scaled_grads_clip_like_fp32(reference, precision, monkeypatch):
    ref = reference
    assert 0.1 < ref['fraction'] < 1  # the check is only meaningful if AGC clips
    model = make_model(ref['cfg'])
    model.load_state_dict(ref['init'])
    wrapper = make_wrapper(model, ref['cfg'], precision, monkeypatch)
    for p, g in zip(model.parameters(), ref['grads']):
        p.grad = g * SCALE
    wrapper.step()
    clipped = [p.grad for p in model.parameters()]
    weights = [p.detach() for p in model.parameters()]
    assert rel(clipped, ref['clipped']) <= 1e-6
    assert rel([w - w0 for w, w0 in zip(weights, ref['w0'])],
               [w - w0 for w, w0 in zip(ref['weights'], ref['w0'])]) <= 1e-6
    fraction = float(wrapper.message_hub.get_scalar('train/agc_clip_fraction').current())
    assert fraction == ref['fraction']
    assert wrapper.loss_scaler.get_scale() == SCALE  # finite: nothing skipped


def test_clipping_scaled_grads_would_be_caught(reference):
    """Negative control: AGC on the still-scaled gradients (the bug the check above
    guards against) gives clipped gradients far from the fp32 ones."""
    from nfnets_mm.engine.optim_wrappers import adaptive_clip_grad_
    ref = reference
    model = make_model(ref['cfg'])
    model.load_state_dict(ref['init'])
    params = list(model.parameters())
    for p, g in zip(params, ref['grads']):
        p.grad = g * SCALE
    adaptive_clip_grad_(params[:-2] + params[-1:], clipping=0.01, eps=1e-3)  # not head.fc.w
    unscaled = [p.grad / SCALE for p in params]
    assert rel(unscaled, ref['clipped']) > 0.5


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_inf_gradient_skips_the_update(reference, precision, monkeypatch):
    ref = reference
    model = make_model(ref['cfg'])
    model.load_state_dict(ref['init'])
    wrapper = make_wrapper(model, ref['cfg'], precision, monkeypatch)
    for p, g in zip(model.parameters(), ref['grads']):
        p.grad = g * SCALE
    first = next(model.parameters())
    first.grad.view(-1)[0] = float('inf')
    before = [p.detach().clone() for p in model.parameters()]
    wrapper.step()
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert len(wrapper.optimizer.state) == 0  # no momentum buffer was created
    assert wrapper.loss_scaler.get_scale() == SCALE / 2
    hub = wrapper.message_hub
    assert hub.get_scalar('train/agc_skipped').current() == 1
    assert torch.isnan(torch.tensor(hub.get_scalar('train/agc_clip_fraction').current()))
    assert wrapper.skipped_updates == 1


def test_mmengine_cpu_autocast_refuses_fp16():
    """Why the fp16 forward below uses torch.autocast directly."""
    from mmengine.runner.amp import autocast
    with pytest.raises(AssertionError, match='bfloat16'):
        with autocast(device_type='cpu', dtype=torch.float16):
            pass


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_autocast_forward_backward_step(reference, precision, monkeypatch):
    """A real mixed-precision step: low-precision activations, fp32 master weights, and
    an update close to the fp32 wrapper's on the same batch (AMP rounding only)."""
    ref = reference
    dtype = getattr(torch, DTYPES[precision])
    fp32_model = make_model(ref['cfg'])
    fp32_model.load_state_dict(ref['init'])
    fp32 = make_wrapper(fp32_model, ref['cfg'], 'fp32', monkeypatch)
    fp32.update_params(loss_of(fp32_model, ref['data']))

    model = make_model(ref['cfg'])
    model.load_state_dict(ref['init'])
    wrapper = make_wrapper(model, ref['cfg'], precision, monkeypatch)
    seen = []
    hook = model.backbone.stem.conv1.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    context = (wrapper.optim_context(model) if precision == 'bf16'
               else torch.autocast('cpu', dtype=dtype))
    with context:
        loss = loss_of(model, ref['data'])
    hook.remove()
    assert seen == [dtype]
    wrapper.update_params(loss)
    assert wrapper.loss_scaler.get_scale() == SCALE  # no overflow at this scale
    assert all(p.dtype == torch.float32 for p in model.parameters())
    deltas = [p.detach() - w0 for p, w0 in zip(model.parameters(), ref['w0'])]
    fp32_deltas = [p.detach() - w0 for p, w0 in zip(fp32_model.parameters(), ref['w0'])]
    total = float(sum(torch.linalg.vector_norm(d - f) ** 2 for d, f in zip(deltas, fp32_deltas))
                  ** 0.5 / sum(torch.linalg.vector_norm(f) ** 2 for f in fp32_deltas) ** 0.5)
    assert 0 < total < 0.1  # AMP rounding moves the update a little, never wholesale
