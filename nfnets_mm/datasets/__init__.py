"""Data-side components (MMPretrain batch augments) used by the NFNet recipes."""
from .batch_augments import HalfMixupHalfCutMix

__all__ = ['HalfMixupHalfCutMix']
