"""Save the random number generator states in checkpoints and restore them on resume.

MMEngine's ``Runner.resume`` restores the weights, the optimizer, the parameter
schedulers, the message hub and the epoch / iteration counters, but no random number
generator: the resumed process starts from ``Runner.set_randomness(seed)`` at
construction (and ``resume`` calls ``set_randomness`` once more when the checkpoint's
seed differs from the config's).  The data pipeline (``RandomResizedCrop``,
``RandomFlip``, RandAugment ... draw from NumPy's and Python's global generators in the
process that loads the data), batch augments (MixUp / CutMix) and the model (dropout,
stochastic depth) then draw different numbers after a resume than the uninterrupted run
did, so a killed and resumed run does not end with the same weights.

:class:`RNGStateHook` closes that gap.  See its docstring for what is saved, when it
is restored and why at that moment.
"""
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from nfnets_mm.registry import HOOKS

#: Key of the RNG states in a checkpoint dict.
CHECKPOINT_KEY = 'rng_state'
#: Layout version of ``checkpoint[CHECKPOINT_KEY]``.
FORMAT_VERSION = 1


def get_rng_states() -> Dict[str, Any]:
    """This process's generator states, as tensors, NumPy arrays and Python tuples.

    Returns:
        dict: ``python`` (``random.getstate()``), ``numpy`` (the legacy global
        ``RandomState`` as ``('MT19937', uint32 array, pos, has_gauss,
        cached_gaussian)`` with Python scalars), ``torch`` (the CPU generator's
        ``ByteTensor``) and ``cuda`` (one ``ByteTensor`` per visible CUDA device, empty
        without CUDA).  Everything loads with ``torch.load(weights_only=True)`` plus
        NumPy's array globals (:func:`nfnets_mm.utils.safe_checkpoint.safe_load`).
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    cuda: List[torch.Tensor] = []
    if torch.cuda.is_available():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return dict(
        python=random.getstate(),
        numpy=(str(name), np.asarray(keys, dtype=np.uint32).copy(), int(pos),
               int(has_gauss), float(cached_gaussian)),
        torch=torch.get_rng_state().clone(),
        cuda=cuda)


def set_rng_states(states: Dict[str, Any]) -> List[str]:
    """Restore the states :func:`get_rng_states` returned (possibly after a round trip
    through a checkpoint, i.e. tensors on another device, tuples as lists).

    Returns:
        list[str]: Problems to report (e.g. a different number of CUDA devices); the
        generators that can be restored are restored regardless.
    """
    problems = []
    version, internal, gauss_next = states['python']
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached_gaussian = states['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss),
                         float(cached_gaussian)))
    torch.set_rng_state(states['torch'].detach().to('cpu', torch.uint8))
    saved_cuda = list(states.get('cuda') or [])
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        for index, state in enumerate(saved_cuda[:count]):
            torch.cuda.set_rng_state(state.detach().to('cpu', torch.uint8), index)
        if len(saved_cuda) != count:
            problems.append(f'the checkpoint holds CUDA RNG states of {len(saved_cuda)} '
                            f'device(s), this process sees {count}; restored '
                            f'{min(count, len(saved_cuda))}')
    elif saved_cuda:
        problems.append(f'the checkpoint holds CUDA RNG states of {len(saved_cuda)} '
                        'device(s) but CUDA is not available; they were not restored')
    return problems


class _RestoreBeforeNext:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: after ``skip`` pass-through
    calls (the loop's replay of the batches a resumed run has already trained on), every
    ``next`` first restores the hook's pending RNG states, if any."""

    def __init__(self, iterator, hook: 'RNGStateHook', skip: int) -> None:
        self._iterator = iterator
        self._hook = hook
        self._skip = skip

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
        else:
            self._hook._restore_pending()
        return next(self._iterator)

    def __getattr__(self, name: str):
        # Only reached for names this wrapper lacks (``_epoch``, ``_dataloader`` ...).
        if name == '_iterator':
            raise AttributeError(name)
        return getattr(self._iterator, name)


