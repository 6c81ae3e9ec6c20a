"""Parameter and FLOP counts of NFNet classifiers, against paper Table 3."""
from typing import Dict

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from ..models import NFNet

#: Paper Table 3: params (M) and FLOPs (B, one multiply-add = one FLOP) at test resolution.
TABLE3 = {
    'F0': dict(params=71.5, flops=12.38, test_size=256),
    'F1': dict(params=132.6, flops=35.54, test_size=320),
    'F2': dict(params=193.8, flops=62.59, test_size=352),
    'F3': dict(params=254.9, flops=114.76, test_size=416),
    'F4': dict(params=316.1, flops=215.24, test_size=512),
    'F5': dict(params=377.2, flops=289.76, test_size=544),
    'F6': dict(params=438.4, flops=377.28, test_size=576),
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
    """Params and FLOPs (multiply-adds, MMEngine's FlopAnalyzer) of an NFNet classifier."""
    size = size or TABLE3[arch.upper()]['test_size']
    model = NFNetClassifier(arch).eval()
    params = sum(p.numel() for p in model.parameters())
    analyzer = FlopAnalyzer(model, torch.zeros(1, 3, size, size))
    # elementwise ops (WS statistics, activations) are not multiply-adds: not counted
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    flops = analyzer.total()
    return dict(arch=arch, size=size, params=params, flops=flops)
