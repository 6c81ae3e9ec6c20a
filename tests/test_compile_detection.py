"""``compile=`` (MMEngine's ``torch.compile`` option) for the Mask R-CNN configs.

MMEngine's runner compiles ``model.train_step`` (``Runner._maybe_compile``:
``torch.compile(model.train_step, **cfg.compile)``).  In a detector most of that step
cannot be one graph: mmcv's RoIAlign and NMS are C++ extension calls, and MMDetection's
samplers and losses use data-dependent shapes and ``.item()``, so Dynamo breaks the step
into many graphs (about a hundred for Mask R-CNN).  What must hold is that the NFNet
backbone is *not* split: it runs as one compiled graph, with no graph break inside it,
built once and not recompiled every step, and the compiled step computes what the eager
step computes.

1. The backbone exactly as the Mask R-CNN configs build it (their ``model.backbone`` dict:
   ``out_indices``, ``padding='same'``, tanh-GELU, ``with_final_conv=False``, drop path
   ...; the same in the 1x, LSJ, F0 and F1 configs), with only ``arch`` made tiny and the
   download-only ``init_cfg`` dropped, traces as one graph without breaks
   (``torch._dynamo.explain``), also with frozen stages (stem and first stages in eval
   mode without gradients inside a training backbone) and in eval mode.
2. A real ``Runner`` built from ``configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py``
   (its NFNet, FPN, Mask R-CNN heads, ``AGCOptimWrapperConstructor``, ``AGCOptimWrapper``
   and ``NFNeckWiringCheckHook``) on a 64 px demo COCO set, with ``compile=dict(...)``,
   trains two iterations; its losses and final weights equal those of the same runner
   without ``compile`` (same seed, so the same initial weights, batches and RoI samples).
   Both runs standardize weights with the plain Eq. 1 formula (``fused_ws=False``), the
   one the compiled path records: the eager default, the fused op, differs from it by
   rounding only (~5e-7 relative on the backbone's outputs, tested in
   ``tests/test_ws_fused.py`` and, compiled, ``tests/test_compile.py``), but at
   initialization the RPN's objectness scores nearly tie, so such rounding reorders the
   proposals, changes the sampled RoIs and moves ``loss_cls`` by 1e-3: with the same
   formula the compiled run must reproduce the eager one to fp32 tolerance (it does
   bitwise).
   The graphs the runner's ``torch.compile`` call builds are recorded (``torch.compile``
   is wrapped only to add a recording step in front of the configured backend; the call
   itself is the runner's, checked to be ``torch.compile(model.train_step, **compile)``):
   exactly one graph holds every conv of the backbone, in both steps.

Backend of the runner test: ``'eager'``.  Dynamo's tracing is where graph breaks,
guards and recompiles come from and where the compiled path takes other code than the
eager one (``ScaledStdConv2d``'s ``is_compiling()`` branch, the AGC update under
``torch.compiler.disable``, graphs resumed after each break); ``eager`` runs the traced
graphs with eager kernels.  ``'aot_eager'`` adds AOTAutograd on each of
the ~100 detector graphs and doubles the compiled run (80-100 s against 45-50 s on the
shared 2-core CPU), for a check that ``tests/test_compile.py`` already makes on the
backbone's own graph (aot_eager forward and backward against eager).
"""
import copy
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, TINY_NFNET_ARCH
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from nfnets_mm.models.layers import ScaledStdConv2d

#: The paper-setting config whose ``model.backbone`` is traced; the 1x config and the F1
#: configs build the same backbone dict apart from ``arch`` (checked below).
LSJ_CONFIG = 'configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_64xb4-amp-lsj-22.5k_coco.py'
OTHER_CONFIGS = ('configs/mask_rcnn/mask-rcnn_nfnet-f0_fpn_1x_coco.py',
                 'configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_1x_coco.py',
                 'configs/mask_rcnn/mask-rcnn_nfnet-f1_fpn_64xb4-amp-lsj-22.5k_coco.py')
