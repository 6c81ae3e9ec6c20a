"""Layer-level tests: Scaled WS conv (Eq. 1), padding, gamma activations, SE, stochastic depth."""
import math

import pytest
import torch
import torch.nn.functional as F

from nfnets_mm.models.layers import (ACT_GAMMAS, GammaAct, MaxPool2dSame, NFSqueezeExcite,
                                     ScaledStdConv2d, StochasticDepth, same_padding_amount)


def reference_ws(weight, gain, eps, mode):
    """Eq. (1) written out independently: (W - mean) / (std * sqrt(N)) * g."""
    out_ch = weight.shape[0]
    w = weight.reshape(out_ch, -1).double()
    fan_in = w.shape[1]
    mean = w.mean(dim=1, keepdim=True)
    var = ((w - mean)**2).mean(dim=1, keepdim=True)
    if mode == 'max':
        denom = torch.sqrt(torch.clamp(var * fan_in, min=eps))
    else:
        denom = torch.sqrt((var + eps) * fan_in)
    return ((w - mean) / denom * gain.double()[:, None]).reshape(weight.shape)


@pytest.mark.parametrize('mode,eps', [('max', 1e-4), ('add', 1e-5)])
def test_scaled_ws_matches_eq1(mode, eps):
    conv = ScaledStdConv2d(6, 8, 3, groups=2, eps=eps, eps_mode=mode)
    with torch.no_grad():
        conv.weight.normal_(0.3, 2.0)
        conv.gain.uniform_(0.5, 2.0)
    expected = reference_ws(conv.weight, conv.gain, eps, mode)
    torch.testing.assert_close(conv.standardized_weight().double(), expected, rtol=1e-5,
                               atol=1e-6)
    w_hat = conv.standardized_weight().reshape(8, -1) / conv.gain[:, None]
    # zero mean and variance 1 / fan_in per output unit
    assert w_hat.mean(dim=1).abs().max() < 1e-5
    torch.testing.assert_close(w_hat.var(dim=1, unbiased=False) * conv.fan_in,
                               torch.ones(8), rtol=1e-3, atol=1e-3)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected.float(), conv.bias, padding=1,
                                                 groups=2), rtol=1e-4, atol=1e-5)


def test_scaled_ws_eps_floor_on_constant_weight():
    conv = ScaledStdConv2d(4, 2, 1)
    with torch.no_grad():
        conv.weight.fill_(0.7)
    w = conv.standardized_weight()
    assert torch.isfinite(w).all() and w.abs().max() == 0


def test_scaled_ws_invalid_arguments():
    with pytest.raises(ValueError, match="'max', 'add'"):
        ScaledStdConv2d(3, 3, 3, eps_mode='plus')
    with pytest.raises(ValueError, match="'symmetric', 'same'"):
        ScaledStdConv2d(3, 3, 3, padding='valid')


