"""Data-side components (MMPretrain batch augments, transforms) used by the NFNet recipes."""
from .batch_augments import HalfMixupHalfCutMix
from .transforms import (DEEPMIND_OPS, NFNetEvalResizeCrop, NFNetRandAugment,
                         NFNetRandomResizedCrop, tf_bicubic_resize)

__all__ = ['HalfMixupHalfCutMix', 'NFNetEvalResizeCrop', 'NFNetRandAugment',
           'NFNetRandomResizedCrop', 'DEEPMIND_OPS', 'tf_bicubic_resize']

# DeepMind's mixing protocol: MixUp / CutMix per example in the loader, before RandAugment.
from .mix import PairMixer  # noqa: E402
from .mix_dataset import NFNetMixDataset  # noqa: E402

__all__ += ['PairMixer', 'NFNetMixDataset']
