"""Checkpoint converters (``nfnets_mm.converters``): DeepMind Haiku pickles and timm
state dicts -> MMPretrain, and their command lines in ``tools/model_converters``.

(a) timm ``dm_nfnet_f0`` / ``nfnet_l0`` / ``nf_resnet26`` with random weights convert
    exactly (``nf_resnet*`` into ``NFResNet(avg_down=True)``).
(b) a DeepMind-format file round-trips with every tensor placed once, in every container.
(c) an independent NumPy forward of DeepMind's NFNet matches the converted model.
(d) a malicious pickle is refused without running its payload, and failures are one
    ``error:`` line with exit status 2 (no traceback).
(e) converted files get the permissions of a plain ``open(..., 'w')``.
"""
import os
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
import timm
import torch

import nfnets_mm  # noqa: F401
from mmpretrain.registry import MODELS
from nfnets_mm.converters import ConversionError
from nfnets_mm.converters import deepmind as dm_conv
from nfnets_mm.converters import timm as timm_conv
from nfnets_mm.utils import UnsafeCheckpointError
from nfnets_mm.utils.safe_checkpoint import UnsafePickleError

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'model_converters'))
import dm_nfnet_to_mmpretrain as dm_cli  # noqa: E402  (the command lines)
import timm_nfnet_to_mmpretrain as timm_cli  # noqa: E402

# A small NFNet: stage 1 has a non-transition block (identity shortcut).
SMALL_ARCH = dict(depths=(1, 2, 1, 1), widths=(32, 64, 96, 96), group_width=16,
                  stem_channels=(8, 8, 16, 16))
ALPHA = 0.2
GELU_GAMMA = 1.7015043497085571
NUM_CLASSES = 10


def _classifier(backbone: dict, num_classes: int, in_channels: int) -> torch.nn.Module:
    return MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                             neck=dict(type='GlobalAveragePooling'),
                             head=dict(type='NFNetClsHead', num_classes=num_classes,
                                       in_channels=in_channels)))


def _assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """max |actual - expected| <= rel * max |expected| (scale-relative)."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert scale > 0
    assert diff <= rel * scale, f'max abs diff {diff:.3g} > {rel} x output scale {scale:.3g}'


def _randomize_timm(model: torch.nn.Module, seed: int) -> None:
    """Random gains, skip gains and biases so that every tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('skipinit_gain'):
                param.copy_(torch.rand((), generator=gen) * 0.8 + 0.2)
            elif name.endswith('.gain'):
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            elif name.endswith('.bias'):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


def _convert_timm(tmp_path, model) -> dict:
    """Convert through the library (file in, file out)."""
    src, dst = tmp_path / 'timm.pth', tmp_path / 'converted.pth'
    torch.save(model.state_dict(), src)
    timm_conv.convert(str(src), str(dst))
    return torch.load(dst, map_location='cpu', weights_only=True)


# --------------------------------------------------------------------------------------
# (a) timm
# --------------------------------------------------------------------------------------
def test_timm_dm_nfnet_f0_logits_match(tmp_path):
    torch.manual_seed(0)
    model_t = timm.create_model('dm_nfnet_f0', pretrained=False).eval()
    _randomize_timm(model_t, seed=1)
    ckpt = _convert_timm(tmp_path, model_t)
    backbone = dict(type='NFNet', arch='F0', padding='same', act_cfg=dict(type='GELU'),
                    ws_eps=1e-5, ws_eps_mode='add')
    assert ckpt['meta']['model']['backbone'] == backbone
    assert ckpt['meta']['exact'] is True
    ours = _classifier(backbone, 1000, 3072).eval()
    ours.load_state_dict(ckpt['state_dict'], strict=True)
    # skip gains really came from timm (not the SkipInit zero)
    assert ours.backbone.stages[2][3].skip_gain.item() == pytest.approx(
        model_t.stages[2][3].skipinit_gain.item())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_close_scaled(ours(x, mode='tensor'), model_t(x), 1e-5)


