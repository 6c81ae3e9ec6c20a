"""Folded constant scales (``fold_scales=True``) compute what the literal paper formula does.

The folded backbone hands every gamma activation's gamma (and a block's ``1 / beta``) to the
WS conv(s) it feeds as ``input_scale``, and merges SE, stochastic depth, skip gain and alpha
into one ``addcmul``.  These tests compare it with ``fold_scales=False`` (module by module),
check the conv-level identity on every standardization path, and count the activation-sized
elementwise ops so that undoing the folding fails.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nfnets_mm.models import NFNet, NFResNet
from nfnets_mm.models.backbones.nf_blocks import NFNetBlock, NFResNetBottleneck
from nfnets_mm.models.layers import GammaAct, ScaledStdConv2d, StochasticDepth

# Depth 2 in stage 1 gives a non-transition block; every stage's first block is a transition.
NFNET_ARCH = dict(depths=(1, 2, 1, 1), widths=(16, 32, 48, 48), group_width=8,
                  stem_channels=(8, 8, 16, 16))

BACKBONES = {
    'nfnet-se-symmetric': lambda **kw: NFNet(arch=NFNET_ARCH, padding='symmetric', **kw),
    'nfnet-nose-same': lambda **kw: NFNet(arch=dict(NFNET_ARCH, se_ratio=0.), padding='same',
                                          **kw),
    'nfresnet-se-avgdown': lambda **kw: NFResNet(depth=26, stem_channels=8, se_ratio=0.25,
                                                 avg_down=True, **kw),
    'nfresnet-nose-same': lambda **kw: NFResNet(depth=26, stem_channels=8, padding='same',
                                                **kw),
}


def _pair(name, dtype=torch.float32, memory_format=torch.contiguous_format):
    """The folded and the unfolded backbone with the same (randomized) state dict."""
    kwargs = dict(out_indices=(0, 1, 2, 3), drop_path_rate=0.6, skipinit_value=0.5)
    torch.manual_seed(0)
    folded = BACKBONES[name](fold_scales=True, **kwargs)
    with torch.no_grad():  # gains and biases away from their init, so that they matter
        for pname, param in folded.named_parameters():
            if pname.endswith(('.gain', '.bias')):
                param.add_(torch.randn_like(param) * 0.2)
    unfolded = BACKBONES[name](fold_scales=False, **kwargs)
    unfolded.load_state_dict(folded.state_dict())
    return [m.to(dtype=dtype, memory_format=memory_format).train() for m in (folded, unfolded)]


def _run(model, x, seed=1):
    """Outputs and parameter gradients of one forward/backward with a fixed seed
    (the stochastic-depth masks are drawn from it); the loss weights every output by a
    fixed random factor in [0.5, 1.5)."""
    model.zero_grad()
    torch.manual_seed(seed)
    outs = model(x)
    weights = torch.Generator().manual_seed(seed)
    sum((o * (0.5 + torch.rand(o.shape, generator=weights, dtype=o.dtype))).sum()
        for o in outs).backward()
    return outs, {n: p.grad for n, p in model.named_parameters()}


def _assert_rel_close(actual, expected, rel, what):
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= rel * scale, f'{what}: diff {diff:.3g} vs scale {scale:.3g}'


@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('dtype,rel', [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_folded_equals_module_by_module(name, dtype, rel, monkeypatch):
    channels_last = name.endswith('same')
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    folded, unfolded = _pair(name, dtype, memory_format)
    assert list(folded.state_dict()) == list(unfolded.state_dict())
    x = torch.randn(3, 3, 40, 40, dtype=dtype).to(memory_format=memory_format)
    masks, sample_mask = [], StochasticDepth.sample_mask

    def recording_sample_mask(self, t):
        masks.append(sample_mask(self, t))
        return masks[-1]

    monkeypatch.setattr(StochasticDepth, 'sample_mask', recording_sample_mask)
    outs_f, grads_f = _run(folded, x)
    outs_u, grads_u = _run(unfolded, x)
    # stochastic depth really dropped some samples and kept others, in both runs alike
    masks = [m for m in masks if m is not None]
    assert any((m == 0).any() for m in masks) and any((m == 1).any() for m in masks)
    half = len(masks) // 2
    assert all(torch.equal(a, b) for a, b in zip(masks[:half], masks[half:]))
    for index, (f, u) in enumerate(zip(outs_f, outs_u)):
        assert f.dtype == u.dtype == dtype
        if channels_last:
            assert f.is_contiguous(memory_format=torch.channels_last)
        _assert_rel_close(f, u, rel, f'output {index}')
    assert grads_f.keys() == grads_u.keys()
    for pname in grads_u:
        _assert_rel_close(grads_f[pname], grads_u[pname], rel, pname)


def test_only_activations_feeding_ws_convs_are_folded():
    """Stem and block activations defer their gamma to the convs they feed; the final
    activation (read by the head / returned) keeps it; ``input_scale`` is gamma (/ beta)."""
    folded, unfolded = _pair('nfnet-se-symmetric')
    stem = folded.stem
    assert [stem.conv1.input_scale] == [1.0]
    for index in (1, 2, 3):
        act = getattr(stem, f'act{index}')
        assert act.fold_gamma and getattr(stem, f'conv{index + 1}').input_scale == act.gamma
    assert not folded.final.act.fold_gamma
    for block in (b for s in folded.stages for b in s):
        assert block.conv1.input_scale == pytest.approx(block.pre_act.gamma / block.beta)
        if block.has_shortcut_conv:
            assert block.shortcut_conv.input_scale == block.conv1.input_scale
        assert block.conv2.input_scale == block.act1.gamma
    assert not any(m.fold_gamma for m in unfolded.modules() if isinstance(m, GammaAct))
    assert all(m.input_scale == 1.0 for m in unfolded.modules()
               if isinstance(m, ScaledStdConv2d))
    resnet = NFResNet(depth=26, stem_channels=8)
    assert not resnet.final.fold_gamma and resnet.stem.conv.input_scale == 1.0
    # the normalized counterpart has nothing to fold
    bn = NFNet(arch=NFNET_ARCH, norm_cfg=dict(type='BN'))
    assert all(m.gamma == 1.0 for m in bn.modules() if isinstance(m, GammaAct))


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('padding,stride,memory_format', [
    ('symmetric', 1, torch.contiguous_format), ('same', 2, torch.channels_last)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_conv_input_scale_equals_scaling_the_input(fused, padding, stride, memory_format,
                                                   dtype, monkeypatch):
    monkeypatch.setattr(ScaledStdConv2d, 'fused_ws', fused)
    scale = 1.7015043497085571 / 1.0954451150103321
    conv = ScaledStdConv2d(6, 10, 3, stride=stride, padding=padding, input_scale=scale)
    plain = ScaledStdConv2d(6, 10, 3, stride=stride, padding=padding)
    with torch.no_grad():
        conv.gain.uniform_(0.5, 2.0)
        conv.bias.normal_()
    plain.load_state_dict(conv.state_dict())
    conv, plain = (m.to(dtype=dtype, memory_format=memory_format) for m in (conv, plain))
    x = torch.randn(2, 6, 11, 9, dtype=dtype).to(memory_format=memory_format)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = conv(x1), plain(x2 * scale)
    rel = 1e-6 if dtype == torch.float32 else 1e-14
    _assert_rel_close(out, expected, rel, 'output')
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    for (name, p), q in zip(conv.named_parameters(), plain.parameters()):
        _assert_rel_close(p.grad, q.grad, rel * 10, name)
    _assert_rel_close(x1.grad, x2.grad, rel * 10, 'input')
    assert f'input_scale={scale}' in repr(conv)


def test_input_scale_in_eval_cache_and_deploy():
    scale = 1.5
    conv = ScaledStdConv2d(4, 8, 3, input_scale=scale).eval()
    plain = ScaledStdConv2d(4, 8, 3).eval()
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), plain(x * scale), rtol=1e-6, atol=1e-6)
        cached = conv._cached_weight
        assert cached is not None
        torch.testing.assert_close(cached, plain.standardized_weight() * scale)
        conv.input_scale = 2.0  # a new scale is a new cache key
        torch.testing.assert_close(conv(x), plain(x * 2.0), rtol=1e-6, atol=1e-6)
        assert conv._cached_weight is not cached
    conv.switch_to_deploy()
    torch.testing.assert_close(conv.weight, plain.standardized_weight().detach() * 2.0)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), plain(x * 2.0), rtol=1e-6, atol=1e-6)


def test_folded_backbone_deploys():
    folded, unfolded = (m.eval() for m in _pair('nfresnet-se-avgdown'))
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected = unfolded(x)
        folded.switch_to_deploy()
        got = folded(x)
    for g, e in zip(got, expected):
        _assert_rel_close(g, e, 1e-5, 'deployed output')


@pytest.mark.parametrize('cls', [NFNet, NFResNet])
def test_fold_scales_must_be_a_bool(cls):
    with pytest.raises(TypeError, match='fold_scales must be True or False'):
        cls(fold_scales='no')


@pytest.mark.parametrize('bad', [0.0, -1.0, float('inf'), float('nan'), True, '2'])
def test_bad_input_scale_is_refused(bad):
    with pytest.raises(ValueError, match='input_scale must be a positive finite number'):
        ScaledStdConv2d(2, 2, 1, input_scale=bad)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_folded_backbone(dtype):
    folded, _ = _pair('nfnet-se-symmetric')
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    reference = folded(x)
    low = folded.to(dtype)
    torch.manual_seed(1)
    outs = low(x.to(dtype))
    sum(o.float().sum() for o in outs).backward()
    for o, r in zip(outs, reference):
        assert o.dtype == dtype
        _assert_rel_close(o.float(), r.detach(), 0.1, f'{dtype} output')
    assert all(torch.isfinite(p.grad).all() for p in low.parameters())


def test_autocast_merge_keeps_the_low_precision_dtype(monkeypatch):
    """Under autocast (bf16) the merge's fp32 skip gain must not promote the stream.

    CPU autocast leaves ``addcmul`` alone, CUDA autocast runs it in the widest dtype of its
    inputs; so the device-independent check is on ``addcmul``'s arguments: the factor is
    in the branch's dtype (a 0-d fp32 skip gain, without SE in eval, would not be)."""
    folded, _ = _pair('nfresnet-nose-same')
    folded.eval()
    calls = []
    addcmul = torch.addcmul

    def recording_addcmul(shortcut, branch, factor, *args, **kwargs):
        calls.append((branch.dtype, factor.dtype, factor.dim()))
        return addcmul(shortcut, branch, factor, *args, **kwargs)

    monkeypatch.setattr(torch, 'addcmul', recording_addcmul)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = folded(torch.randn(2, 3, 32, 32))
    assert all(o.dtype == torch.bfloat16 for o in outs)
    assert calls and any(dim == 0 for _, _, dim in calls)  # the skip-gain-only factor
    assert all(factor == branch == torch.bfloat16 for branch, factor, _ in calls), calls


