"""Data-side components (MMPretrain batch augments, transforms) used by the NFNet recipes."""
from .batch_augments import HalfMixupHalfCutMix
from .transforms import NFNetEvalResizeCrop

__all__ = ['HalfMixupHalfCutMix', 'NFNetEvalResizeCrop']
