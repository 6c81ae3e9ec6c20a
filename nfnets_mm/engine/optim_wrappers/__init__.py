from .agc import AGCStats, adaptive_clip_grad_, agc_reference, norm_dtype, unitwise_norm
from .agc_constructor import (DETECTOR_OUTPUT_LAYERS, NF_NO_DECAY_NAMES,
                              AGCOptimWrapperConstructor, detector_output_layers)
from .agc_optim_wrapper import (AGCOptimWrapper, AmpAGCOptimWrapper, NonFiniteGradientError,
                                parse_agc_cfg)

__all__ = [
    'AGCStats', 'adaptive_clip_grad_', 'agc_reference', 'norm_dtype', 'unitwise_norm',
    'AGCOptimWrapperConstructor', 'NF_NO_DECAY_NAMES', 'DETECTOR_OUTPUT_LAYERS',
    'detector_output_layers', 'AGCOptimWrapper',
    'AmpAGCOptimWrapper', 'NonFiniteGradientError', 'parse_agc_cfg'
]

from .amp_dtype import VALID_DTYPES, native_bf16_supported, resolve_amp_dtype  # noqa: E402

__all__ += ['VALID_DTYPES', 'native_bf16_supported', 'resolve_amp_dtype']
