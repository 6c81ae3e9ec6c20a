"""Helpers shared by tools/train.py and tools/test.py (not a public API)."""
import contextlib
import datetime
import gc
import importlib
import os
import os.path as osp
import traceback
import warnings
from copy import deepcopy
from typing import Iterator, List, Optional, Sequence, Tuple

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
    if optim_wrapper.type == 'AmpAGCOptimWrapper':
        if cfg.get('default_scope') == 'mmdet':
            # mmcv's RoIAlign has no bf16 kernel: detectors autocast to fp16
            optim_wrapper.setdefault('dtype', 'float16')
        # bf16 where the GPU has it natively (no loss scaling), else fp16 + dynamic scale
        optim_wrapper.setdefault('dtype', 'auto')
        optim_wrapper.setdefault('loss_scale', 'auto')
    else:  # MMEngine's AmpOptimWrapper: its own fp16 default
        optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_default_dataloader_cfg(cfg: Config, field: str, pin_memory: bool = True,
                               persistent_workers: bool = True) -> None:
    """MMPretrain's dataloader defaults, applied to the *merged* config.

    Call it after ``--cfg-options`` are merged, so it sees the final ``num_workers``:
    ``pin_memory`` is set unless the config sets it, ``persistent_workers`` is turned on
    only with worker processes.  ``pin_memory=False`` / ``persistent_workers=False``
    (``--no-pin-memory`` / ``--no-persistent-workers``) force the option off.  With
    ``num_workers=0`` the options PyTorch's ``DataLoader`` accepts only with workers
    (``persistent_workers=True``, ``prefetch_factor``) are turned off / dropped, with a
    warning when the config asked for them.
    """
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
    if loader.get('num_workers', 0) == 0:
        drop_worker_only_options(loader, field)
    cfg[field] = loader


#: Where a config states its training length, and the scheduler unit that counts it.
LENGTH_KEYS = (('max_epochs', True), ('max_iters', False))


def schedule_snapshot(cfg: Config) -> Tuple[dict, object]:
    """``({'max_epochs' / 'max_iters': value}, deep copy of param_scheduler)`` before the
    ``--cfg-options`` merge; :func:`follow_training_length` compares against it."""
    train_cfg = cfg.get('train_cfg', None) or {}
    lengths = {key: train_cfg[key] for key, _ in LENGTH_KEYS if key in train_cfg}
    return lengths, deepcopy(cfg.get('param_scheduler', None))


def follow_training_length(cfg: Config, before: Tuple[dict, object]) -> List[str]:
    """Make the LR/momentum schedule follow a ``train_cfg.max_epochs`` (``max_iters``)
    changed on the command line.

    A scheduler's ``end`` is a number in the config (``end=max_epochs`` is evaluated when
    the file is read), so ``--cfg-options train_cfg.max_epochs=10`` alone would leave a
    cosine schedule ending at the old length: the learning rate never decays to its end
    value, or is held there for the extra epochs.  Every scheduler that ended exactly at
    the old length (counted in the same unit: ``by_epoch`` schedulers for ``max_epochs``,
    iteration ones for ``max_iters``) ends at the new one, and a ``T_max`` equal to its old
    ``end - begin`` follows; ``milestones`` are not rescaled.  A schedule also given on the
    command line is left alone.  A scheduler that would then begin at or after its end
    (the new length is shorter than, e.g., the warmup: a smoke test) cannot run; it is
    left out with a warning naming it.

    Returns:
        list[str]: One line per scheduler changed (for the log).
    """
    old_lengths, old_schedulers = before
    train_cfg = cfg.get('train_cfg', None) or {}
    schedulers = cfg.get('param_scheduler', None)
    if schedulers is None or schedulers != old_schedulers:
        return []
    entries = schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]
    notes = []
    for key, by_epoch in LENGTH_KEYS:
        old, new = old_lengths.get(key), train_cfg.get(key)
        if old is None or new is None or old == new:
            continue
        for index, sched in enumerate(entries):
            if bool(sched.get('by_epoch', True)) != by_epoch or sched.get('end') != old:
                continue
            begin = sched.get('begin', 0)
            name = f'param_scheduler[{index}] ({sched.get("type")})'
            if begin >= new:
                # e.g. a 1-epoch smoke test of a config with a 2-epoch warmup: this
                # scheduler cannot run at all (MMEngine refuses begin >= end)
                warnings.warn(f'train_cfg.{key}={new}: {name} begins at {begin}, so it '
                              f'does not run in this shorter run (it ended at the old '
                              f'{key}={old}); the learning rate stays where the '
                              'schedulers before it leave it.')
                continue
            sched['end'] = new
            if sched.get('T_max') == old - begin:  # a period spelled out as end - begin
                sched['T_max'] = new - begin
            notes.append(f'{name}: end {old} -> {new}, following train_cfg.{key}')
    return notes


