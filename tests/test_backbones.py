"""NFNet / NFResNet backbones: structure, conventions, paper numbers."""
import pytest
import torch
import torch.nn as nn
from conftest import TINY_NFNET_ARCH

from nfnets_mm.models import NFNet, NFResNet
from nfnets_mm.models.backbones.nf_base import expected_stds
from nfnets_mm.models.layers import ScaledStdConv2d

# Paper Table 3 (millions of parameters, 1000-class classifier included).
TABLE3_PARAMS = {'F0': 71.5, 'F1': 132.6, 'F2': 193.8, 'F3': 254.9, 'F4': 316.1,
                 'F5': 377.2, 'F6': 438.4}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def classifier_params(in_channels: int, num_classes: int = 1000) -> int:
    return in_channels * num_classes + num_classes


@pytest.mark.parametrize('arch', sorted(TABLE3_PARAMS))
def test_param_counts_match_table3(arch):
    with torch.device('meta'):
        backbone = NFNet(arch=arch)
    total = count_params(backbone) + classifier_params(backbone.out_channels[-1])
    expected = TABLE3_PARAMS[arch] * 1e6
    assert abs(total - expected) / expected < 0.005, (arch, total)


@pytest.mark.parametrize('arch', ['F7', 'F0+', 'F4+', 'F7+'])
def test_other_variants_build(arch):
    with torch.device('meta'):
        backbone = NFNet(arch=arch, out_indices=(0, 1, 2, 3))
    wide = arch.endswith('+')
    assert backbone.stage_out_channels == ((384, 768, 2048, 4096) if wide else
                                           (256, 512, 1536, 3072))
    depth = int(arch[1])
    assert [len(s) for s in backbone.stages] == [depth + 1, 2 * depth + 2, 6 * depth + 6,
                                                 3 * depth + 3]


def test_f0_full_width_forward_backward():
    model = NFNet(arch='F0', out_indices=(0, 1, 2, 3))
    x = torch.randn(2, 3, 64, 64)
    outs = model(x)
    assert [o.shape for o in outs] == [(2, 256, 16, 16), (2, 512, 8, 8), (2, 1536, 4, 4),
                                       (2, 3072, 2, 2)]
    assert model.out_channels == (256, 512, 1536, 3072)
    sum(o.float().pow(2).mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # skip gains are zero at init but still receive gradient
    assert model.stages[2][3].skip_gain.grad.abs() > 0


@pytest.mark.parametrize('depth', [26, 50])
def test_nf_resnet_full_width_forward_backward(depth):
    model = NFResNet(depth=depth, out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4),
                                           (2048, 2, 2)]
    assert model.out_channels == (256, 512, 1024, 2048)
    outs[-1].mean().backward()
    assert model.stem.conv.weight.grad is not None


@pytest.mark.parametrize('depth,blocks,params_m', [(26, 8, 16.0), (50, 16, 25.6),
                                                    (101, 33, 44.6), (152, 50, 60.3),
                                                    (200, 66, 64.8)])
def test_nf_resnet_depths(depth, blocks, params_m):
    with torch.device('meta'):
        model = NFResNet(depth=depth)
    assert sum(len(s) for s in model.stages) == blocks
    total = count_params(model) + classifier_params(2048)
    # standard ResNet counts plus the WS gains and conv biases
    assert abs(total / 1e6 - params_m) / params_m < 0.03, total


def test_invalid_arch_and_depth_errors_list_choices():
    with pytest.raises(KeyError, match="'f0'.*'f7\\+'"):
        NFNet(arch='F9')
    with pytest.raises(KeyError, match='depths'):
        NFNet(arch=dict(widths=(8, 8, 8, 8)))
    with pytest.raises(KeyError, match='Unknown keys'):
        NFNet(arch=dict(depths=(1, ), widths=(64, ), colour='red'))
    with pytest.raises(KeyError, match='26, 50, 101, 152, 200'):
        NFResNet(depth=34)
    with pytest.raises(ValueError, match='out_indices'):
        NFNet(arch=TINY_NFNET_ARCH, out_indices=(4, ))


def test_expected_std_schedule():
    stds = expected_stds((2, 3), alpha=0.2)
    assert stds[0] == pytest.approx([1.0, (1 + 0.04)**0.5])
    # reset after the first block of each stage: 1 + alpha^2, then + alpha^2
    assert stds[1] == pytest.approx([(1 + 0.08)**0.5, (1 + 0.04)**0.5, (1 + 0.08)**0.5])
    model = NFNet(arch=dict(depths=(2, 3), widths=(32, 64), group_width=16,
                            stem_channels=(8, 8, 16, 16)))
    assert [b.beta for s in model.stages for b in s] == pytest.approx(stds[0] + stds[1])