@pytest.mark.parametrize('size', [8, 9, 15, 16])
@pytest.mark.parametrize('kernel,stride', [(3, 2), (3, 1), (1, 2), (7, 2)])
def test_same_padding_matches_tf_rule(size, kernel, stride):
    conv = ScaledStdConv2d(3, 4, kernel, stride=stride, padding='same')
    x = torch.randn(1, 3, size, size)
    out = conv(x)
    assert out.shape[-1] == math.ceil(size / stride)
    # TF SAME: total = max((ceil(n/s)-1)*s + k - n, 0), the extra pixel at the end
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    assert same_padding_amount(size, kernel, stride) == (total // 2, total - total // 2)
    padded = F.pad(x, (total // 2, total - total // 2) * 2)
    expected = F.conv2d(padded, conv.standardized_weight(), conv.bias, stride=stride)
    torch.testing.assert_close(out, expected)


def test_same_padding_amount_equals_tf_formula_everywhere():
    """The remainder form of ``same_padding_amount`` against TF's ceil form."""
    for size in range(1, 90):
        for kernel in (1, 2, 3, 5, 7):
            for stride in (1, 2, 3, 4):
                for dilation in (1, 2):
                    effective = (kernel - 1) * dilation + 1
                    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
                    assert same_padding_amount(size, kernel, stride, dilation) == (
                        total // 2, total - total // 2), (size, kernel, stride, dilation)


def test_maxpool_same_pads_with_minus_inf():
    x = -torch.rand(1, 1, 6, 6) - 1.0  # all negative: zero padding would win
    out = MaxPool2dSame(3, 2)(x)
    assert out.shape[-2:] == (3, 3)
    assert (out < 0).all()
    assert out[0, 0, -1, -1] == x[0, 0, 4:, 4:].max()


@pytest.mark.parametrize('name', sorted(ACT_GAMMAS))
def test_gamma_makes_activation_variance_preserving(name):
    act = GammaAct(dict(type=name))
    x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = act(x)
    assert act.gamma == ACT_GAMMAS[name]
    assert abs(y.var().item() - 1.0) < 0.02, (name, y.var().item())


def test_tanh_gelu_is_available_and_distinct():
    exact = GammaAct(dict(type='GELU'))
    approx = GammaAct(dict(type='GELU', approximate='tanh'))
    x = torch.linspace(-4, 4, 101)
    diff = (exact(x) - approx(x)).abs().max()
    assert 0 < diff < 1e-2
    torch.testing.assert_close(approx(x), 1.7015043497085571 * F.gelu(x, approximate='tanh'))


def test_gamma_act_errors_name_choices():
    with pytest.raises(KeyError, match='GELU'):
        GammaAct(dict(type='NoSuchAct'))
    with pytest.raises(KeyError, match='gamma'):
        GammaAct(dict(type='PReLU'))
    assert GammaAct(dict(type='PReLU'), gamma=1.0).gamma == 1.0


def test_squeeze_excite_has_gain_two():
    se = NFSqueezeExcite(8, 4)
    with torch.no_grad():
        se.fc2.weight.zero_()
        se.fc2.bias.zero_()  # gate = sigmoid(0) = 0.5 -> x * 0.5 * 2 = x
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(se(x), x)
    se = NFSqueezeExcite(8, 4)
    h = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(2, 3))))))
    torch.testing.assert_close(se(x), x * 2 * h[:, :, None, None])
    # the (N, C) scale NF blocks fold into their merge is the same excitation
    torch.testing.assert_close(se.channel_scale(x), 2 * h)


def test_stochastic_depth_per_sample_without_rescale():
    sd = StochasticDepth(0.5).train()
    x = torch.ones(64, 3, 2, 2)
    out = sd(x)
    per_sample = out.reshape(64, -1)
    kept = per_sample.amax(dim=1) > 0
    assert 0 < kept.sum() < 64
    # each sample is either dropped entirely or kept unchanged (no 1/keep rescale)
    assert torch.equal(per_sample[kept], torch.ones_like(per_sample[kept]))
    assert torch.equal(per_sample[~kept], torch.zeros_like(per_sample[~kept]))
    scaled = StochasticDepth(0.5, scale_by_keep=True).train()(x)
    assert set(scaled.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(sd.eval()(x), x)
    # the mask NF blocks fold into their merge: the same draw as forward, None when inactive
    sd.train()
    torch.manual_seed(3)
    mask = sd.sample_mask(x)
    torch.manual_seed(3)
    assert mask.shape == (64, 1, 1, 1) and torch.equal(sd(x), x * mask)
    assert sd.eval().sample_mask(x) is None
    assert StochasticDepth(0.).train().sample_mask(x) is None
    with pytest.raises(ValueError, match='drop_rate'):
        StochasticDepth(1.0)


def test_ws_cache_survives_leaving_inference_mode():
    """A frozen eval model used under inference_mode, then with autograd (Grad-CAM,
    adversarial inputs): the cached weight must not be an inference tensor."""
    conv = ScaledStdConv2d(3, 4, 3).eval().requires_grad_(False)
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        expected = conv(x)
    x.requires_grad_(True)
    out = conv(x)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), expected)
