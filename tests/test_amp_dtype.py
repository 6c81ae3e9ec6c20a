"""AmpAGCOptimWrapper(dtype='auto'): bf16 where the GPU has it, else fp16 (logged)."""
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper

import nfnets_mm  # noqa: F401  (registers the wrappers)
from nfnets_mm.engine.optim_wrappers import AmpAGCOptimWrapper, amp_dtype
from nfnets_mm.engine.optim_wrappers.amp_dtype import (VALID_DTYPES, resolve_amp_dtype,
                                                       resolve_loss_scale)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu(monkeypatch):
    """A fake CUDA device whose native bf16 support the test sets; records the log."""
    state = dict(bf16=True, calls=[], logs=[])

    def is_bf16_supported(including_emulation=True):
        state['calls'].append(including_emulation)
        return state['bf16'] or including_emulation  # an emulating, pre-Ampere GPU

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0')  # MMEngine's logger asks for the device
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', is_bf16_supported)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'Tesla V100-SXM2-32GB')
    monkeypatch.setattr(amp_dtype, 'print_log', lambda msg, **kw: state['logs'].append(msg))
    return state


def test_auto_is_bf16_on_a_gpu_with_native_bf16(gpu):
    assert resolve_amp_dtype('auto') is torch.bfloat16
    assert gpu['calls'] == [False], 'emulated bf16 must not count'
    assert gpu['logs'] == []


def test_auto_falls_back_to_fp16_with_a_logged_message(gpu):
    gpu['bf16'] = False
    assert resolve_amp_dtype('auto') is torch.float16
    assert len(gpu['logs']) == 1
    assert 'float16' in gpu['logs'][0] and 'V100' in gpu['logs'][0]


def test_auto_without_cuda_is_fp16(monkeypatch):
    logs = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(amp_dtype, 'print_log', lambda msg, **kw: logs.append(msg))
    assert resolve_amp_dtype('auto') is torch.float16 and len(logs) == 1


@pytest.mark.parametrize('name', ['float16', 'bfloat16', 'float32', 'float64'])
def test_explicit_dtypes_are_kept(gpu, name):
    gpu['bf16'] = False  # an explicit choice is not overridden by the capability check
    assert resolve_amp_dtype(name) is getattr(torch, name)
    assert resolve_amp_dtype(getattr(torch, name)) is getattr(torch, name)
    assert resolve_amp_dtype(None) is None


@pytest.mark.parametrize('bad', ['fp16', 'half', 'Auto', torch.int8, torch.complex64, 16, True])
def test_bad_dtype_is_refused_naming_the_choices(bad):
    with pytest.raises(ValueError, match='valid choices') as err:
        resolve_amp_dtype(bad)
    for choice in VALID_DTYPES:
        assert choice in str(err.value)


def test_auto_loss_scale_scales_only_fp16():
    assert resolve_loss_scale('auto', torch.float16) == 'dynamic'
    assert resolve_loss_scale('auto', None) == 'dynamic'
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        assert resolve_loss_scale('auto', dtype) == 1.0
    assert resolve_loss_scale('dynamic', torch.bfloat16) == 'dynamic'
    assert resolve_loss_scale(512., torch.float16) == 512.


def build_wrapper(monkeypatch, **kwargs) -> AmpAGCOptimWrapper:
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    model = nn.Sequential(nn.Linear(4, 4))
    cfg = dict(type='AmpAGCOptimWrapper', optimizer=dict(type='SGD', lr=0.1),
               clip_grad=dict(type='agc', exclude=[]), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # AGC clips every parameter (exclude=[])
        return build_optim_wrapper(model, cfg)


@pytest.mark.parametrize('bf16', [True, False])
def test_wrapper_defaults_follow_the_device(gpu, monkeypatch, bf16):
    gpu['bf16'] = bf16
    wrapper = build_wrapper(monkeypatch)
    assert wrapper.cast_dtype is (torch.bfloat16 if bf16 else torch.float16)
    # bf16: a static scale of 1 (no scaling); fp16: MMEngine's dynamic GradScaler.
    assert wrapper._scale_update_param == (1.0 if bf16 else None)
    assert len(gpu['logs']) == (0 if bf16 else 1)


def test_wrapper_explicit_dtype_and_bad_dtype(gpu, monkeypatch):
    wrapper = build_wrapper(monkeypatch, dtype='float16', loss_scale='dynamic')
    assert wrapper.cast_dtype is torch.float16 and wrapper._scale_update_param is None
    with pytest.raises(ValueError, match='bfloat16'):
        build_optim_wrapper(nn.Linear(2, 2), dict(type='AmpAGCOptimWrapper', dtype='bf17',
                                                  optimizer=dict(type='SGD', lr=0.1)))


@pytest.mark.parametrize('schedule', ['nfnet_imagenet_bs4096.py', 'nfnet_finetune_bs2048_15k.py'])
def test_schedules_ask_for_auto(schedule):
    cfg = Config.fromfile(REPO / 'configs/_base_/schedules' / schedule)
    assert cfg.optim_wrapper.type == 'AmpAGCOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'auto' and cfg.optim_wrapper.loss_scale == 'auto'
