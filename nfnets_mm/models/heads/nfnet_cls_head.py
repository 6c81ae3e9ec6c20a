"""Linear classification head with dropout, as on NFNets."""
from mmpretrain.models.heads import LinearClsHead

from nfnets_mm.registry import MODELS
import torch
import torch.nn as nn


@MODELS.register_module()
class NFNetClsHead(LinearClsHead):
    """MMPretrain's :class:`LinearClsHead` with dropout before the classifier.

    NFNets apply dropout to the pooled features (per variant: ``get_variant(name).dropout``
    in :mod:`nfnets_mm.variants`, growing from F0 to F7) and initialise the classifier
    with N(0, 0.01) weights and zero bias (the default ``init_cfg`` here).

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Feature channels (``backbone.out_channels[-1]``, 3072 for F*).
        dropout_rate (float): Dropout probability before ``fc``. Defaults to 0.
        **kwargs: Passed to :class:`LinearClsHead` (``loss``, ``topk``, ``cal_acc`` ...).

    Shapes:
        - input: tuple whose last item is :math:`(N, C)`; output: :math:`(N, K)` logits.
    """

    def __init__(self, num_classes: int, in_channels: int, dropout_rate: float = 0.,
                 init_cfg=dict(type='Normal', layer='Linear', std=0.01, bias=0.), **kwargs):
        super().__init__(num_classes, in_channels, init_cfg=init_cfg, **kwargs)
        if not 0. <= dropout_rate < 1.:
            raise ValueError(f'dropout_rate must be in [0, 1), got {dropout_rate}.')
        self.dropout_rate = dropout_rate
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def pre_logits(self, feats) -> torch.Tensor:
        return self.dropout(feats[-1])
