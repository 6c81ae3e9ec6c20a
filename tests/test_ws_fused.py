"""Fused Scaled Weight Standardization (``ws_function.ScaledWSFunction``, paper Eq. 1).

The fused op must give Eq. (1) (reference below, written from the formula in fp64), its
closed-form backward must be the true gradient (``gradcheck`` in fp64, clamped rows
included) and equal the plain-autograd formula's in a tiny NFNet train step, in every
dtype and memory format a user may pass.
"""
import copy

import pytest
import torch

from nfnets_mm.models.backbones import NFNet
from nfnets_mm.models.layers import ScaledStdConv2d
from nfnets_mm.models.layers.ws_function import (ScaledWSFunction, row_major_view,
                                                 scaled_weight_standardization)

MODES = [('max', 1e-4), ('add', 1e-5)]
TINY = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
            stem_channels=(8, 8, 16, 16))


def eq1_reference(weight, gain, eps, mode):
    """Eq. (1) in fp64: g * (W - mean) / sqrt(stabilised N * var), per output unit."""
    w = weight.detach().double().reshape(weight.shape[0], -1)
    fan_in = w.shape[1]
    mean = w.sum(dim=1, keepdim=True) / fan_in
    var = ((w - mean)**2).sum(dim=1, keepdim=True) / fan_in
    if mode == 'max':
        denominator = torch.sqrt(torch.maximum(var * fan_in, torch.full_like(var, eps)))
    else:
        denominator = torch.sqrt((var + eps) * fan_in)
    return (gain.detach().double()[:, None] * (w - mean) / denominator).reshape(weight.shape)


