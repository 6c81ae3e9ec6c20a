from . import layers  # noqa: F401
from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .model_zoo import register_model_zoo  # noqa: E402

register_model_zoo()  # MMPretrain's get_model('nfnet-f0_3rdparty-dm_in1k') & co.
