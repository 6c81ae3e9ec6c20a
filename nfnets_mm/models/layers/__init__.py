from .gamma_act import ACT_GAMMAS, GammaAct, build_activation
from .padding import PADDING_MODES, pad_same, same_padding_amount
from .squeeze_excite import NFSqueezeExcite
from .stochastic_depth import StochasticDepth
from .ws_conv import ScaledStdConv2d

__all__ = [
    'ACT_GAMMAS', 'GammaAct', 'build_activation', 'PADDING_MODES', 'pad_same',
    'same_padding_amount', 'NFSqueezeExcite', 'StochasticDepth', 'ScaledStdConv2d'
]
from .conv_norm import ConvNorm  # noqa: E402

__all__ += ['ConvNorm']
from .builder import build_nf_act, build_nf_conv  # noqa: E402

__all__ += ['build_nf_act', 'build_nf_conv']
from .pooling import MaxPool2dSame  # noqa: E402

__all__ += ['MaxPool2dSame']
from .ws_function import (ScaledWSFunction, scaled_weight_standardization,  # noqa: E402
                          scaled_ws_autograd)

__all__ += ['ScaledWSFunction', 'scaled_weight_standardization', 'scaled_ws_autograd']