def test_drop_path_rates_grow_linearly():
    model = NFNet(arch=TINY_NFNET_ARCH, drop_path_rate=0.25)
    rates = [b.drop_path.drop_rate for s in model.stages for b in s]
    n = len(rates)
    assert rates == pytest.approx([0.25 * i / n for i in range(n)])


def test_custom_arch_and_no_final_conv():
    model = NFNet(arch=TINY_NFNET_ARCH, out_indices=(1, 3), with_final_conv=False)
    outs = model(torch.randn(1, 3, 32, 32))
    assert model.out_channels == (64, 128)
    assert [o.shape[1] for o in outs] == [64, 128]


def test_frozen_stages_and_norm_eval():
    model = NFNet(arch=TINY_NFNET_ARCH, frozen_stages=2)
    model.train()
    for module in [model.stem, model.stages[0], model.stages[1]]:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    bn = NFNet(arch=TINY_NFNET_ARCH, norm_cfg=dict(type='BN'), norm_eval=True).train()
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)


def test_bn_counterpart_has_no_nf_machinery():
    model = NFNet(arch=TINY_NFNET_ARCH, norm_cfg=dict(type='BN'))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith('gain') for n in names)
    assert not any(isinstance(m, ScaledStdConv2d) for m in model.modules())
    assert all(b.alpha == 1.0 and b.beta == 1.0 for s in model.stages for b in s)
    # last norm of each residual branch starts at zero, like SkipInit
    assert all(b.conv3.norm.weight.abs().sum() == 0 for s in model.stages for b in s)
    out = model(torch.randn(2, 3, 32, 32))[0]
    out.mean().backward()


@pytest.mark.parametrize('size', [63, 64])
def test_same_padding_variant_output_sizes(size):
    model = NFNet(arch=TINY_NFNET_ARCH, padding='same', out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(1, 3, size, size))
    sizes = [o.shape[-1] for o in outs]
    expected, s = [], size
    for stride in (2, 2, 1, 2, 2, 2):  # stem s2, stem s2, stage strides 1/2/2/2
        s = -(-s // stride)
        expected.append(s)
    assert sizes == expected[2:]


def test_pretrained_init_cfg_with_prefix(tmp_path):
    source = NFNet(arch=TINY_NFNET_ARCH)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()},
                'meta': {}}, ckpt)
    target = NFNet(arch=TINY_NFNET_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                                       prefix='backbone.'))
    target.init_weights()
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_image_classifier_integration():
    from mmpretrain.models import ImageClassifier
    from mmpretrain.structures import DataSample
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = ImageClassifier(
            backbone=dict(type='NFNet', arch=TINY_NFNET_ARCH),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='NFNetClsHead', num_classes=5, in_channels=256, dropout_rate=0.2,
                      loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)))
    model.init_weights()
    fc = model.head.fc
    assert abs(fc.weight.std().item() - 0.01) < 0.003 and fc.bias.abs().sum() == 0
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.2
    x = torch.randn(4, 3, 32, 32)
    samples = [DataSample().set_gt_label(i % 5) for i in range(4)]
    losses = model(x, samples, mode='loss')
    assert torch.isfinite(losses['loss'])
    preds = model.eval()(x, samples, mode='predict')
    assert preds[0].pred_score.shape == (5, )


@pytest.mark.parametrize('arch', ['F0', 'F1'])
def test_flops_match_table3(arch):
    from nfnets_mm.analysis import TABLE3, nfnet_complexity
    result = nfnet_complexity(arch)
    expected = TABLE3[arch]['flops'] * 1e9
    assert abs(result['flops'] - expected) / expected < 0.02, result['flops']