@HOOKS.register_module(name='NFRNGStateHook')  # NF prefix: see nfnets_mm/registry.py
class RNGStateHook(Hook):
    """Make ``kill -9`` + resume end with the same weights as an uninterrupted run.

    **What is saved.**  ``before_save_checkpoint`` adds ``checkpoint['rng_state'] =
    dict(version=1, world_size=W, snapshot=<where it was taken>, ranks=[s_0, ...,
    s_{W-1}])``, where ``s_r`` is rank ``r``'s :func:`get_rng_states`: Python
    ``random``, NumPy's global ``RandomState``, torch's CPU generator and every CUDA
    device's generator.  Only tensors, NumPy arrays and Python tuples / scalars, so the
    file still loads with weights-only unpickling
    (:func:`nfnets_mm.utils.safe_checkpoint.safe_load`).

    **Per rank, gathered.**  Ranks draw different numbers (different samples, different
    crops), so every rank's states are needed.  ``Runner.save_checkpoint`` is
    ``@master_only``: ``before_save_checkpoint`` runs on rank 0 alone and cannot call a
    collective.  The states are therefore taken (and, under DDP, all-gathered to rank 0)
    in this hook's ``after_train_epoch`` / ``after_train_iter`` / ``after_val_epoch``,
    which every rank runs and which run before :class:`~mmengine.hooks.CheckpointHook`'s
    (priority ``'LOW'`` < its ``'VERY_LOW'``).  To keep that cheap, ``after_train_iter``
    snapshots only when a by-iteration ``CheckpointHook`` will save at this iteration
    (the hook's own ``interval`` / ``save_begin`` / ``save_last`` test),
    ``after_val_epoch`` only when a ``CheckpointHook`` has ``save_best`` and no snapshot
    is pending.  On resume rank ``r`` restores ``s_r``; a checkpoint from another world
    size is not restored (a warning says so: the sampler shards differ anyway).  A
    checkpoint saved from elsewhere (another hook calling ``runner.save_checkpoint``)
    gets rank 0's states only, the other ranks' entries are ``None``.

    **When it is restored, and why then.**  Not in ``after_load_checkpoint``: there
    ``Runner.resume`` has not finished, and it calls ``set_randomness`` again *after*
    the hook when the checkpoint's seed differs from the config's.  And not in
    ``before_train_iter``: both loops draw the batch (running the random data pipeline)
    before that hook.  The states are restored right before the first training batch is
    drawn after the checkpoint:

    * ``EpochBasedTrainLoop``: in ``before_train_epoch`` of the first epoch after the
      checkpoint (before ``iter(dataloader)``, which draws the worker base seed from
      torch's generator, and before the first batch).
    * ``IterBasedTrainLoop``: ``run`` calls ``before_train_epoch`` and then advances the
      dataloader by ``iter`` batches to skip the data already trained on, which runs the
      random pipeline again.  ``before_train`` wraps ``runner.train_loop.
      dataloader_iterator`` once; the wrapper passes those ``iter`` skipped batches
      through and restores the states right before the first batch after them.

    **The uninterrupted run does the same.**  Between a checkpoint and the next batch
    the uninterrupted run still draws numbers a resumed run never draws (validation
    creates a dataloader iterator, which takes a seed from torch's generator; later
    hooks; MMEngine's ``save_checkpoint`` itself).  So the states are taken at the
    snapshot points above and restored at the next batch in *every* run, interrupted or
    not: each run continues from exactly the states stored in the checkpoint.  For the
    epoch loop the snapshot is taken at the end of every training epoch (once per epoch,
    one all-gather under DDP), so every epoch starts from the states the previous
    epoch's training left, whatever validation drew.

    **Sampler position.**  MMEngine already restores it for its loops: ``DefaultSampler``
    shuffles with ``seed + epoch`` (``DistSamplerSeedHook`` sets the epoch) and the
    iteration loop replays ``iter`` batches of its sampler.  A checkpoint saved in the
    middle of an epoch of an ``EpochBasedTrainLoop`` (``CheckpointHook(by_epoch=False)``)
    is *not* resumed in place by MMEngine (the loop restarts the epoch); its RNG states
    are restored at that epoch's start and a warning says the run cannot be identical.

    **Not covered.**  DataLoader worker processes seed their own generators
    (MMEngine's ``worker_init_fn`` seeds them from ``seed``, rank and worker id when
    they start).  Non-persistent workers restart every epoch and are seeded alike in
    both runs, and the iteration loop's replay advances persistent workers exactly as
    the uninterrupted run did; but with ``persistent_workers=True`` and an epoch loop the
    uninterrupted run's workers carry their state across epochs while the resumed run's
    start afresh, so their augmentations differ (``before_train`` warns).  Devices other
    than CPU and CUDA (MPS, NPU ...) are not saved.

    Checkpoints without RNG states (older ones, or saved without this hook) resume with
    a logged warning and MMEngine's re-seeded generators.
    """

    # Must run before CheckpointHook ('VERY_LOW') in after_train_epoch / after_train_iter
    # / after_val_epoch, so the snapshot (and the DDP gather) precedes the save.
    priority = 'LOW'

    def __init__(self) -> None:
        #: This rank's states waiting to be restored at the next training batch.
        self._pending: Optional[Dict[str, Any]] = None
        #: Where ``_pending`` was taken ('epoch_end', 'iter', 'val', 'save', 'resume').
        self._pending_point: Optional[str] = None
        #: All ranks' pending states (DDP: gathered at the snapshot point).
        self._gathered: Optional[List[Optional[Dict[str, Any]]]] = None
        #: A snapshot taken at a point every rank runs is pending.  Unlike
        #: ``_pending`` (which rank 0 may also set alone in ``before_save_checkpoint``)
        #: it is the same on all ranks, so collective decisions depend on it only.
        self._shared = False
        #: What ``after_load_checkpoint`` found, checked in ``before_train``.
        self._loaded: Optional[Dict[str, Any]] = None
        self._training = False
        self._warned_incomplete = False

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _is_iter_loop(runner) -> bool:
        loop = runner.train_loop
        return isinstance(loop, IterBasedTrainLoop) or (
            not isinstance(loop, EpochBasedTrainLoop) and hasattr(loop, 'dataloader_iterator'))

    @staticmethod
    def _checkpoint_hooks(runner) -> List[CheckpointHook]:
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def _snapshot(self, point: str, collective: bool) -> None:
        """Take this rank's states unless a snapshot is pending.  With ``collective``
        (every rank calls it at the same point) also mark the snapshot shared and, under
        DDP, all-gather every rank's pending states."""
        if self._pending is None:
            self._pending = get_rng_states()
            self._pending_point = point
            self._gathered = None
        if get_world_size() == 1:
            self._gathered = [self._pending]
        elif collective:
            self._gathered = all_gather_object(self._pending)
        if collective:
            self._shared = True

    def _clear(self) -> None:
        self._pending = None
        self._pending_point = None
        self._gathered = None
        self._shared = False

    def _restore_pending(self) -> None:
        if self._pending is None:
            return
        states = self._pending
        point = self._pending_point
        self._clear()
        problems = set_rng_states(states)
        for problem in problems:
            print_log(f'RNGStateHook: {problem}.', logger='current', level='WARNING')
        if point == 'resume':
            print_log('RNGStateHook: restored the random number generator states saved in '
                      'the checkpoint.', logger='current')

    # ------------------------------------------------------------------ saving
    def before_train(self, runner) -> None:
        self._training = True
        self._clear()  # nothing taken outside training carries into it
        self._check_order(runner)
        self._warn_persistent_workers(runner)
        self._accept_loaded(runner)
        loop = runner.train_loop
        if self._is_iter_loop(runner):
            if not isinstance(loop.dataloader_iterator, _RestoreBeforeNext):
                loop.dataloader_iterator = _RestoreBeforeNext(
                    loop.dataloader_iterator, self, skip=loop.iter)

    def after_train(self, runner) -> None:
        self._training = False
        self._clear()
        loop = runner.train_loop
        if isinstance(getattr(loop, 'dataloader_iterator', None), _RestoreBeforeNext):
            loop.dataloader_iterator = loop.dataloader_iterator._iterator

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if any(not h.by_epoch and (
                h.every_n_train_iters(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_iter(runner)))
               for h in self._checkpoint_hooks(runner)):
            self._snapshot('iter', collective=True)

    def after_train_epoch(self, runner) -> None:
        if not self._is_iter_loop(runner):
            self._snapshot('epoch_end', collective=True)

    def after_val_epoch(self, runner, metrics=None) -> None:
        # Validation during training runs after the training snapshot of its epoch /
        # iteration, if any; otherwise a best checkpoint may follow: take one.
        if self._training and not self._shared and any(
                h.save_best is not None for h in self._checkpoint_hooks(runner)):
            self._snapshot('val', collective=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store every rank's states (rank 0 runs this alone)."""
        self._snapshot('save', collective=False)
        world_size = get_world_size()
        ranks = self._gathered
        if ranks is None or len(ranks) != world_size:
            ranks = [None] * world_size
            ranks[get_rank()] = self._pending
            if not self._warned_incomplete:
                self._warned_incomplete = True
                runner.logger.warning(
                    'RNGStateHook: a checkpoint was saved at a point where the other ranks '
                    'had not shared their RNG states (saved by something other than a '
                    'CheckpointHook that runs after this hook?); it holds rank 0\'s only.')
        checkpoint[CHECKPOINT_KEY] = dict(version=FORMAT_VERSION, world_size=world_size,
                                          snapshot=self._pending_point, ranks=list(ranks))

    # ------------------------------------------------------------------ restoring
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remember the checkpoint's states; ``before_train`` decides whether this is a
        resume (``Runner.resume`` has set the loop's counters by then, and may have
        re-seeded the generators after this hook)."""
        meta = checkpoint.get('meta', {}) or {}
        self._loaded = dict(epoch=meta.get('epoch'), iter=meta.get('iter'),
                            rng=checkpoint.get(CHECKPOINT_KEY))

    def _accept_loaded(self, runner) -> None:
        loaded, self._loaded = self._loaded, None
        resumed = runner.iter > 0 or runner.epoch > 0
        if loaded is None or not resumed:
            # load_from without resume (fine-tuning): the counters start at 0 and the
            # checkpoint's RNG states do not belong to this run.
            return
        if (loaded['epoch'], loaded['iter']) != (runner.epoch, runner.iter):
            return  # the counters came from somewhere else
        rng = loaded['rng']
        world_size = get_world_size()
        if rng is None:
            runner.logger.warning(
                'RNGStateHook: the resumed checkpoint holds no RNG states (saved without '
                'RNGStateHook, e.g. by an older version); training continues from the '
                'generators MMEngine seeded, so it will not replay the uninterrupted '
                "run's random augmentation bit for bit.")
            return
        ranks = rng.get('ranks') or []
        if len(ranks) != world_size:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds RNG states of {len(ranks)} rank(s), '
                f'this run has {world_size}; not restoring them (the data shards differ '
                'anyway).')
            return
        mine = ranks[get_rank()]
        if mine is None:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds no RNG states for rank {get_rank()}; '
                'this rank continues from the generators MMEngine seeded.')
            return
        if not self._is_iter_loop(runner) and rng.get('snapshot') == 'iter':
            runner.logger.warning(
                'RNGStateHook: the checkpoint was saved in the middle of an epoch; '
                "MMEngine's EpochBasedTrainLoop restarts that epoch on resume, so the run "
                'cannot replay the uninterrupted one exactly (the RNG states are restored '
                'at the start of the epoch).')
        self._clear()
        self._pending = mine
        self._pending_point = 'resume'

    def before_train_epoch(self, runner) -> None:
        if not self._is_iter_loop(runner):
            self._restore_pending()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self._is_iter_loop(runner) and self._pending is not None:
            # A snapshot taken in the middle of an epoch (by-iteration checkpoint in an
            # epoch loop): this batch is already drawn, and rewinding in the middle of an
            # epoch would replay numbers; a resume cannot continue there anyway.
            self._clear()

    # ------------------------------------------------------------------ checks
    def _check_order(self, runner) -> None:
        hooks = list(runner.hooks)
        mine = hooks.index(self) if self in hooks else -1
        late = [h for h in self._checkpoint_hooks(runner) if hooks.index(h) < mine]
        if late:
            runner.logger.warning(
                'RNGStateHook runs after CheckpointHook (priority '
                f'{self.priority!r}); give it a higher priority than the CheckpointHook '
                "(default 'LOW' vs 'VERY_LOW'), or under DDP the checkpoints will hold "
                "rank 0's RNG states only.")

    def _warn_persistent_workers(self, runner) -> None:
        loader = runner.train_dataloader
        if self._is_iter_loop(runner) or getattr(loader, 'num_workers', 0) == 0:
            return
        if getattr(loader, 'persistent_workers', False):
            runner.logger.warning(
                'RNGStateHook: the training dataloader has persistent workers; their '
                'generators (which run the data augmentation) carry over from epoch to '
                'epoch in an uninterrupted run but start afresh after a resume, so a '
                'resumed run does not replay the same augmentation. Use '
                'persistent_workers=False (tools/train.py --no-persistent-workers) or '
                'num_workers=0 for bit-identical resumes.')