def test_timm_nfnet_l0_gamma_folding(tmp_path):
    """timm-trained nfnet_l0 keeps gamma inside its convs (SiLU, symmetric padding)."""
    torch.manual_seed(0)
    model_t = timm.create_model('nfnet_l0', pretrained=False).eval()
    _randomize_timm(model_t, seed=2)
    ckpt = _convert_timm(tmp_path, model_t)
    backbone = ckpt['meta']['model']['backbone']
    assert backbone['act_cfg'] == dict(type='SiLU') and backbone['padding'] == 'symmetric'
    assert backbone['arch']['group_width'] == 64
    ours = MODELS.build(ckpt['meta']['model']).eval()
    ours.load_state_dict(ckpt['state_dict'], strict=True)
    assert all(m.skip_gain.item() == 1.0 for stage in ours.backbone.stages for m in stage)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_close_scaled(ours(x, mode='tensor'), model_t(x), 1e-5)


@pytest.mark.parametrize('size', [64, 63])
def test_timm_nf_resnet26_logits_match(tmp_path, size):
    """timm's NF-ResNet strided shortcut (2x2 avg pool with ceil_mode and
    count_include_pad=False, then a 1x1 conv) is ``NFResNet(avg_down=True)``; timm keeps
    the ReLU gamma in its convs and has no skip gains.  An odd input size makes the pools
    see partial windows (ceil_mode)."""
    torch.manual_seed(0)
    model_t = timm.create_model('nf_resnet26', pretrained=False).eval()
    _randomize_timm(model_t, seed=3)
    src, dst = tmp_path / 'r26.pth', tmp_path / 'r26_mm.pth'
    torch.save({'model': model_t.state_dict()}, src)
    assert timm_cli.main([str(src), str(dst)]) == 0  # the command line
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert ckpt['meta']['exact'] is True
    backbone = ckpt['meta']['model']['backbone']
    assert backbone['depth'] == 26 and backbone['act_cfg'] == dict(type='ReLU')
    assert backbone['avg_down'] is True
    ours = MODELS.build(ckpt['meta']['model']).eval()
    ours.load_state_dict(ckpt['state_dict'], strict=True)
    assert isinstance(ours.backbone.stages[1][0].shortcut_pool, torch.nn.AvgPool2d)
    assert all(m.skip_gain.item() == 1.0 for stage in ours.backbone.stages for m in stage)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        _assert_close_scaled(ours(x, mode='tensor'), model_t(x), 1e-5)
        # the same weights with DeepMind's strided-conv shortcut give different logits
        cfg = ckpt['meta']['model']
        cfg['backbone']['avg_down'] = False
        strided = MODELS.build(cfg).eval()
        strided.load_state_dict(ckpt['state_dict'], strict=True)
        logits_t = model_t(x)
        assert (strided(x, mode='tensor') - logits_t).abs().max() > 1e-3 * logits_t.abs().max()


@pytest.mark.parametrize('bad_key,message', [
    ('stages.0.0.attn_last.conv.weight', 'ECA'),
    ('stages.0.0.attn.fc1.weight', 'nf_regnet'),
])
def test_timm_refuses_unsupported_families(bad_key, message):
    sd = {'stem.conv1.weight': torch.zeros(16, 3, 3, 3), bad_key: torch.zeros(1, 1, 3)}
    with pytest.raises(ConversionError, match=message):
        timm_conv.convert_state_dict(sd)


# --------------------------------------------------------------------------------------
# DeepMind format: builder written from the documented Haiku names
# --------------------------------------------------------------------------------------
def _dm_block_name(index: int) -> str:
    return 'NFNet/~/nf_block' + (f'_{index}' if index else '')


