"""The same type strings build under MMPretrain's and MMDetection's scopes."""
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT, TINY_NFNET_ARCH
from mmengine.registry import DefaultScope

from nfnets_mm.engine import AGCOptimWrapper
from nfnets_mm.models import NFNet, NFResNet


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_backbones_build_from_each_scope_registry(scope):
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        nfnet = MODELS.build(dict(type='NFNet', arch=TINY_NFNET_ARCH))
        resnet = MODELS.build(dict(type='NFResNet', depth=26))
        act = MODELS.build(dict(type='GammaAct', act_cfg=dict(type='GELU', approximate='tanh')))
    assert isinstance(nfnet, NFNet) and isinstance(resnet, NFResNet)
    assert act.gamma == pytest.approx(1.7015043497085571)


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_agc_wrapper_builds_from_each_scope(scope):
    from mmengine.optim import build_optim_wrapper
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(
            model, dict(type='AGCOptimWrapper', optimizer=dict(type='SGD', lr=0.1),
                        clip_grad=dict(type='agc', clipping=0.01, exclude=['0.weight']),
                        constructor='AGCOptimWrapperConstructor'))
    assert isinstance(wrapper, AGCOptimWrapper)
    assert [g['agc'] for g in wrapper.optimizer.param_groups] == [False, True]


CLS_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
model = dict(type='ImageClassifier',
             backbone=dict(type='NFNet', arch=dict(depths=(1, 1), widths=(32, 64),
                                                   group_width=16)),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='NFNetClsHead', num_classes=3, in_channels=128))
"""

DET_CONFIG = """
default_scope = 'mmdet'
custom_imports = dict(imports=['nfnets_mm'], allow_failed_imports=False)
backbone = dict(type='NFNet', arch=dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128),
                                        group_width=16), out_indices=(0, 1, 2, 3),
                with_final_conv=False)
neck = dict(type='FPN', in_channels=[32, 64, 128, 128], out_channels=16, num_outs=5)
"""

BUILD_SCRIPT = """
import sys, torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
cfg = Config.fromfile(sys.argv[1])
assert 'nfnets_mm' in sys.modules, 'custom_imports did not import nfnets_mm'
init_default_scope(cfg.default_scope)
if cfg.default_scope == 'mmpretrain':
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    out = model(torch.randn(1, 3, 32, 32), mode='tensor')
    print('OK', type(model.backbone).__name__, tuple(out.shape))
else:
    from mmdet.registry import MODELS
    backbone = MODELS.build(cfg.backbone)
    cfg.neck.in_channels = list(backbone.out_channels)
    neck = MODELS.build(cfg.neck)
    feats = neck(backbone(torch.randn(1, 3, 64, 64)))
    print('OK', type(backbone).__name__, len(feats))
"""


@pytest.mark.parametrize('scope,config,expected', [
    ('mmpretrain', CLS_CONFIG, 'OK NFNet (1, 3)'),
    ('mmdet', DET_CONFIG, 'OK NFNet 5'),
])
def test_config_file_of_each_scope_builds_in_fresh_process(tmp_path, scope, config, expected):
    """custom_imports alone (nothing imported beforehand) registers the modules."""
    cfg_file = tmp_path / f'{scope}_cfg.py'
    cfg_file.write_text(textwrap.dedent(config))
    script = tmp_path / 'build.py'
    script.write_text(BUILD_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(cfg_file)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout
