"""Data transforms (registered in MMEngine's root ``TRANSFORMS`` registry)."""
from .eval_resize import NFNetEvalResizeCrop

__all__ = ['NFNetEvalResizeCrop']
from .random_crop import NFNetRandomResizedCrop  # noqa: E402
from .randaugment import DEEPMIND_OPS, NFNetRandAugment  # noqa: E402
from .tf_resize import tf_bicubic_resize  # noqa: E402

__all__ += ['NFNetRandomResizedCrop', 'NFNetRandAugment', 'DEEPMIND_OPS', 'tf_bicubic_resize']
