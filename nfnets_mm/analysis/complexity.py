"""Parameter and FLOP counts of NFNet classifiers, against paper Table 3."""
from typing import Dict

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from ..models import NFNet
from ..variants import NFNET_VARIANTS, get_variant

#: Paper Table 3 for the variants it lists (F0-F6), derived from the variant table
#: :data:`nfnets_mm.variants.NFNET_VARIANTS`: ``params`` (M), ``flops`` (B, one
#: multiply-add = one FLOP) and the ``test_size`` (px) the FLOPs are counted at.
TABLE3 = {
    name: dict(params=v.params_m, flops=v.flops_g, test_size=v.test_size)
    for name, v in NFNET_VARIANTS.items() if v.params_m is not None and v.flops_g is not None
}


class NFNetClassifier(nn.Module):
    """Backbone + global average pool + linear: what Table 3 counts."""

    def __init__(self, arch: str, num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = NFNet(arch=arch, drop_path_rate=0.)
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)[-1].mean(dim=(2, 3)))


@torch.no_grad()
def nfnet_complexity(arch: str, size: int = None) -> Dict[str, float]:
    """Params and FLOPs (multiply-adds, MMEngine's FlopAnalyzer) of an NFNet classifier.

    Args:
        arch: a variant name of :data:`~nfnets_mm.variants.NFNET_VARIANTS` (``'F0'``,
            ``'f3+'``, ...).
        size: square input size (px); defaults to the variant's ``test_size``, the
            resolution paper Table 3 counts FLOPs at.

    Returns:
        ``dict(arch, size, params, flops)`` with absolute counts.
    """
    size = size or get_variant(arch).test_size
    model = NFNetClassifier(arch).eval()
    params = sum(p.numel() for p in model.parameters())
    analyzer = FlopAnalyzer(model, torch.zeros(1, 3, size, size))
    # elementwise ops (WS statistics, activations) are not multiply-adds: not counted
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    flops = analyzer.total()
    return dict(arch=arch, size=size, params=params, flops=flops)
