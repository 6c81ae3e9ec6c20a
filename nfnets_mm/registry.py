"""Registries used by nfnets_mm.

nfnets_mm registers its modules in MMEngine's *root* registries.  The MMPretrain and
MMDetection registries are children of these roots, and a lookup without an explicit
scope walks from the child up to its ancestors, so one registration makes the same
``type='NFNet'`` (or ``type='AGCOptimWrapper'``) string build under
``default_scope='mmpretrain'`` *and* ``default_scope='mmdet'`` without registering the
class twice or importing either downstream package.

Registries that exist only downstream (MMPretrain's batch augments) are imported from
there by the modules that need them.

Names.  The root registries are shared by every OpenMMLab package and plugin, and
registering a name twice raises ``KeyError: ... is already registered``.  So every name
nfnets_mm registers starts with :data:`NAME_PREFIX` (``NFNet``, ``NFResNet``,
``NFNetClsHead``, ``NFGammaAct``, ``NFScaledStdConv2d``, ``NFStochasticDepth``,
``NFConvNorm``, ``NFSqueezeExcite``, ``NFNetEvalResizeCrop``, ``NFRNGStateHook``,
``NFPlotCurveHook``, ``NFWarmupEMAHook``, ``NFWeightDigestHook``, ``NFDeepMindEMA``,
``NFHalfMixupHalfCutMix``, ...) or is one of :data:`PUBLIC_NAMES`, the documented AGC
names.  Where a Python class keeps its plain name (``ScaledStdConv2d``, ``GammaAct``,
``RNGStateHook``), it is registered under the prefixed one, as mmcv registers its
``SyncBatchNorm`` as ``MMSyncBN``.  Torch's own activations are not registered here
(``build_activation`` builds those mmcv leaves out from ``torch.nn``).
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS

#: Names nfnets_mm registers that do not start with :data:`NAME_PREFIX`.
PUBLIC_NAMES = ('AGCOptimWrapper', 'AmpAGCOptimWrapper', 'AGCOptimWrapperConstructor')
#: The prefix of every other registered name.
NAME_PREFIX = 'NF'

#: Backbones, layers and heads (``NFNet``, ``NFResNet``, ``NFScaledStdConv2d``, ...).
MODELS = MMENGINE_MODELS
#: ``AGCOptimWrapper`` / ``AmpAGCOptimWrapper``.
OPTIM_WRAPPERS = MMENGINE_OPTIM_WRAPPERS
#: ``AGCOptimWrapperConstructor``.
OPTIM_WRAPPER_CONSTRUCTORS = MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
#: Hooks.
HOOKS = MMENGINE_HOOKS

__all__ = ['MODELS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'HOOKS', 'NAME_PREFIX',
           'PUBLIC_NAMES']
