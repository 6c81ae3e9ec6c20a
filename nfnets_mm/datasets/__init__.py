"""Data-side components (MMPretrain batch augments, transforms) used by the NFNet recipes."""
from .batch_augments import HalfMixupHalfCutMix
from .transforms import NFNetEvalResizeCrop

__all__ = ['HalfMixupHalfCutMix', 'NFNetEvalResizeCrop']

# DeepMind's mixing protocol: MixUp / CutMix per example in the loader, before RandAugment.
from .mix import PairMixer  # noqa: E402
from .mix_dataset import NFNetMixDataset  # noqa: E402

__all__ += ['PairMixer', 'NFNetMixDataset']
