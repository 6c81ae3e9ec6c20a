"""Helpers shared by tools/train.py and tools/test.py (not a public API)."""
import importlib
import os
import warnings
from copy import deepcopy

from mmengine.config import Config, ConfigDict

#: Scopes whose configs these tools run, and the package providing their registries.
SUPPORTED_SCOPES = ('mmpretrain', 'mmdet')
#: ``--amp``: the mixed-precision counterpart of each optimizer wrapper.
AMP_WRAPPERS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'AGCOptimWrapper': 'AmpAGCOptimWrapper',
    'AmpOptimWrapper': 'AmpOptimWrapper',
    'AmpAGCOptimWrapper': 'AmpAGCOptimWrapper',
}


def check_scope(cfg: Config, config_path: str) -> str:
    """Return the config's ``default_scope``; refuse scopes these tools do not handle."""
    scope = cfg.get('default_scope', None)
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(f'{config_path} has default_scope={scope!r}; these tools run '
                         f'configs with default_scope in {SUPPORTED_SCOPES} (inherit '
                         "'mmpretrain::_base_/default_runtime.py' or "
                         "'mmdet::_base_/default_runtime.py').")
    return scope


def apply_amp(cfg: Config) -> None:
    """Switch the optimizer wrapper to its AMP counterpart, keeping AGC if it is used."""
    optim_wrapper = cfg.get('optim_wrapper', None)
    if optim_wrapper is None:
        raise KeyError('--amp needs an optim_wrapper in the config.')
    current = optim_wrapper.get('type', 'OptimWrapper')
    if current not in AMP_WRAPPERS:
        raise ValueError(f'--amp does not know the optimizer wrapper {current!r}; '
                         f'supported types: {", ".join(AMP_WRAPPERS)}.')
    if AMP_WRAPPERS[current] == current:
        warnings.warn(f'--amp: optim_wrapper is already {current}.')
    optim_wrapper.type = AMP_WRAPPERS[current]
    optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_default_dataloader_cfg(cfg: Config, field: str, pin_memory: bool = True,
                               persistent_workers: bool = True) -> None:
    """MMPretrain's dataloader defaults (pin memory, persistent workers if any)."""
    if cfg.get(field, None) is None:
        return
    loader = ConfigDict(pin_memory=pin_memory)
    if cfg[field].get('num_workers', 0) > 0:
        loader.persistent_workers = persistent_workers
    loader.update(deepcopy(cfg[field]))
    if not pin_memory:
        loader.pin_memory = False
    if not persistent_workers and 'persistent_workers' in loader:
        loader.persistent_workers = False
    cfg[field] = loader


def prepare_cpu_distributed(cfg: Config) -> None:
    """Let MMEngine's ``pytorch`` launcher run on machines without CUDA (gloo).

    MMEngine's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` and its DDP
    wrapper passes ``device_ids=[LOCAL_RANK]``, both of which fail without a GPU.  On such
    a machine the process group is initialised here from torchrun's environment with the
    config's backend (which must then be ``gloo``; the runner sees an initialised group
    and skips its own ``init_dist``) and DDP gets ``device_ids=None``.
    """
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher={cfg.launcher!r} needs GPUs; without CUDA only the '
                           "'pytorch' launcher (torchrun, gloo backend) is supported.")
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
    if backend != 'gloo':
        raise RuntimeError(f'No CUDA device: distributed backend {backend!r} cannot run; '
                           'pass --cfg-options env_cfg.dist_cfg.backend=gloo.')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'--launcher pytorch needs {key} in the environment; start '
                               'the script with torchrun (tools/dist_train.sh).')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg', None) or ConfigDict(type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg: Config):
    """Build the runner with the registry of the config's scope."""
    prepare_cpu_distributed(cfg)
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry')
    if 'runner_type' in cfg:
        return registry.RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