def weight_with_clamped_rows(dtype=torch.float32, shape=(8, 3, 3, 3)):
    """Random rows, plus row 0 constant and row 1 with N * var < 1e-4 (clamped in 'max')."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3
    w[0] = 0.7
    w[1] = -0.2 + 1e-4 * torch.randn(shape[1:], generator=g, dtype=torch.float64)
    gain = torch.rand(shape[0], generator=g, dtype=torch.float64) + 0.5
    gain[2] = 0.0
    gain[3] = -1.3
    return w.to(dtype), gain.to(dtype)


def test_clamped_rows_really_clamp():
    w, _ = weight_with_clamped_rows(torch.float64)
    n_var = w.reshape(w.shape[0], -1).var(dim=1, unbiased=False) * w[0].numel()
    assert n_var[0] == 0 and 0 < n_var[1] < 1e-4 and (n_var[2:] > 1e-4).all()


@pytest.mark.parametrize('mode,eps', MODES)
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_forward_matches_eq1(mode, eps, memory_format):
    w, gain = weight_with_clamped_rows()
    w = w.contiguous(memory_format=memory_format)
    out = scaled_weight_standardization(w, gain, eps, mode)
    expected = eq1_reference(w, gain, eps, mode)
    assert out.dtype == w.dtype and out.shape == w.shape
    assert out.is_contiguous(memory_format=memory_format)
    scale = expected.abs().max().item()
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6 * scale)
    assert (out[0] == 0).all()  # a constant row standardizes to exactly 0


def test_channels_last_weight_is_not_copied():
    w = torch.randn(8, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    flat, restore = row_major_view(w)
    assert flat.data_ptr() == w.data_ptr() and flat.shape == (8, 54)
    assert torch.equal(restore(flat), w)
    conv = ScaledStdConv2d(6, 8, 3).to(memory_format=torch.channels_last)
    assert conv.standardized_weight().is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('mode,eps', MODES)
def test_gradcheck_fp64_with_clamped_rows(mode, eps):
    w, gain = weight_with_clamped_rows(torch.float64, shape=(5, 2, 2, 2))
    w.requires_grad_()
    gain.requires_grad_()

    def fn(weight, g):
        return scaled_weight_standardization(weight, g, eps, mode)

    assert torch.autograd.gradcheck(fn, (w, gain))
    w_cl = w.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(fn, (w_cl, gain))


@pytest.mark.parametrize('mode,eps', MODES)
def test_input_scale_multiplies_result_and_gradients(mode, eps):
    """``input_scale`` (a folded activation gamma) scales the output; gradcheck of the
    fused backward with it; equal to the plain formula."""
    w, gain = weight_with_clamped_rows(torch.float64, shape=(5, 2, 2, 2))
    w.requires_grad_()
    gain.requires_grad_()
    scale = 1.7015043497085571

    def fn(weight, g, fused=True):
        return scaled_weight_standardization(weight, g, eps, mode, fused=fused,
                                             input_scale=scale)

    assert torch.autograd.gradcheck(fn, (w, gain))
    torch.testing.assert_close(fn(w, gain), scale * scaled_weight_standardization(
        w, gain, eps, mode), rtol=1e-14, atol=0)
    upstream = torch.randn(w.shape, dtype=torch.float64)
    fused_grads = torch.autograd.grad(fn(w, gain), (w, gain), upstream)
    plain_grads = torch.autograd.grad(fn(w, gain, fused=False), (w, gain), upstream)
    for f, p in zip(fused_grads, plain_grads):
        torch.testing.assert_close(f, p, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('mode,eps', MODES)
@pytest.mark.parametrize('needs', ['both', 'weight', 'gain'])
def test_gradients_equal_plain_autograd(mode, eps, needs):
    w, gain = weight_with_clamped_rows(torch.float64, shape=(16, 4, 3, 3))
    upstream = torch.randn(w.shape, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(3))
    grads = []
    for fused in (True, False):
        wi = w.clone().requires_grad_(needs in ('both', 'weight'))
        gi = gain.clone().requires_grad_(needs in ('both', 'gain'))
        out = scaled_weight_standardization(wi, gi, eps, mode, fused=fused)
        out.backward(upstream)
        grads.append((wi.grad, gi.grad))
    for fused_grad, plain_grad in zip(*grads):
        if plain_grad is None:
            assert fused_grad is None
        else:
            torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-10, atol=1e-12)
    if needs != 'gain':
        # clamped rows: no variance term, so the gradient is a * (G - mean(G))
        a = gain[1] * 1e2  # s = eps**-0.5 on a clamped 'max' row
        if mode == 'max':
            g1 = upstream[1]
            torch.testing.assert_close(grads[0][0][1], a * (g1 - g1.mean()))


def _tiny_step(fused: bool, memory_format, monkeypatch):
    monkeypatch.setattr(ScaledStdConv2d, 'fused_ws', fused)
    torch.manual_seed(0)
    net = NFNet(arch=TINY, skipinit_value=0.5, drop_path_rate=0.0)
    with torch.no_grad():  # one conv with a clamped row, so that the clamp is exercised
        conv = next(m for m in net.modules() if isinstance(m, ScaledStdConv2d))
        conv.weight[0] = 0.1
    net = net.to(memory_format=memory_format)
    node = conv.standardized_weight().grad_fn  # the path under test really runs:
    while node.name() in ('ViewBackward0', 'PermuteBackward0'):
        node = node.next_functions[0][0]
    assert ('ScaledWSFunction' in node.name()) == fused, node.name()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=memory_format)
    loss = sum(o.square().mean() for o in net(x))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    opt.step()
    return loss.detach(), grads, copy.deepcopy(net.state_dict())


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_tiny_nfnet_train_step_equals_plain_autograd(memory_format, monkeypatch):
    loss_f, grads_f, state_f = _tiny_step(True, memory_format, monkeypatch)
    loss_p, grads_p, state_p = _tiny_step(False, memory_format, monkeypatch)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-6)
    assert grads_f.keys() == grads_p.keys() and any('gain' in k for k in grads_f)
    for name in grads_p:
        scale = grads_p[name].abs().max().item()
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4,
                                   atol=1e-5 * max(scale, 1e-6), msg=name)
    for name in state_p:
        torch.testing.assert_close(state_f[name], state_p[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('mode,eps', MODES)
def test_low_precision_weights(dtype, mode, eps):
    w, gain = weight_with_clamped_rows(dtype)
    w.requires_grad_()
    gain.requires_grad_()
    out = scaled_weight_standardization(w, gain, eps, mode)
    assert out.dtype == dtype
    expected = eq1_reference(w, gain, eps, mode)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)
    upstream = torch.randn(w.shape, generator=torch.Generator().manual_seed(2))
    out.backward(upstream.to(dtype))
    assert w.grad.dtype == dtype and gain.grad.dtype == dtype
    w64 = w.detach().double().requires_grad_()
    g64 = gain.detach().double().requires_grad_()
    scaled_weight_standardization(w64, g64, eps, mode).backward(upstream.to(dtype).double())
    for got, want in ((w.grad, w64.grad), (gain.grad, g64.grad)):
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_conv_forward_backward(dtype):
    conv = ScaledStdConv2d(4, 6, 3).to(dtype)
    x = torch.randn(2, 4, 8, 8, dtype=dtype)
    ref = copy.deepcopy(conv).float()
    out = conv(x)
    out.float().sum().backward()
    ref_out = ref(x.float())
    ref_out.sum().backward()
    torch.testing.assert_close(out.float(), ref_out, rtol=5e-2, atol=5e-2)
    assert conv.weight.grad.dtype == dtype
    torch.testing.assert_close(conv.gain.grad.float(), ref.gain.grad, rtol=5e-2, atol=5e-2)


def test_cpu_autocast_bf16_keeps_fp32_statistics():
    conv = ScaledStdConv2d(4, 6, 3)
    ref = copy.deepcopy(conv)
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        w_hat = conv.standardized_weight()
        out = conv(x)
    assert w_hat.dtype == torch.float32  # Eq. (1) itself is not autocast
    torch.testing.assert_close(w_hat, ref.standardized_weight(), rtol=0, atol=0)
    out.float().sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad, rtol=5e-2, atol=5e-2)


def test_double_backward_is_refused_clearly():
    conv = ScaledStdConv2d(3, 4, 3)
    x = torch.randn(1, 3, 5, 5)
    (grad, ) = torch.autograd.grad(conv(x).square().sum(), conv.weight, create_graph=True)
    with pytest.raises(RuntimeError, match='differentiate twice'):
        grad.sum().backward()
    conv.fused_ws = False  # the plain formula supports higher-order gradients
    (grad, ) = torch.autograd.grad(conv(x).square().sum(), conv.weight, create_graph=True)
    grad.sum().backward()
    assert conv.weight.grad is not None


def test_eval_cache_and_deploy_use_the_fused_result():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(4, 6, 3)
    x = torch.randn(1, 4, 7, 7)
    train_out = conv(x)
    conv.eval()
    with torch.no_grad():
        cached = conv(x)
        assert conv._cached_weight is not None
        torch.testing.assert_close(cached, train_out, rtol=0, atol=0)
        conv.switch_to_deploy()
        torch.testing.assert_close(conv(x), train_out, rtol=0, atol=0)


def test_bad_eps_mode_names_the_choices():
    with pytest.raises(ValueError, match="'max', 'add'"):
        scaled_weight_standardization(torch.randn(2, 1, 1, 1), torch.ones(2), 1e-4, 'plus')


def test_function_output_is_a_fresh_tensor():
    """The output must not alias the weight (the conv saves it; optimizers update W)."""
    w = torch.randn(4, 5)
    out = ScaledWSFunction.apply(w, torch.ones(4), 1e-4, 'max')
    assert out.data_ptr() != w.data_ptr()


def test_graph_capture_records_the_plain_formula():
    """TorchScript tracing (ONNX's fallback exporter) and ``torch.export`` cannot translate
    a Python ``autograd.Function``; they must see the plain ops, with the same result."""
    torch.manual_seed(0)
    conv = ScaledStdConv2d(3, 4, 3)
    x = torch.randn(1, 3, 6, 6)
    expected = conv(x).detach()
    traced = torch.jit.trace(conv, x, check_trace=False)  # with grad: a Function would
    assert 'ScaledWSFunction' not in str(traced.graph)  # be one opaque Python op
    torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-6)
    exported = torch.export.export(conv, (x, ))
    graph = str(exported.graph)  # the plain formula's ops, not the fused op's kernels
    assert 'var_mean' in graph and 'batch_norm' not in graph
    torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('eps', [0, -1e-4, float('nan'), '1e-4'])
def test_bad_eps_is_refused(eps):
    with pytest.raises(ValueError, match='positive finite'):
        ScaledStdConv2d(3, 4, 3, eps=eps)


def test_compiling_check_falls_back_before_torch_2_3(monkeypatch):
    """setup.py allows torch >= 2.1: without torch.compiler.is_compiling (added in 2.3)
    the check falls back to Dynamo's (the layers call only this helper)."""
    from torch import _dynamo

    from nfnets_mm.models.layers import ws_function
    calls = []
    monkeypatch.delattr(torch.compiler, 'is_compiling')
    monkeypatch.setattr(_dynamo, 'is_compiling', lambda: calls.append(1) or False)
    assert ws_function.is_compiling() is False and calls == [1]