def make_dm_params(arch: dict, num_classes: int = NUM_CLASSES, seed: int = 0,
                   zeros: bool = False) -> dict:
    """Nested Haiku params ``{module: {param: array}}`` of DeepMind's NFNet for ``arch``.

    Conv weights HWIO, linears (in, out); every third conv stores its gain as
    (1, 1, 1, C) to exercise the broadcastable-gain path.
    """
    rng = np.random.default_rng(seed)
    params, count = {}, [0]

    def rand(shape, scale=1.0, low=None):
        if zeros:
            return np.zeros(shape, np.float32)
        if low is not None:
            return rng.uniform(low, low + 1.0, shape).astype(np.float32)
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def conv(name, k, cin, cout, groups=1):
        gain = rand((cout, ), low=0.5)
        count[0] += 1
        if count[0] % 3 == 0:
            gain = gain.reshape(1, 1, 1, cout)
        params[name] = {'w': rand((k, k, cin // groups, cout)), 'gain': gain,
                        'bias': rand((cout, ), 0.1)}

    cin = 3
    for i, c in enumerate(arch['stem_channels']):
        conv(f'NFNet/~/stem_conv{i}', 3, cin, c)
        cin = c
    index, gw = 0, arch['group_width']
    for stage, (depth, width) in enumerate(zip(arch['depths'], arch['widths'])):
        for b in range(depth):
            name, mid = _dm_block_name(index), width // 2
            conv(f'{name}/~/conv0', 1, cin, mid)
            conv(f'{name}/~/conv1', 3, mid, mid, mid // gw)
            conv(f'{name}/~/conv1b', 3, mid, mid, mid // gw)
            conv(f'{name}/~/conv2', 1, mid, width)
            if b == 0 and (stage > 0 or cin != width):
                conv(f'{name}/~/conv_shortcut', 1, cin, width)
            params[f'{name}/~/squeeze_excite/~/linear'] = {
                'w': rand((width, width // 2), width**-0.5), 'b': rand((width // 2, ), 0.1)}
            params[f'{name}/~/squeeze_excite/~/linear_1'] = {
                'w': rand((width // 2, width), (width // 2)**-0.5), 'b': rand((width, ), 0.1)}
            params[name] = {'skip_gain': np.float32(0.3 + 0.7 * rng.random())
                            if not zeros else np.float32(0.)}
            cin, index = width, index + 1
    conv('NFNet/~/final_conv', 1, cin, 2 * cin)
    params['NFNet/~/linear'] = {'w': rand((2 * cin, num_classes), 0.1),
                                'b': rand((num_classes, ), 0.1)}
    return params


def _flat(params: dict) -> dict:
    return {f'{module}/{name}': value for module, group in params.items()
            for name, value in group.items()}


def _expected_targets(params: dict, arch: dict) -> dict:
    """Target key -> expected tensor, from the documented name map (written here)."""
    convs = {'conv0': 'conv1', 'conv1': 'conv2', 'conv1b': 'conv2b', 'conv2': 'conv3',
             'conv_shortcut': 'shortcut_conv'}
    conv_params = {'w': 'weight', 'gain': 'gain', 'bias': 'bias'}
    positions = [(s, b) for s, d in enumerate(arch['depths']) for b in range(d)]
    out = {}

    def put(key, value):
        assert key not in out
        out[key] = torch.from_numpy(np.array(value, order='C'))  # keeps 0-d skip gains 0-d

    def conv(prefix, group):
        for p, v in group.items():
            put(f'{prefix}.{conv_params[p]}',
                v.transpose(3, 2, 0, 1) if p == 'w' else v.reshape(-1))

    for module, group in params.items():
        rel = module[len('NFNet/~/'):]
        if rel.startswith('stem_conv'):
            conv(f'backbone.stem.conv{int(rel[9:]) + 1}', group)
        elif rel == 'final_conv':
            conv('backbone.final.conv', group)
        elif rel == 'linear':
            put('head.fc.weight', group['w'].T)
            put('head.fc.bias', group['b'])
        else:
            block = rel.split('/~/')[0]
            idx = 0 if block == 'nf_block' else int(block.split('_')[-1])
            s, b = positions[idx]
            prefix = f'backbone.stages.{s}.{b}'
            if '/~/' not in rel:
                put(f'{prefix}.skip_gain', np.asarray(group['skip_gain']).reshape(()))
            elif 'squeeze_excite' in rel:
                fc = 'fc1' if rel.endswith('/linear') else 'fc2'
                put(f'{prefix}.se.{fc}.weight', group['w'].T)
                put(f'{prefix}.se.{fc}.bias', group['b'])
            else:
                conv(f'{prefix}.{convs[rel.split("/~/")[1]]}', group)
    return out


def _write(params: dict, path, fmt: str) -> None:
    if fmt == 'pickle_nested':
        with open(path, 'wb') as f:
            pickle.dump(params, f)
    elif fmt == 'pickle_flat':
        with open(path, 'wb') as f:
            pickle.dump(_flat(params), f, protocol=2)
    elif fmt == 'npz':
        with open(path, 'wb') as f:
            np.savez(f, **_flat(params))
    elif fmt == 'npy_object':
        with open(path, 'wb') as f:
            np.save(f, np.array(params, dtype=object), allow_pickle=True)
    else:
        raise AssertionError(fmt)


# --------------------------------------------------------------------------------------
# (b) DeepMind round trip
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('fmt', ['pickle_nested', 'pickle_flat', 'npz', 'npy_object'])
def test_dm_round_trip_places_every_tensor(tmp_path, fmt):
    params = make_dm_params(SMALL_ARCH)
    src, dst = tmp_path / 'F_haiku.npz', tmp_path / 'out.pth'
    _write(params, src, fmt)
    meta = dm_conv.convert(str(src), str(dst))
    assert meta['source'] == src.name
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    state = ckpt['state_dict']
    n_source = sum(len(group) for group in params.values())
    assert len(state) == n_source  # every source placed exactly once

    expected = _expected_targets(params, SMALL_ARCH)
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key

    cfg = ckpt['meta']['model']
    assert cfg['backbone']['padding'] == 'same'
    assert cfg['backbone']['act_cfg'] == dict(type='GELU', approximate='tanh')
    model = MODELS.build(cfg)
    assert set(model.state_dict()) == set(state)  # every target key filled
    model.load_state_dict(state, strict=True)


def test_dm_errors_are_clear(tmp_path, capsys):
    params = make_dm_params(SMALL_ARCH)
    src, dst = tmp_path / 'p.pkl', tmp_path / 'out.pth'

    missing = {k: dict(v) for k, v in params.items()}
    del missing['NFNet/~/nf_block_2/~/conv1b']['gain']
    _write(missing, src, 'pickle_nested')
    assert dm_cli.main([str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert 'missing' in err and 'backbone.stages.1.1.conv2b.gain' in err

    extra = {k: dict(v) for k, v in params.items()}
    extra['NFNet/~/nf_block/~/conv3'] = {'w': np.zeros((1, 1, 16, 32), np.float32)}
    _write(extra, src, 'pickle_nested')
    assert dm_cli.main([str(src), str(dst)]) == 2
    assert 'unexpected' in capsys.readouterr().err

    _write(params, src, 'pickle_nested')
    assert dm_cli.main([str(src), str(dst), '--variant', 'F1']) == 2
    assert 'does not match --variant F1' in capsys.readouterr().err
    assert dm_cli.main([str(src), str(dst), '--variant', 'F9']) == 2
    assert 'valid choices' in capsys.readouterr().err
    assert not dst.exists()

    assert dm_cli.main([str(src), str(dst)]) == 0
    stamp = dst.stat().st_mtime_ns
    assert dm_cli.main([str(src), str(dst)]) == 2  # refuses to overwrite
    assert 'already exists' in capsys.readouterr().err and dst.stat().st_mtime_ns == stamp
    assert dm_cli.main([str(src), str(dst), '--force']) == 0


def test_dm_f0_variant_is_inferred():
    """An F0-shaped parameter set is recognised as F0 and fills the F0 classifier."""
    flat = _flat(make_dm_params(dict(depths=(1, 2, 6, 3), widths=(256, 512, 1536, 1536),
                                     group_width=128, stem_channels=(16, 32, 64, 128)),
                                num_classes=1000, zeros=True))
    state, meta = dm_conv.convert_params(flat)
    assert meta['arch'] == 'F0' and meta['model']['backbone']['arch'] == 'F0'
    assert len(state) == len(flat)
    with pytest.raises(ValueError, match='depths is'):
        dm_conv.convert_params(flat, variant='F1')
    state, _ = dm_conv.convert_params(flat, variant='f0')
    assert state['backbone.stages.2.5.conv2.weight'].shape == (768, 128, 3, 3)


# --------------------------------------------------------------------------------------
# (c) independent NumPy reference of DeepMind's NFNet (NHWC, HWIO, TF "SAME")
# --------------------------------------------------------------------------------------
def _same_pads(size: int, k: int, s: int):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, (total // 2, total - total // 2)


def np_ws_conv(x, group, stride=1):
    """Scaled WS conv: NHWC input, HWIO weight, TF SAME padding, grouped."""
    w = group['w'].astype(np.float64)
    kh, kw, cin_g, cout = w.shape
    fan_in = kh * kw * cin_g
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    var = w.var(axis=(0, 1, 2), keepdims=True)
    scale = 1.0 / np.sqrt(np.maximum(var * fan_in, 1e-4)) * \
        group['gain'].astype(np.float64).reshape(-1)
    w = w * scale - mean * scale
    n, h, wd, c = x.shape
    oh, (pt, pb) = _same_pads(h, kh, stride)
    ow, (pl, pr) = _same_pads(wd, kw, stride)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    groups = c // cin_g
    out = np.zeros((n, oh, ow, cout))
    wg = w.reshape(kh, kw, cin_g, groups, cout // groups)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            patch = patch.reshape(n, oh, ow, groups, cin_g)
            out += np.einsum('nhwgc,cgo->nhwgo', patch, wg[i, j]).reshape(n, oh, ow, cout)
    return out + group['bias'].astype(np.float64)


def np_act(x):
    """DeepMind's gelu (tanh approximation) times its gamma."""
    inner = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1 + np.tanh(inner)) * GELU_GAMMA


def np_avg_pool_same(x):
    """2x2 stride-2 average pool, TF SAME, averaging only the valid inputs."""
    n, h, w, c = x.shape
    oh, (pt, pb) = _same_pads(h, 2, 2)
    ow, (pl, pr) = _same_pads(w, 2, 2)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    total = sum(xp[:, i::2, j::2][:, :oh, :ow] for i in range(2) for j in range(2))
    count = sum(ones[:, i::2, j::2][:, :oh, :ow] for i in range(2) for j in range(2))
    return total / count


def np_nfnet_forward(params: dict, arch: dict, images_nhwc: np.ndarray) -> np.ndarray:
    p = {k: {n: np.asarray(v) for n, v in g.items()} for k, g in params.items()}
    x = images_nhwc.astype(np.float64)
    n_stem = len(arch['stem_channels'])
    for i in range(n_stem):
        x = np_ws_conv(x, p[f'NFNet/~/stem_conv{i}'], 2 if i in (0, n_stem - 1) else 1)
        if i < n_stem - 1:
            x = np_act(x)
    index, expected_var = 0, 1.0
    for stage, depth in enumerate(arch['depths']):
        for b in range(depth):
            name = _dm_block_name(index)
            stride = 2 if (stage > 0 and b == 0) else 1
            beta = 1.0 / np.sqrt(expected_var)
            out = np_act(x) * beta
            if stride > 1:
                shortcut = np_ws_conv(np_avg_pool_same(out), p[f'{name}/~/conv_shortcut'])
            elif f'{name}/~/conv_shortcut' in p:
                shortcut = np_ws_conv(out, p[f'{name}/~/conv_shortcut'])
            else:
                shortcut = x
            out = np_ws_conv(out, p[f'{name}/~/conv0'])
            out = np_ws_conv(np_act(out), p[f'{name}/~/conv1'], stride)
            out = np_ws_conv(np_act(out), p[f'{name}/~/conv1b'])
            out = np_ws_conv(np_act(out), p[f'{name}/~/conv2'])
            se1, se2 = (p[f'{name}/~/squeeze_excite/~/linear{s}'] for s in ('', '_1'))
            h = out.mean(axis=(1, 2))
            h = np.maximum(h @ se1['w'] + se1['b'], 0)
            h = 1 / (1 + np.exp(-(h @ se2['w'] + se2['b'])))
            out = 2 * h[:, None, None, :] * out
            x = out * float(p[name]['skip_gain']) * ALPHA + shortcut
            if b == 0:
                expected_var = 1.0
            expected_var += ALPHA**2
            index += 1
    x = np_act(np_ws_conv(x, p['NFNet/~/final_conv']))
    pooled = x.mean(axis=(1, 2))
    return pooled @ p['NFNet/~/linear']['w'] + p['NFNet/~/linear']['b']


def test_dm_numpy_reference_forward_matches(tmp_path):
    params = make_dm_params(SMALL_ARCH, seed=5)
    src, dst = tmp_path / 'small_haiku.npz', tmp_path / 'small.pth'
    _write(params, src, 'pickle_nested')
    assert dm_cli.main([str(src), str(dst)]) == 0
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    backbone = dict(type='NFNet', arch=SMALL_ARCH, padding='same',
                    act_cfg=dict(type='GELU', approximate='tanh'))
    model = _classifier(backbone, NUM_CLASSES, 192).eval()
    model.load_state_dict(ckpt['state_dict'], strict=True)

    # 48 x 64: odd sizes appear in the last stages (asymmetric SAME pads, partial pools)
    images = np.random.default_rng(7).standard_normal((2, 48, 64, 3)).astype(np.float32)
    expected = np_nfnet_forward(params, SMALL_ARCH, images)
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                       mode='tensor')
    _assert_close_scaled(logits.double(), torch.from_numpy(expected), 1e-4)
    # the tolerance is tight enough to tell tanh GELU from exact GELU (~4e-4 apart here)
    exact = dict(backbone, act_cfg=dict(type='GELU'))
    model_exact = _classifier(exact, NUM_CLASSES, 192).eval()
    model_exact.load_state_dict(ckpt['state_dict'], strict=True)
    with torch.no_grad():
        other = model_exact(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                            mode='tensor')
    assert (other.double() - torch.from_numpy(expected)).abs().max() > \
        1e-4 * abs(expected).max()


# --------------------------------------------------------------------------------------
# (d) untrusted pickles
# --------------------------------------------------------------------------------------
class _Evil:
    """Pickles to ``os.system(<create marker>)``: code execution on a plain pickle.load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def test_malicious_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / 'pwned'
    src, dst = tmp_path / 'evil_haiku.npz', tmp_path / 'out.pth'
    payload = {'NFNet/~/stem_conv0': {'w': _Evil(str(marker))}}
    with open(src, 'wb') as f:
        pickle.dump(payload, f)
    assert b'system' in src.read_bytes()
    with pytest.raises(UnsafePickleError, match='system') as info:
        dm_conv.load_haiku_params(str(src))
    # the package's one restricted unpickler: an UnsafeCheckpointError like safe_load's
    assert isinstance(info.value, UnsafeCheckpointError)
    assert dm_cli.main([str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'refusing to load global' in err
    assert not marker.exists() and not dst.exists()


def test_timm_malicious_pickle_is_refused(tmp_path, capsys):
    """Weights-only loading refuses the payload: one ``error:`` line, exit status 2."""
    marker = tmp_path / 'pwned'
    src, dst = tmp_path / 'evil_timm.pth', tmp_path / 'out.pth'
    torch.save({'stem.conv1.weight': torch.zeros(1), 'evil': _Evil(str(marker))}, src)
    assert timm_cli.main([str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'system' in err and 'Traceback' not in err
    assert not marker.exists() and not dst.exists()


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04truncated'], ids=['empty', 'truncated'])
@pytest.mark.parametrize('tool', ['dm', 'timm'])
def test_unreadable_source_is_an_error_line(tmp_path, capsys, tool, content):
    src, dst = tmp_path / 'broken.pth', tmp_path / 'out.pth'
    src.write_bytes(content)
    assert (dm_cli if tool == 'dm' else timm_cli).main([str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert 'broken.pth' in err and ('empty' in err or 'truncated' in err), err
    assert not dst.exists()


@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_converted_file_mode_follows_umask(tmp_path, umask):
    """Not mkstemp's private 0600: ``0o666 & ~umask``, as ``open(path, 'w')`` gives."""
    src, dst = tmp_path / 'p.pkl', tmp_path / 'out.pth'
    _write(make_dm_params(SMALL_ARCH), src, 'pickle_nested')
    old = os.umask(umask)
    try:
        assert dm_cli.main([str(src), str(dst)]) == 0
        assert dst.stat().st_mode & 0o777 == 0o666 & ~umask
        dst.chmod(0o600)
        assert dm_cli.main([str(src), str(dst), '--force']) == 0
        assert dst.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == '.tmp'] == []


def test_non_array_leaves_are_refused(tmp_path):
    src = tmp_path / 'strange.pkl'
    with open(src, 'wb') as f:
        pickle.dump({'NFNet/~/stem_conv0': {'w': [1.0, 2.0]}}, f)
    with pytest.raises(TypeError, match='expected a numpy array'):
        dm_conv.load_haiku_params(str(src))


class frozendict(dict):  # noqa: N801  (Haiku's name; pickled under Haiku's module below)
    def __reduce__(self):
        return frozendict, (dict(self), )


class FlatMapping(dict):
    def __reduce__(self):
        return FlatMapping, (tuple(self.items()), )


def _as_haiku_pickle(obj) -> bytes:
    """``obj`` pickled as if its class were Haiku's (protocol 2 names globals as text);
    Haiku itself is not installed here."""
    data = pickle.dumps(obj, protocol=2)
    here = f'c{__name__}\n{type(obj).__name__}\n'.encode()
    assert here in data
    return data.replace(here, f'chaiku._src.data_structures\n{type(obj).__name__}\n'.encode())


def test_haiku_frozendict_tree_loads_as_plain_dicts(tmp_path):
    """A parameter tree saved from Haiku's immutable ``frozendict`` (module -> params)
    reads as nested plain dicts with the restricted unpickler; Haiku's ``FlatMapping``
    (it carries jaxlib tree structures) is refused."""
    weight = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    tree = frozendict({'NFNet/~/stem_conv0': frozendict({'w': weight})})
    src = tmp_path / 'F0_haiku.npz'
    src.write_bytes(_as_haiku_pickle(tree))
    flat = dm_conv.load_haiku_params(str(src))
    (key, ) = flat
    assert 'stem_conv0' in key and np.array_equal(flat[key], weight)
    assert 'haiku' not in sys.modules  # nothing of Haiku was imported

    src.write_bytes(_as_haiku_pickle(FlatMapping({'NFNet/~/stem_conv0': {'w': weight}})))
    with pytest.raises(UnsafePickleError, match='FlatMapping'):
        dm_conv.load_haiku_params(str(src))

    class Malformed(frozendict):
        def __reduce__(self):
            return frozendict, ([1, 2], )  # not (key, value) pairs

    data = pickle.dumps(Malformed({'a': 1}), protocol=2).replace(
        f'c{__name__}\nfrozendict\n'.encode(), b'chaiku._src.data_structures\nfrozendict\n')
    assert b'haiku._src.data_structures' in data
    src.write_bytes(data)
    with pytest.raises(UnsafePickleError, match='malformed Haiku frozendict'):
        dm_conv.load_haiku_params(str(src))
