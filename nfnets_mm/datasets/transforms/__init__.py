"""Data transforms (registered in MMEngine's root ``TRANSFORMS`` registry)."""
from .eval_resize import NFNetEvalResizeCrop

__all__ = ['NFNetEvalResizeCrop']
