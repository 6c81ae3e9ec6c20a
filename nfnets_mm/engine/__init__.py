from .optim_wrappers import *  # noqa: F401,F403
from .ema import DeepMindEMA  # noqa: F401
from .hooks import *  # noqa: F401,F403