@pytest.mark.parametrize('size', [64, 63])
def test_nf_resnet_avg_down_changes_only_strided_shortcuts(size):
    """avg_down=True swaps the stride-2 1x1 shortcut conv for a parameter-free 2x2 avg pool
    (ceil_mode, count_include_pad=False) + stride-1 1x1 conv; nothing else changes."""
    torch.manual_seed(0)
    strided = NFResNet(depth=26, out_indices=(0, 1, 2, 3), skipinit_value=0.5).eval()
    pooled = NFResNet(depth=26, out_indices=(0, 1, 2, 3), skipinit_value=0.5,
                      avg_down=True).eval()
    # same parameters, same names and shapes: the checkpoints are interchangeable
    assert {k: v.shape for k, v in strided.state_dict().items()} == \
        {k: v.shape for k, v in pooled.state_dict().items()}
    assert count_params(strided) == count_params(pooled)
    pooled.load_state_dict(strided.state_dict(), strict=True)
    for stage_s, stage_p in zip(strided.stages, pooled.stages):
        for block_s, block_p in zip(stage_s, stage_p):
            if not block_p.has_shortcut_conv:
                continue
            pool = block_p.shortcut_pool
            if block_p.stride > 1:
                assert isinstance(pool, nn.AvgPool2d)
                assert (pool.kernel_size, pool.stride) == (2, 2)
                assert pool.ceil_mode and not pool.count_include_pad
                assert block_p.shortcut_conv.stride == (1, 1)
                assert block_s.shortcut_conv.stride == (2, 2)
            else:
                assert isinstance(pool, nn.Identity)
                assert block_p.shortcut_conv.stride == block_s.shortcut_conv.stride == (1, 1)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        outs_s, outs_p = strided(x), pooled(x)
    assert [o.shape for o in outs_s] == [o.shape for o in outs_p]
    # stage 0 (stride 1) is unchanged; every later stage starts with a strided shortcut
    torch.testing.assert_close(outs_p[0], outs_s[0], rtol=0, atol=0)
    for out_s, out_p in zip(outs_s[1:], outs_p[1:]):
        assert (out_p - out_s).abs().max() > 1e-3 * out_s.abs().max()


def _nf_backbone(kind: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    if kind == 'NFNet':
        return NFNet(arch=TINY_NFNET_ARCH, skipinit_value=0.5, drop_path_rate=0., **kwargs)
    return NFResNet(depth=26, stem_channels=8, se_ratio=0.25, skipinit_value=0.5,
                    drop_path_rate=0., **kwargs)


@pytest.mark.parametrize('kind', ['NFNet', 'NFResNet'])
def test_channels_last_backbone_equals_contiguous(kind):
    """``memory_format='channels_last'``: NHWC weights from the build on (a checkpoint
    load keeps them NHWC), NHWC activations, NHWC gradients, the contiguous model's
    outputs and gradients, and the same state dict keys."""
    ref = _nf_backbone(kind, out_indices=(0, 1, 2, 3))
    model = _nf_backbone(kind, out_indices=(0, 1, 2, 3), memory_format='channels_last')
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert any(not p.is_contiguous() for p in conv_weights)  # 1x1 weights are both
    model.load_state_dict(ref.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert list(model.state_dict()) == list(ref.state_dict())

    x = torch.randn(2, 3, 32, 32)
    outs, ref_outs = model(x), ref(x)
    for out, expected in zip(outs, ref_outs):
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    sum(o.square().mean() for o in outs).backward()
    sum(o.square().mean() for o in ref_outs).backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if p.dim() == 4:
            assert p.grad.is_contiguous(memory_format=torch.channels_last), name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_memory_format_refuses_unknown_values():
    with pytest.raises(ValueError, match="contiguous, channels_last, got 'nhwc'"):
        NFNet(arch=TINY_NFNET_ARCH, memory_format='nhwc')
    with pytest.raises(ValueError, match="contiguous, channels_last, got"):
        NFNet(arch=TINY_NFNET_ARCH, memory_format=['channels_last'])


def test_channels_last_survives_the_runner_and_its_ema_copy(tmp_path):
    """Through a Runner (init_weights, the EMA hook's copy, checkpoint saving and the
    training steps), the weights and their EMA averages stay NHWC."""
    from mmengine.runner import Runner
    from tiny_runner_cfg import make_tiny_data, tiny_runner_cfg
    cfg = tiny_runner_cfg(make_tiny_data(tmp_path / 'data'), str(tmp_path / 'work'), 2,
                          custom_hooks=[dict(type='NFWarmupEMAHook', ema_type='NFDeepMindEMA',
                                             momentum=1e-2, warmup=True, priority='ABOVE_NORMAL')])
    cfg['model']['backbone']['memory_format'] = 'channels_last'
    runner = Runner(**cfg)
    runner.train()
    ema = next(h for h in runner.hooks if type(h).__name__ == 'WarmupEMAHook').ema_model
    for model in (runner.model, ema.module):
        weights = [p for n, p in model.named_parameters() if p.dim() == 4]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last)
                               for p in weights)
    assert runner.iter == 2
