"""The same type strings build under MMPretrain's and MMDetection's scopes."""
import json
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
        act = MODELS.build(dict(type='NFGammaAct',
                                act_cfg=dict(type='GELU', approximate='tanh')))
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


REGISTERED_NAMES_SCRIPT = """
import importlib, json
import mmengine.registry as root
from mmengine.registry import Registry
downstream = [importlib.import_module(m) for m in ('mmpretrain.registry', 'mmdet.registry')]
# everything of OpenMMLab's that nfnets_mm may import registers its own names first
for package in ('mmcv.cnn', 'mmcv.ops', 'mmpretrain.models', 'mmpretrain.datasets',
                'mmpretrain.engine', 'mmpretrain.evaluation', 'mmdet.models', 'mmdet.datasets',
                'mmdet.engine', 'mmdet.evaluation'):
    importlib.import_module(package)
registries = [r for mod in [root] + downstream for r in vars(mod).values()
              if isinstance(r, Registry)]
before = [dict(r.module_dict) for r in registries]
import nfnets_mm  # noqa: F401
added = set()
for registry, old in zip(registries, before):
    for name, obj in registry.module_dict.items():
        module = getattr(obj, '__module__', '') or ''
        if old.get(name) is obj or module.split('.')[0] in ('mmpretrain', 'mmdet', 'mmcv',
                                                            'mmengine'):
            continue  # present before, or registered by a package nfnets_mm imports
        added.add(f'{registry.scope}:{registry.name}:{name}:{module}')
print(json.dumps(sorted(added)))
"""


def test_every_registered_name_is_nf_prefixed_or_public(tmp_path):
    """What ``import nfnets_mm`` adds to any registry (root, MMPretrain's, MMDetection's)."""
    from nfnets_mm.registry import NAME_PREFIX, PUBLIC_NAMES
    script = tmp_path / 'names.py'
    script.write_text(REGISTERED_NAMES_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    added = [entry.split(':') for entry in json.loads(result.stdout.strip().splitlines()[-1])]
    names = {name for _, _, name, _ in added}
    assert {'NFNet', 'NFResNet', 'NFNetClsHead', 'NFGammaAct', 'AGCOptimWrapper'} <= names
    offending = [entry for entry in added
                 if not (entry[2].startswith(NAME_PREFIX) or entry[2] in PUBLIC_NAMES)]
    assert not offending, f'generic names registered by nfnets_mm: {offending}'
    # nothing of torch's is registered under torch's own names
    assert all(module.startswith('nfnets_mm') for _, _, _, module in added), added


GENERIC_NAMES = ('GammaAct', 'ScaledStdConv2d', 'StochasticDepth', 'ConvNorm', 'CELU', 'SELU',
                 'Softplus', 'Softsign', 'LogSigmoid')


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_another_plugin_registers_the_generic_names_without_conflict(scope):
    """A second plugin's ``GammaAct``, ``CELU``, ... neither fail nor change NFNet."""
    from mmengine.registry import MODELS as ROOT_MODELS

    from nfnets_mm.models.layers import GammaAct

    class OtherPluginModule(torch.nn.Module):
        pass

    registered = []
    try:
        for name in GENERIC_NAMES:
            ROOT_MODELS.register_module(name=name, module=OtherPluginModule)  # no KeyError
            registered.append(name)
        registry = (__import__('mmpretrain.registry', fromlist=['MODELS']) if scope ==
                    'mmpretrain' else __import__('mmdet.registry', fromlist=['MODELS'])).MODELS
        with DefaultScope.overwrite_default_scope(scope):
            assert isinstance(registry.build(dict(type='GammaAct')), OtherPluginModule)
            ours = registry.build(dict(type='NFGammaAct', act_cfg=dict(type='GELU')))
            nfnet = registry.build(dict(type='NFNet', arch=TINY_NFNET_ARCH,
                                        act_cfg=dict(type='GELU')))
        assert isinstance(ours, GammaAct)
        assert all(not isinstance(m, OtherPluginModule) for m in nfnet.modules())
    finally:
        for name in registered:
            ROOT_MODELS._module_dict.pop(name)


def test_torch_activations_build_without_being_registered():
    """CELU & co. come from torch.nn directly; unknown names list the valid choices."""
    from mmengine.registry import MODELS as ROOT_MODELS

    from nfnets_mm.models.layers import GammaAct, build_activation
    for name in ('CELU', 'SELU', 'Softplus', 'Softsign', 'LogSigmoid'):
        assert ROOT_MODELS.get(name) is None
        act = GammaAct(dict(type=name))
        assert type(act.act) is getattr(torch.nn, name)
        x = torch.randn(64)
        torch.testing.assert_close(act(x), getattr(torch.nn, name)()(x) * act.gamma)
    assert build_activation(dict(type='CELU', alpha=2.0)).alpha == 2.0
    with pytest.raises(KeyError, match='NoSuchAct.*known gamma are: CELU'):
        build_activation(dict(type='NoSuchAct'))
