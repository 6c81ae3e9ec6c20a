from .ema_hook import WarmupEMAHook
from .plot_curve_hook import PlotCurveHook, read_scalars
from .rng_state_hook import RNGStateHook, get_rng_states, set_rng_states
from .weight_digest_hook import WeightDigestHook, state_dict_digest
from .neck_wiring_hook import (NeckWiringError, NFNeckWiringCheckHook, check_neck_wiring,
                               install_neck_input_check)

__all__ = [
    'WarmupEMAHook', 'PlotCurveHook', 'read_scalars', 'RNGStateHook', 'get_rng_states',
    'set_rng_states', 'WeightDigestHook', 'state_dict_digest'
]
__all__ += ['NFNeckWiringCheckHook', 'NeckWiringError', 'check_neck_wiring',
            'install_neck_input_check']