DEMO_CONFIG = 'configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py'
#: ``cfg.compile`` of the runner test (see the module docstring for the backend).
COMPILE_CFG = dict(backend='eager')
ITERS = 2
#: Dynamo's warnings about the mmcv C++ ops (RoIAlign, NMS) it cannot trace: expected.
pytestmark = pytest.mark.filterwarnings('ignore:Dynamo does not know how to trace')


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def load(path: str) -> Config:
    return Config.fromfile(osp.join(REPO_ROOT, path))


def backbone_cfg(config: str) -> dict:
    """``model.backbone`` of ``config`` without ``arch`` and its (download) ``init_cfg``."""
    cfg = copy.deepcopy(load(config).model.backbone.to_dict())
    cfg.pop('arch'), cfg.pop('init_cfg')
    return cfg


def test_mask_rcnn_configs_share_the_traced_backbone_settings():
    lsj = backbone_cfg(LSJ_CONFIG)
    assert lsj['type'] == 'NFNet' and lsj['padding'] == 'same'  # DeepMind's forward
    assert lsj['out_indices'] == (0, 1, 2, 3) and lsj['drop_path_rate'] > 0
    for config in OTHER_CONFIGS:
        assert backbone_cfg(config) == lsj, config


@pytest.mark.parametrize('frozen_stages,mode', [(-1, 'train'), (2, 'train'), (2, 'eval')])
def test_configured_backbone_traces_as_one_graph(frozen_stages, mode):
    """The configs' backbone (tiny arch): in train mode with the config's drop path, with
    the stem + 2 stages frozen inside a training backbone (eval mode, no gradients, as a
    training detector holds them), and in eval mode: one graph, no break."""
    from mmdet.registry import MODELS
    cfg = dict(backbone_cfg(LSJ_CONFIG), arch=TINY_NFNET_ARCH, frozen_stages=frozen_stages)
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(cfg)
    getattr(backbone, mode)()
    if frozen_stages > 0:
        frozen = [backbone.stem, *backbone.stages[:frozen_stages]]
        assert all(not m.training for f in frozen for m in f.modules())
        assert not any(p.requires_grad for f in frozen for p in f.parameters())
        assert backbone.stages[frozen_stages].training == (mode == 'train')
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    explanation = torch._dynamo.explain(backbone)(x)
    reasons = [str(b.reason).splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1
    # the four FPN inputs (the config's out_indices, no final conv)
    assert [o.shape[1] for o in backbone(x)] == list(TINY_NFNET_ARCH['widths'])


# ---------------------------------------------------------------------------------------
# A Mask R-CNN train step through the runner's compile path


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from demo_data import make_coco_demo  # tools/data/demo_data.py
    root = tmp_path_factory.mktemp('demo')
    make_coco_demo(str(root), seed=0, num_train=2, num_val=1, image_size=64, max_objects=2)
    return osp.join(str(root), 'coco') + '/'


def demo_runner_cfg(coco_root: str, work_dir: str, compile_cfg=None) -> Config:
    """The demo Mask R-CNN config for ``ITERS`` iterations of batch 2 on the 64 px demo
    set, with fewer proposals and sampled RoIs (CPU time), no validation, no
    checkpoints; its model, optimizer wrapper and neck-wiring hook are the config's."""
    cfg = load(DEMO_CONFIG)
    cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    cfg.model.train_cfg.rcnn.sampler.num = 64
    dataset = cfg.train_dataloader.dataset
    dataset.update(data_root=coco_root, serialize_data=False)
    for step in dataset.pipeline:
        if step.type == 'Resize':
            step.scale = (64, 64)
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'] = cfg[f'{split}_cfg'] = cfg[f'{split}_evaluator'] = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=ITERS)
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks = []
    cfg.randomness = dict(seed=0)
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    if compile_cfg is not None:
        cfg.compile = compile_cfg
    return cfg


def run(cfg: Config):
    """Train; return the runner, the initial weights, every logged loss of every step and
    the final weights."""
    runner = Runner.from_cfg(cfg)
    initial = {n: p.detach().clone() for n, p in runner.model.named_parameters()}
    runner.train()
    assert runner.iter == ITERS
    losses = {k: v.data[0].tolist() for k, v in runner.message_hub.log_scalars.items()
              if k.startswith('train/loss')}
    weights = {n: p.detach().clone() for n, p in runner.model.named_parameters()}
    return runner, initial, losses, weights


def backbone_convs_per_graph(graphs, backbone):
    """The backbone WS convs (names in the backbone) each recorded Dynamo graph holds, for
    the graphs that hold any: a node's ``nn_module_stack`` is keyed by ``id(module)`` of
    the modules it was traced in, wherever the graph's frame starts."""
    convs = {str(id(m)): name for name, m in backbone.named_modules()
             if isinstance(m, ScaledStdConv2d)}
    per_graph = []
    for gm in graphs:
        found = {convs[key] for node in gm.graph.nodes
                 for key in (node.meta.get('nn_module_stack') or {}) if key in convs}
        if found:
            per_graph.append(found)
    return per_graph


def test_compiled_mask_rcnn_train_step_matches_eager_with_the_backbone_in_one_graph(
        tmp_path, coco_root, monkeypatch):
    """Two iterations of the demo Mask R-CNN, eager and with ``compile=COMPILE_CFG``:
    same losses and weights; the backbone in one graph, built once."""
    from torch._dynamo.backends.registry import lookup_backend

    # the WS formula the compiled path records, in both runs (see the module docstring)
    monkeypatch.setattr(ScaledStdConv2d, 'fused_ws', False)
    _, initial_weights, eager_losses, eager_weights = run(
        demo_runner_cfg(coco_root, str(tmp_path / 'eager')))

    graphs, calls = [], []
    compile_ = torch.compile

    def recording_compile(fn, **kwargs):
        calls.append((fn, kwargs))
        backend = lookup_backend(kwargs['backend'])

        def record(gm, example_inputs):
            graphs.append(gm)
            return backend(gm, example_inputs)

        return compile_(fn, **dict(kwargs, backend=record))

    monkeypatch.setattr(torch, 'compile', recording_compile)
    cfg = demo_runner_cfg(coco_root, str(tmp_path / 'compiled'), compile_cfg=COMPILE_CFG)
    runner, compiled_initial, losses, weights = run(cfg)

    # the runner compiled train_step with the config's options, and ran the compiled one
    ((fn, kwargs), ) = calls
    assert kwargs == COMPILE_CFG
    assert getattr(fn, '__func__', None) is type(runner.model).train_step
    assert runner.model.train_step is not fn and graphs

    # one graph holds every WS conv of the backbone: no break inside it; and it was built
    # once for both steps (same input size), not recompiled every step
    backbone = runner.model.backbone
    backbone_convs = {n for n, m in backbone.named_modules() if isinstance(m, ScaledStdConv2d)}
    assert len(backbone_convs) > 20
    with_backbone = backbone_convs_per_graph(graphs, backbone)
    assert with_backbone == [backbone_convs], [sorted(g) for g in with_backbone]

    # the compiled step computes the eager step from the same initial weights
    for name, value in initial_weights.items():
        assert torch.equal(compiled_initial[name], value), name
    # ... every loss of both steps, then the weights after two AGC + SGD updates
    assert set(losses) == set(eager_losses) and 'train/loss_mask' in losses
    for key, values in eager_losses.items():
        assert len(values) == ITERS
        torch.testing.assert_close(losses[key], values, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, key=key: f'{key}: {m}')
    assert eager_losses['train/loss'][0] != eager_losses['train/loss'][1]
    for name, value in eager_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f'{name}: {m}')
    # ... which the two updates moved (the comparison is not one of initial weights)
    moved = {n for n, p in eager_weights.items() if not torch.equal(p, initial_weights[n])}
    assert any(n.startswith('backbone.stages.') for n in moved)
    assert any(n.startswith('roi_head.mask_head.') for n in moved)
