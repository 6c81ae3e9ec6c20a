"""The NFNet-F0 ... F7 variant table: the one place the per-variant numbers live.

Everything that depends on a variant's numbers derives from :data:`NFNET_VARIANTS`:
``NFNet``'s ``arch_zoo`` (depths, widths), the complexity analysis (Table 3 params and
FLOPs), the converters' variant detection, the ImageNet recipe configs (train / test size,
dropout, RandAugment magnitude, drop path) and the docs.

Sources: the paper (Brock et al. 2021, Table 3 and App. A) and DeepMind's release
(``nfnets/base.py``'s per-variant parameters; ``experiment_nfnets.py`` sets stochastic depth
0.25 for every variant; the README lists the released ``F*_haiku.npz`` weights, F0-F6).
The "+" variants (paper App. C) widen the stages to (384, 768, 2048, 2048) and keep
everything else of the base variant.
"""
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

#: Stage widths of F0-F7 and of the wide "+" variants.
NFNET_WIDTHS: Tuple[int, ...] = (256, 512, 1536, 1536)
NFNET_WIDE_WIDTHS: Tuple[int, ...] = (384, 768, 2048, 2048)
#: Where DeepMind publishes the released Haiku weights (``{name}`` is ``F0`` ... ``F6``).
DEEPMIND_WEIGHTS_URL = 'https://storage.googleapis.com/dm-nfnets/{name}_haiku.npz'


@dataclass(frozen=True)
class NFNetVariant:
    """One row of the variant table.

    Attributes:
        name: ``'F0'`` ... ``'F7'``, or ``'F0+'`` ... for the wide variants.
        depths: blocks per stage.
        widths: output channels per stage.
        train_size / test_size: square input size (px) for training / evaluation.
        dropout: dropout rate before the classifier.
        ra_magnitude: RandAugment magnitude (DeepMind's ``RA_level`` '4xx': 4 layers, level xx).
        ra_num_layers: RandAugment ops per image (the '4' of ``RA_level``; 4 for every variant).
        drop_path_rate: stochastic-depth rate of the last block (linear in depth).
        params_m: paper Table 3 parameters (millions, 1000-class head); ``None`` if unlisted.
        flops_g: paper Table 3 FLOPs (billions of multiply-adds at ``test_size``).
        top1 / top5: ImageNet accuracy reported for DeepMind's released weights (paper
            Table 3; the same numbers as the release's README).
        sam: the released weights, and so ``top1`` / ``top5``, were trained with
            Sharpness-Aware Minimisation (F6 only: Table 3's "NFNet-F6+SAM").
        dm_weights_url: DeepMind's released weights; ``None`` where none were released.
    """
    name: str
    depths: Tuple[int, ...]
    widths: Tuple[int, ...]
    train_size: int
    test_size: int
    dropout: float
    ra_magnitude: int
    ra_num_layers: int = 4
    drop_path_rate: float = 0.25
    params_m: Optional[float] = None
    flops_g: Optional[float] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    sam: bool = False
    dm_weights_url: Optional[str] = None


def _released(name: str) -> str:
    return DEEPMIND_WEIGHTS_URL.format(name=name)


_BASE = [
    NFNetVariant('F0', (1, 2, 6, 3), NFNET_WIDTHS, 192, 256, 0.2, 5,
                 params_m=71.5, flops_g=12.38, top1=83.6, top5=96.8,
                 dm_weights_url=_released('F0')),
    NFNetVariant('F1', (2, 4, 12, 6), NFNET_WIDTHS, 224, 320, 0.3, 10,
                 params_m=132.6, flops_g=35.54, top1=84.7, top5=97.1,
                 dm_weights_url=_released('F1')),
    NFNetVariant('F2', (3, 6, 18, 9), NFNET_WIDTHS, 256, 352, 0.4, 10,
                 params_m=193.8, flops_g=62.59, top1=85.1, top5=97.3,
                 dm_weights_url=_released('F2')),
    NFNetVariant('F3', (4, 8, 24, 12), NFNET_WIDTHS, 320, 416, 0.4, 15,
                 params_m=254.9, flops_g=114.76, top1=85.7, top5=97.5,
                 dm_weights_url=_released('F3')),
    NFNetVariant('F4', (5, 10, 30, 15), NFNET_WIDTHS, 384, 512, 0.5, 15,
                 params_m=316.1, flops_g=215.24, top1=85.9, top5=97.6,
                 dm_weights_url=_released('F4')),
    NFNetVariant('F5', (6, 12, 36, 18), NFNET_WIDTHS, 416, 544, 0.5, 15,
                 params_m=377.2, flops_g=289.76, top1=86.0, top5=97.6,
                 dm_weights_url=_released('F5')),
    # Table 3 lists F6 only as "NFNet-F6+SAM", and DeepMind released that model.
    NFNetVariant('F6', (7, 14, 42, 21), NFNET_WIDTHS, 448, 576, 0.5, 15,
                 params_m=438.4, flops_g=377.28, top1=86.5, top5=97.9, sam=True,
                 dm_weights_url=_released('F6')),
    NFNetVariant('F7', (8, 16, 48, 24), NFNET_WIDTHS, 480, 608, 0.5, 15),
]

#: ``'F0'`` ... ``'F7'`` and the wide ``'F0+'`` ... ``'F7+'`` (no Table 3 numbers, no
#: released weights).
NFNET_VARIANTS: Dict[str, NFNetVariant] = {v.name: v for v in _BASE}
NFNET_VARIANTS.update({
    v.name + '+': replace(v, name=v.name + '+', widths=NFNET_WIDE_WIDTHS, params_m=None,
                          flops_g=None, top1=None, top5=None, sam=False, dm_weights_url=None)
    for v in _BASE})


def get_variant(name: str) -> NFNetVariant:
    """The row of ``name`` (case-insensitive: ``'f1'`` and ``'F1'`` are the same).

    Raises:
        KeyError: ``name`` is not a variant; the message lists the valid names.
    """
    key = str(name).upper()
    if key not in NFNET_VARIANTS:
        raise KeyError(f'unknown NFNet variant {name!r}; valid variants: '
                       f'{", ".join(NFNET_VARIANTS)}')
    return NFNET_VARIANTS[key]


__all__ = ['NFNetVariant', 'NFNET_VARIANTS', 'NFNET_WIDTHS', 'NFNET_WIDE_WIDTHS',
           'DEEPMIND_WEIGHTS_URL', 'get_variant']