def unpin_without_cuda(cfg: Config, fields: Sequence[str]) -> None:
    """Turn ``pin_memory`` off in the dataloaders when no CUDA device is present.

    Pinned host memory only speeds up copies to a GPU.  Without one PyTorch warns
    ("'pin_memory' argument is set as true but no accelerator is found") each time a
    loader starts, i.e. every epoch and every validation, a dozen times in a short CPU
    run.  Applied to the final config just before the runner is built, so the merged
    config keeps MMPretrain's defaults (and a GPU machine gets them).
    """
    import torch
    if torch.cuda.is_available():
        return
    for field in fields:
        loader = cfg.get(field, None)
        if loader is not None and loader.get('pin_memory', False):
            loader.pin_memory = False


def drop_worker_only_options(loader: ConfigDict, field: str) -> None:
    """Turn off the ``DataLoader`` options that raise ``ValueError`` without workers."""
    if loader.get('persistent_workers', False):
        warnings.warn(f'{field}: persistent_workers=True needs num_workers > 0; with '
                      'num_workers=0 it is turned off.')
        loader.persistent_workers = False
    if loader.get('prefetch_factor', None) is not None:
        warnings.warn(f'{field}: prefetch_factor={loader.prefetch_factor} needs '
                      'num_workers > 0; with num_workers=0 it is dropped.')
    loader.pop('prefetch_factor', None)