def test_folded_backbone_traces_without_graph_breaks():
    """NF-ResNet with SE and stochastic depth (NFNet: tests/test_compile.py)."""
    folded, _ = _pair('nfresnet-se-avgdown')
    explanation = torch._dynamo.explain(folded)(torch.randn(2, 3, 32, 32))
    reasons = [str(b.reason).splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons


class _ActivationOpCounter(TorchDispatchMode):
    """Counts pointwise ATen ops whose output is an activation-sized map
    ``(batch, C, H, W)`` with ``H * W > 1`` (not the weights, not (N, C, 1, 1) factors)."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.count = batch, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.Tag.pointwise in func.tags and isinstance(out, torch.Tensor):
            shape = out.shape
            if len(shape) == 4 and shape[0] == self.batch and shape[2] * shape[3] > 1:
                self.count += 1
        return out


def _count_ops(model, x):
    """Activation-sized pointwise ops of a forward and of its backward; ``x`` requires
    grad, as a block's input does inside a network."""
    x = x.clone().requires_grad_()
    torch.manual_seed(1)
    with _ActivationOpCounter(x.shape[0]) as forward:
        outs = model(x)
    loss = sum(o.sum() for o in outs)
    with _ActivationOpCounter(x.shape[0]) as backward:
        loss.backward()
    return forward.count, backward.count


def _expected_saving(block) -> int:
    """Full-size multiplies the folded block does not run: one per gamma activation, the
    ``1 / beta``, SE, the stochastic-depth mask, skip gain and alpha (the add becomes the
    addcmul)."""
    acts = [m for m in block.modules() if isinstance(m, GammaAct)]
    return (len(acts) + (block.beta != 1.0) + (block.se is not None)
            + (block.drop_path.drop_rate > 0) + 2)


@pytest.mark.parametrize('block_cls,kwargs', [
    (NFNetBlock, dict(group_width=8, act_cfg=dict(type='GELU'))),
    (NFResNetBottleneck, dict(se_ratio=0.25, act_cfg=dict(type='ReLU'))),
    (NFResNetBottleneck, dict(act_cfg=dict(type='ReLU'))),
])
@pytest.mark.parametrize('stride,in_channels', [(2, 16), (1, 32)])
def test_folded_block_runs_fewer_full_size_ops(block_cls, kwargs, stride, in_channels):
    blocks = [block_cls(in_channels, 32, stride=stride, beta=1.1, drop_path_rate=0.3,
                        skipinit_value=0.5, fold_scales=fold, **kwargs).train()
              for fold in (True, False)]
    x = torch.randn(3, in_channels, 8, 8)
    (fwd_f, bwd_f), (fwd_u, bwd_u) = (_count_ops(lambda t: (b(t), ), x) for b in blocks)
    saving = _expected_saving(blocks[0])
    assert fwd_u - fwd_f == saving, (fwd_u, fwd_f)
    # each removed multiply also had (at least) one backward pass over the map; the
    # addcmul's backward makes three (grad x factor, branch x value, their product for the
    # factor's gradient) where the unfolded add made none
    assert bwd_u - bwd_f >= saving - 3, (bwd_u, bwd_f)


def test_folded_nfnet_runs_fewer_full_size_ops():
    folded, unfolded = _pair('nfnet-se-symmetric')
    x = torch.randn(3, 3, 64, 64)  # the last stage still has 2 x 2 maps
    (fwd_f, bwd_f), (fwd_u, bwd_u) = _count_ops(folded, x), _count_ops(unfolded, x)
    blocks = [b for s in folded.stages for b in s]
    # three stem activations plus every block's saving
    saving = 3 + sum(_expected_saving(b) for b in blocks)
    assert fwd_u - fwd_f == saving, (fwd_u, fwd_f)
    assert bwd_u - bwd_f >= saving - 3 * len(blocks), (bwd_u, bwd_f)
