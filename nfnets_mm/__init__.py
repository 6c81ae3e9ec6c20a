"""nfnets_mm: Normalizer-Free Networks and Adaptive Gradient Clipping for OpenMMLab.

``import nfnets_mm`` (or ``custom_imports=dict(imports=['nfnets_mm'])`` in a config)
registers the NF backbones, layers and heads, the AGC optimizer wrappers and the
safe checkpoint loader, for MMPretrain and MMDetection runners alike.
"""
from .version import __version__
from . import utils  # noqa: F401,E402  (safe checkpoint loading; first, before any load)
from . import models  # noqa: F401,E402
from . import datasets  # noqa: F401,E402
from . import engine  # noqa: F401,E402

__all__ = ['__version__']
from . import converters  # noqa: F401,E402  (DeepMind / timm weights: nfnets_mm.converters)