def _dataset_cfgs(node) -> Iterator[dict]:
    """Every dataset config (a dict with ``ann_file``) inside a dataloader config,
    including those wrapped by ``ConcatDataset`` / ``RepeatDataset`` / ... ."""
    if isinstance(node, dict):
        if 'ann_file' in node:
            yield node
        for value in node.values():
            yield from _dataset_cfgs(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _dataset_cfgs(value)


def annotation_path(dataset: dict) -> Optional[str]:
    """``ann_file`` joined with ``data_root`` as MMEngine's ``BaseDataset`` does;
    ``None`` when it names no local file (empty, remote URI, not a string)."""
    ann_file = dataset.get('ann_file', None)
    if not isinstance(ann_file, str) or not ann_file or '://' in ann_file:
        return None
    data_root = dataset.get('data_root', None)
    if not osp.isabs(ann_file) and isinstance(data_root, str) and data_root:
        ann_file = osp.join(data_root, ann_file)
    return ann_file


def is_empty_file(path: str) -> bool:
    """True for an existing local file holding nothing but whitespace."""
    if not osp.isfile(path):
        return False
    size = osp.getsize(path)
    if size > 4096:
        return False
    with open(path, 'rb') as f:
        return not f.read().strip()


def check_annotation_files(cfg: Config, fields: Sequence[str]) -> None:
    """Fail early, naming the file and the dataloader, on an empty annotation file.

    An empty ``ann_file`` gives a dataset without samples, which otherwise fails deep
    inside the runner (e.g. NumPy's ``need at least one array to concatenate``) or,
    for some datasets, only once the first batch is requested.
    """
    for field in fields:
        loader = cfg.get(field, None)
        if loader is None:
            continue
        for dataset in _dataset_cfgs(loader.get('dataset', None)):
            path = annotation_path(dataset)
            if path is not None and is_empty_file(path):
                raise ValueError(
                    f'{field}: the annotation file {path} (dataset ann_file='
                    f'{dataset["ann_file"]!r}) is empty, so the dataset has no samples. '
                    'Likely cause: the data preparation step did not finish or wrote to '
                    'another path; regenerate the file or point ann_file elsewhere with '
                    f'--cfg-options {field}.dataset.ann_file=PATH.')


def dist_init_kwargs(dist_cfg) -> Tuple[str, dict]:
    """``(backend, init_process_group kwargs)`` from ``env_cfg.dist_cfg``, as MMEngine's
    ``init_dist`` reads it: ``timeout`` in seconds becomes a ``datetime.timedelta``, the
    other keys go to ``torch.distributed.init_process_group``."""
    kwargs = dict(dist_cfg or {})
    backend = kwargs.pop('backend', 'nccl')
    init_backend = kwargs.pop('init_backend', 'torch')
    if init_backend != 'torch':
        raise RuntimeError(f'dist_cfg.init_backend={init_backend!r} needs GPUs; without '
                           "CUDA only 'torch' (torch.distributed) is supported.")
    timeout = kwargs.get('timeout', None)
    if timeout is not None:
        try:
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        except TypeError as exc:
            raise TypeError(f'dist_cfg.timeout must be a number of seconds, got '
                            f'{timeout!r}; e.g. dist_cfg=dict(backend=\'gloo\', '
                            'timeout=1800).') from exc
    return backend, kwargs


def prepare_cpu_distributed(cfg: Config) -> None:
    """Let MMEngine's ``pytorch`` launcher run on machines without CUDA (gloo).

    MMEngine's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` and its DDP
    wrapper passes ``device_ids=[LOCAL_RANK]``, both of which fail without a GPU.  On such
    a machine the process group is initialised here from torchrun's environment with the
    config's ``env_cfg.dist_cfg`` (its backend must then be ``gloo``; ``timeout`` in
    seconds and the other keys are passed on as MMEngine's ``init_dist`` does; the runner
    sees an initialised group and skips its own ``init_dist``) and DDP gets
    ``device_ids=None``.
    """
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher={cfg.launcher!r} needs GPUs; without CUDA only the '
                           "'pytorch' launcher (torchrun, gloo backend) is supported.")
    backend, kwargs = dist_init_kwargs(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if backend != 'gloo':
        raise RuntimeError(f'No CUDA device: distributed backend {backend!r} cannot run; '
                           'pass --cfg-options env_cfg.dist_cfg.backend=gloo.')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'--launcher pytorch needs {key} in the environment; start '
                               'the script with torchrun (tools/dist_train.sh).')
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **kwargs)
    wrapper = cfg.get('model_wrapper_cfg', None) or ConfigDict(type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def _clear_traceback_frames(error: BaseException) -> None:
    """Clear the local variables of the finished frames in ``error``'s traceback (and
    those of the exceptions it was raised from / while handling).

    The exceptions, their messages and tracebacks' line numbers stay; frames still
    executing (the session's own and the one of its ``with`` statement, whose
    tracebacks reach only down from them) are left alone by
    :func:`traceback.clear_frames`.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


@contextlib.contextmanager
def distributed_session(cfg: Config) -> Iterator[None]:
    """Run a tool's work inside the process group it needs, and destroy that group after.

    Initialises the CPU process group (:func:`prepare_cpu_distributed`) on entry.  On
    exit the group is destroyed if it was created inside the block (here, or by the
    runner's ``init_dist`` on GPUs), so no gloo / NCCL threads outlive ``main()``
    (an un-destroyed gloo group can abort the interpreter at exit with ``terminate
    called without an active exception``).  After an error only a gloo group is
    destroyed: destroying NCCL communicators while other ranks may still be inside a
    collective can hang (pytorch/torchtitan#1342), so those are left to process exit;
    a gloo group is then freed too: the finished frames of the propagating traceback
    (``train()``'s, holding the runner) are cleared first, keeping the exception.
    """
    import torch.distributed as dist
    was_initialized = dist.is_available() and dist.is_initialized()
    error = None
    try:
        prepare_cpu_distributed(cfg)
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        if not was_initialized and dist.is_available() and dist.is_initialized():
            if error is None or dist.get_backend() == 'gloo':
                if error is not None:
                    # The propagating traceback keeps the frames of the work (train()'s,
                    # holding the runner and so the group) alive: clear them, so the
                    # collection below frees the group.
                    _clear_traceback_frames(error)
                dist.destroy_process_group()
                # The runner's DDP model still references the group from reference
                # cycles; collect them now, so the group's C++ object (and its gloo
                # threads) is freed here and not during interpreter teardown, where its
                # destructor can hit a joinable thread: "terminate called without an
                # active exception" (SIGABRT after a successful run).
                gc.collect()


def build_runner(cfg: Config):
    """Build the runner with the registry of the config's scope.  Call it inside
    :func:`distributed_session`, which has prepared the CPU process group."""
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry')
    if 'runner_type' in cfg:
        return registry.RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
