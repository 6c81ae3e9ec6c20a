from .signal_propagation import (BlockSignalStats, expected_block_output_variances,
                                 signal_propagation_stats)

__all__ = ['BlockSignalStats', 'expected_block_output_variances', 'signal_propagation_stats']
from .complexity import TABLE3, NFNetClassifier, nfnet_complexity  # noqa: E402

__all__ += ['TABLE3', 'NFNetClassifier', 'nfnet_complexity']
