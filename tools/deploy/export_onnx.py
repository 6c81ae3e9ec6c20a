#!/usr/bin/env python
"""Export an NFNet / NF-ResNet classifier to ONNX.

Example::

    python tools/deploy/export_onnx.py configs/nfnet/dm_weights/f0_imagenet.py \
        checkpoints/nfnet-f0_dm-in1k.pth work_dirs/nfnet_f0.onnx --shape 256 256

Builds the model from an MMPretrain config, loads the checkpoint (strictly), folds the
weight standardization into plain conv weights (``switch_to_deploy``), exports
``model(x, mode='tensor')`` (logits of shape ``(N, num_classes)`` for an image tensor
``(N, 3, H, W)`` that is already normalised: the data preprocessor is *not* part of
the graph) and, when ``onnxruntime`` is installed, checks the ONNX output against
PyTorch and prints the max abs difference.

torch 2.14's ``torch.onnx.export`` defaults to the dynamo exporter, which needs
``onnxscript``; if it fails the TorchScript exporter (``dynamo=False``) is used
(``--exporter`` forces one).

Weights: a protobuf message, and so an ``.onnx`` file with embedded weights, cannot
exceed 2 GB.  Models whose parameters and buffers take at most
:data:`EMBED_LIMIT_BYTES` (1.5 GiB, the limit torch's dynamo exporter itself applies,
leaving room for the graph) are written as one self-contained ``OUT`` file: NFNet-F0
... F5 in fp32.  Larger ones (F6, F7) keep their weights in an external-data
sidecar ``OUT.data`` (the dynamo exporter; the TorchScript fallback writes one file per
tensor next to ``OUT``) that must stay in the same folder as ``OUT``.  The script
prints which one it wrote.
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from typing import List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

EXPORTERS = ('auto', 'dynamo', 'torchscript')
#: Weights up to this size are embedded in the .onnx file; larger ones go to a sidecar.
#: Protobuf caps a message at 2 GB; torch's dynamo exporter switches to external data
#: above 1.5 GiB of weights, so the same limit keeps our choice and its own in step.
EMBED_LIMIT_BYTES = 1536 * 1024**2


class ClassifierExportWrapper(nn.Module):
    """``model(x, mode='tensor')`` as a single-input module for tracing.

    Shapes:
        - input: :math:`(N, 3, H, W)` normalised images.
        - output: :math:`(N, K)` logits (or the backbone/neck features without a head).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x, mode='tensor')


def build_model(config: str, checkpoint: str) -> nn.Module:
    """Build ``cfg.model`` from an MMPretrain config and load ``checkpoint`` strictly."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import import_modules_from_strings

    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config!r} does not exist.')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist.')
    cfg = Config.fromfile(config)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    import nfnets_mm  # noqa: F401
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmpretrain.registry import MODELS
    if 'model' not in cfg:
        raise KeyError(f'config {config!r} has no "model" entry.')
    model_cfg = cfg.model.copy()
    backbone = model_cfg.get('backbone')
    if isinstance(backbone, dict) and backbone.get('init_cfg') is not None:
        backbone = backbone.copy()
        backbone['init_cfg'] = None  # weights come from `checkpoint`
        model_cfg['backbone'] = backbone
    model = MODELS.build(model_cfg)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def switch_to_deploy(model: nn.Module) -> int:
    """Fold WS in every module that supports it; returns how many were switched."""
    count = 0
    for module in model.modules():
        if hasattr(module, 'switch_to_deploy') and not getattr(module, 'deploy', False):
            module.switch_to_deploy()
            count += 1
    return count


def weight_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers (the initializers of the exported graph)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def external_data_files(out: str) -> List[str]:
    """The external-data files ``out`` refers to (``[]``: all weights are embedded)."""
    try:
        import onnx
    except ImportError:  # the TorchScript exporter runs without the onnx package
        sidecar = out + '.data'
        return [sidecar] if osp.isfile(sidecar) else []
    model = onnx.load(out, load_external_data=False)
    locations = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == 'location')
    return sorted(osp.join(osp.dirname(out), loc) for loc in locations)


def export_onnx(module: nn.Module, dummy: torch.Tensor, out: str, exporter: str = 'auto',
                opset: Optional[int] = None) -> str:
    """Export ``module(dummy)`` to ``out``; returns the exporter that worked.

    Weights are embedded in ``out`` up to :data:`EMBED_LIMIT_BYTES`, above it they go
    to an external-data sidecar (see the module docstring).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'unknown exporter {exporter!r}; valid choices are {EXPORTERS}.')
    kwargs = dict(input_names=['input'], output_names=['output'])
    if opset is not None:
        kwargs['opset_version'] = opset
    module.eval()
    if exporter in ('auto', 'dynamo'):
        external = weight_bytes(module) > EMBED_LIMIT_BYTES
        try:
            torch.onnx.export(module, (dummy, ), out, dynamo=True, external_data=external,
                              **kwargs)
            return 'dynamo'
        except Exception as err:  # noqa: BLE001 - any exporter failure -> fallback
            if exporter == 'dynamo':
                raise
            warnings.warn(f'dynamo ONNX export failed ({type(err).__name__}: {err}); '
                          'falling back to dynamo=False.')
    torch.onnx.export(module, (dummy, ), out, dynamo=False, **kwargs)
    return 'torchscript'


