from .ema_hook import WarmupEMAHook
from .plot_curve_hook import PlotCurveHook, read_scalars
from .weight_digest_hook import WeightDigestHook, state_dict_digest

__all__ = [
    'WarmupEMAHook', 'PlotCurveHook', 'read_scalars', 'WeightDigestHook', 'state_dict_digest'
]