def verify_onnx(module: nn.Module, out: str, dummy: torch.Tensor) -> Optional[float]:
    """Max abs difference between onnxruntime and PyTorch, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    (actual, ) = session.run(None, {session.get_inputs()[0].name: dummy.numpy()})[:1]
    with torch.no_grad():
        expected = module(dummy)
    if isinstance(expected, (tuple, list)):
        expected = expected[0]
    return float(np.abs(actual - expected.numpy()).max())


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export an NF classifier to ONNX.',
        epilog='Weights up to 1.5 GiB (NFNet-F0 ... F5 in fp32) are embedded in OUT, a '
        'single self-contained file; larger models (protobuf caps a file at 2 GB) keep '
        'them in an external-data sidecar OUT.data that must stay next to OUT.')
    parser.add_argument('config', help='MMPretrain config file')
    parser.add_argument('checkpoint', help='checkpoint to load')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'),
                        help='input height and width (default: 256 256)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the graph')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset version')
    parser.add_argument('--exporter', choices=EXPORTERS, default='auto',
                        help='auto: dynamo, falling back to the TorchScript exporter')
    parser.add_argument('--no-deploy', action='store_true',
                        help='export the WS convs as they are (not recommended)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite OUT (and remove a sidecar OUT.data of an earlier '
                        'export) if it exists')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if osp.exists(args.out) and not args.force:
        print(f'error: {args.out!r} already exists; pass --force to overwrite it.',
              file=sys.stderr)
        return 1
    if min(args.shape) < 1 or args.batch < 1:
        print('error: --shape and --batch must be positive.', file=sys.stderr)
        return 1
    try:
        model = build_model(args.config, args.checkpoint)
    except (OSError, KeyError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    switched = 0 if args.no_deploy else switch_to_deploy(model)
    wrapper = ClassifierExportWrapper(model).eval()
    dummy = torch.randn(args.batch, 3, *args.shape)
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    if args.force and osp.isfile(args.out + '.data'):  # a stale sidecar would look needed
        os.remove(args.out + '.data')
    exporter = export_onnx(wrapper, dummy, args.out, args.exporter, args.opset)
    print(f'exported {args.out} with the {exporter} exporter (input {tuple(dummy.shape)}, '
          f'{switched} module(s) switched to deploy)')
    size = f'{weight_bytes(wrapper) / 2**20:.1f} MiB'
    sidecars = external_data_files(args.out)
    if sidecars:
        print(f'weights ({size}) are in the external-data file(s) '
              f'{", ".join(sidecars[:3])}{" ..." if len(sidecars) > 3 else ""}: keep '
              f'them next to {args.out}.')
    else:
        print(f'weights ({size}) are embedded: {args.out} is self-contained.')
    diff = verify_onnx(wrapper, args.out, dummy)
    if diff is None:
        print('onnxruntime is not installed: skipped the numerical check.')
        return 0
    print(f'onnxruntime vs PyTorch: max abs diff {diff:.3g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
