"""Where a training run's checkpoints are, for ``tools/train.py`` (not a public API).

:func:`resolve_resume` picks the checkpoint of ``--resume`` without a path and
:func:`refuse_overwrite` keeps a new run from training over existing checkpoints.  Both
look where the config's ``CheckpointHook`` saves (:func:`checkpoint_layout`), as
MMEngine 0.10's hook does:

* the folder is the work dir, or, with ``out_dir``, ``<out_dir>/<basename of the work
  dir>`` (unless ``out_dir`` is the work dir itself); best checkpoints go there too, but
  ``last_checkpoint`` (the path of the newest checkpoint) is always written to the work
  dir;
* periodic checkpoints are named by ``filename_tmpl`` (default ``epoch_{}.pth`` or
  ``iter_{}.pth`` after the hook's ``by_epoch``, default True), numbered by epoch or
  iteration.

An ``out_dir`` on remote storage (a URI such as ``s3://...``, or ``backend_args`` naming
another backend than ``local``) is not searched: the path ``last_checkpoint`` records
is handed to MMEngine as it is (as MMEngine's own auto-resume does); without
``last_checkpoint`` ``--resume`` is refused unless ``--force`` (it cannot tell whether
checkpoints exist there), and the overwrite guard sees only the work dir.

:func:`refuse_foreign_resume` keeps ``--resume PATH`` with another run's checkpoint from
resuming into a work dir / folder that holds checkpoints (the resumed ``max_keep_ckpts``
deletes checkpoints there by number).
"""
import glob
import os
import os.path as osp
import re
import string
from typing import List, NamedTuple, Optional, Pattern, Tuple

from mmengine.config import Config

#: ``scheme://``: a path for a remote storage backend.
_URI = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')


def is_uri(path) -> bool:
    """``path`` is ``scheme://...``, for a remote storage backend (not a local file)."""
    return bool(_URI.match(os.fspath(path)))


class CheckpointLayout(NamedTuple):
    """Where the config's ``CheckpointHook`` saves, and under which names."""

    #: ``osp.abspath(cfg.work_dir)``, as the runner uses it (``last_checkpoint`` is here).
    work_dir: str
    #: The hook's folder: the work dir, or ``<out_dir>/<basename of the work dir>``.
    folder: str
    #: ``'epoch'`` or ``'iter'``: what the hook's checkpoint numbers count.
    kind: str
    #: The hook's ``filename_tmpl``, e.g. ``'epoch_{}.pth'``.
    filename_tmpl: str
    #: ``folder`` is on remote storage (not searched here).
    remote: bool

    @property
    def name(self) -> str:
        """The periodic checkpoints' names for messages, e.g. ``epoch_N.pth``."""
        return ''.join(literal + ('N' if field is not None else '')
                       for literal, field, _, _ in string.Formatter().parse(
                           self.filename_tmpl))

    @property
    def pattern(self) -> Pattern:
        """Matches the periodic checkpoints' names; group 1 (if any) is the number."""
        return re.compile('^' + ''.join(
            re.escape(literal) + (r'(\d+)' if field is not None else '')
            for literal, field, _, _ in string.Formatter().parse(self.filename_tmpl)) + '$')

    @property
    def pointer(self) -> str:
        """MMEngine's ``last_checkpoint`` file."""
        return osp.join(self.work_dir, 'last_checkpoint')

    def where(self) -> str:
        """``' in FOLDER (CheckpointHook out_dir)'`` when the folder is not the work dir."""
        return '' if self.folder == self.work_dir else \
            f' in {self.folder} (the CheckpointHook\'s out_dir)'


def checkpoint_hook_cfg(cfg: Config) -> dict:
    """The ``CheckpointHook`` config: ``default_hooks.checkpoint``, else a
    ``CheckpointHook`` in ``custom_hooks``, else ``{}`` (MMEngine's defaults)."""
    hook = (cfg.get('default_hooks', None) or {}).get('checkpoint', None)
    if isinstance(hook, dict):
        return hook
    for custom in cfg.get('custom_hooks', None) or []:
        hook_type = custom.get('type', None) if isinstance(custom, dict) else None
        if getattr(hook_type, '__name__', hook_type) == 'CheckpointHook':
            return custom
    return {}


def _is_remote(out_dir: str, hook: dict) -> bool:
    backend_args = hook.get('backend_args', None) or hook.get('file_client_args', None)
    backend = (backend_args or {}).get('backend', 'local')
    return bool(_URI.match(out_dir)) or backend != 'local'


def checkpoint_layout(cfg: Config) -> CheckpointLayout:
    """Where and how the config's ``CheckpointHook`` names its checkpoints (see the
    module docstring)."""
    hook = checkpoint_hook_cfg(cfg)
    work_dir = osp.abspath(cfg.work_dir)
    kind = 'epoch' if hook.get('by_epoch', True) else 'iter'
    filename_tmpl = hook.get('filename_tmpl', None) or f'{kind}_{{}}.pth'
    try:
        list(string.Formatter().parse(filename_tmpl))
    except ValueError as exc:
        raise ValueError(f'default_hooks.checkpoint.filename_tmpl={filename_tmpl!r} is not '
                         f'a format string ({exc}).') from exc
    out_dir = hook.get('out_dir', None)
    folder, remote = work_dir, False
    if out_dir is not None and os.fspath(out_dir) != work_dir:
        # As CheckpointHook.before_train: the out_dir string as given (a relative one is
        # relative to the current directory), compared with the runner's work_dir.
        out_dir = os.fspath(out_dir)
        remote = _is_remote(out_dir, hook)
        basename = osp.basename(work_dir.rstrip(osp.sep))
        folder = (out_dir.rstrip('/') + '/' + basename if remote
                  else osp.join(out_dir, basename))
    return CheckpointLayout(work_dir, folder, kind, filename_tmpl, remote)


def _local_folders(layout: CheckpointLayout) -> List[str]:
    """The hook's folder (if local), then the work dir."""
    folders = [] if layout.remote else [layout.folder]
    return folders + [f for f in (layout.work_dir, ) if f not in folders]


def existing_checkpoints(layout: CheckpointLayout) -> List[str]:
    """Checkpoints (``*.pth``, the hook's periodic names) in the hook's folder and the
    work dir, and MMEngine's ``last_checkpoint`` pointer."""
    found = set()
    for folder in _local_folders(layout):
        found.update(glob.glob(osp.join(glob.escape(folder), '*.pth')))
        if osp.isdir(folder):
            found.update(osp.join(folder, name) for name in os.listdir(folder)
                         if layout.pattern.match(name))
    found = sorted(found)
    if osp.lexists(layout.pointer):
        found.append(layout.pointer)
    return found


def newest_periodic_checkpoint(layout: CheckpointLayout) -> Optional[str]:
    """The periodic checkpoint (``filename_tmpl``) of the hook's folder with the largest
    number (best checkpoints and the other kind do not match), or ``None``."""
    numbered = []
    folder = layout.folder
    for name in os.listdir(folder) if osp.isdir(folder) else []:
        match = layout.pattern.match(name)
        if match and osp.isfile(osp.join(folder, name)):
            numbered.append((int(match.group(1)) if match.groups() else 0, name))
    return osp.join(folder, max(numbered)[1]) if numbered else None


def read_last_checkpoint(pointer: str) -> str:
    """The checkpoint path recorded in MMEngine's ``last_checkpoint`` file."""
    try:
        with open(pointer, encoding='utf-8') as f:
            recorded = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeError(f'--resume: cannot read {pointer} ({exc}). It should hold the '
                           'path of the last checkpoint; delete it to resume from the newest '
                           'checkpoint, or pass --resume PATH.') from exc
    if not recorded or '\n' in recorded:
        what = 'is empty' if not recorded else 'holds several lines'
        raise ValueError(f'--resume: {pointer} {what}; it should hold the path of the '
                         'last checkpoint (it was probably cut short when the run was '
                         'killed). Delete it to resume from the newest checkpoint, or pass '
                         '--resume PATH.')
    return recorded


def checkpoint_from_pointer(layout: CheckpointLayout) -> Tuple[str, str]:
    """``(path, note)``: the checkpoint ``last_checkpoint`` names.

    MMEngine records an absolute path, so a copied or moved work dir (or checkpoint
    folder) would resume from the original place; the recorded file's name is looked up
    in the hook's folder instead (without ``out_dir`` that is the work dir, so a copied
    work dir resumes from its own copy).  With ``out_dir`` the work dir is searched too
    only when the file was recorded there: a file purged from the checkpoint folder is
    not replaced by a same-named one of an older run in the work dir.  With a remote
    folder the recorded path is returned as it is.
    """
    pointer = layout.pointer
    recorded = read_last_checkpoint(pointer)
    if layout.remote:
        return recorded, (f'Resuming from {recorded} (named by {pointer}; the '
                          "CheckpointHook's out_dir is remote storage, so MMEngine loads it "
                          'from there unchecked).')
    folders = [layout.folder]
    if (layout.work_dir not in folders
            and osp.dirname(osp.abspath(recorded)) == layout.work_dir):
        folders.append(layout.work_dir)  # recorded in the work dir itself
    candidates = [osp.join(folder, osp.basename(recorded)) for folder in folders]
    for local in candidates:
        if osp.isfile(local):
            note = f'Resuming from {local} (named by {pointer}'
            if osp.abspath(local) != osp.abspath(recorded):
                note += f', which records {recorded}'
            return local, note + ').'
    searched = ('the work dir' if layout.folder == layout.work_dir
                else 'the checkpoint folder' if len(folders) == 1
                else 'the checkpoint folder or the work dir, where it was recorded')
    raise FileNotFoundError(
        f'--resume: {pointer} names {recorded}, but {" nor ".join(candidates)} (that file '
        f'in {searched}) does not exist. Pass --resume PATH to resume from a given checkpoint (e.g. '
        f'--resume {recorded}), or delete {pointer} to resume from the newest checkpoint'
        f'{layout.where()}.')


def resolve_resume(cfg: Config, force: bool = False) -> Optional[str]:
    """Pick the checkpoint for ``resume=True`` without ``load_from`` (``--resume``).

    Sets ``cfg.load_from`` to the checkpoint named by ``work_dir/last_checkpoint`` (found
    in the hook's folder or the work dir), else to the newest periodic checkpoint of the
    hook's folder; without any checkpoint, ``cfg.resume`` becomes False (a new run).
    Other checkpoints only (best ones, another kind or name) are refused unless
    ``force``.  Returns a note for the log (``None`` when there was nothing to resolve).
    MMEngine's own ``find_latest_checkpoint`` is not used: it returns ``None`` without
    ``last_checkpoint`` and the run starts from scratch over the existing checkpoints.
    """
    if not cfg.get('resume', False) or cfg.get('load_from', None) is not None:
        return None
    layout = checkpoint_layout(cfg)
    work_dir = layout.work_dir
    if osp.lexists(layout.pointer):
        cfg.load_from, note = checkpoint_from_pointer(layout)
        return note
    if layout.remote and not force:
        raise FileNotFoundError(
            f'--resume: {work_dir} has no last_checkpoint and the CheckpointHook saves to '
            f'remote storage ({layout.folder}), which is not searched here. Pass --resume '
            f'PATH (e.g. --resume {layout.folder}/{layout.name}), or --force to start a new '
            'run (checkpoints there may be overwritten).')
    newest = None if layout.remote else newest_periodic_checkpoint(layout)
    if newest is not None:
        cfg.load_from = newest
        return (f'{work_dir} has no last_checkpoint; resuming from its newest '
                f'{layout.kind} checkpoint {newest}{layout.where()}.')
    others = existing_checkpoints(layout)
    if others and not force:
        raise FileNotFoundError(
            f'--resume: {work_dir} has no last_checkpoint and no {layout.name} (the '
            f'{layout.kind} checkpoints of the CheckpointHook){layout.where()}, but '
            f'{", ".join(others[:3])}{" ..." if len(others) > 3 else ""} exist. Pass '
            '--resume PATH to resume from one of them, or --force to start a new run '
            '(files may be overwritten).')
    cfg.resume = False
    return (f'--resume: no checkpoint to resume from in {work_dir}{layout.where()}; '
            'starting a new run' + (' (--force).' if others or layout.remote else '.'))


def _in_folders(path: str, layout: CheckpointLayout) -> bool:
    """``path`` lies directly in the hook's folder or the work dir (this run's own)."""
    if is_uri(path):
        return layout.remote and path.rsplit('/', 1)[0] == layout.folder.rstrip('/')
    parent = osp.realpath(osp.dirname(osp.abspath(path)))
    return parent in {osp.realpath(folder) for folder in _local_folders(layout)}


def refuse_foreign_resume(cfg: Config, force: bool = False) -> None:
    """Refuse resuming (``resume=True``) from a given ``load_from`` outside the hook's
    folder and the work dir (another run's checkpoint) where checkpoints already exist
    (see :func:`existing_checkpoints`), unless ``force``.

    The resumed run continues numbering from the other run and its ``CheckpointHook``
    restores that run's ``max_keep_ckpts`` ids: it overwrites this folder's
    ``epoch_N.pth`` and deletes old ones by number, this folder's own included.  Call it
    before :func:`resolve_resume` (which sets ``load_from`` from the run's own files).
    """
    load_from = cfg.get('load_from', None)
    if not cfg.get('resume', False) or load_from is None or force:
        return
    load_from = os.fspath(load_from)
    layout = checkpoint_layout(cfg)
    if _in_folders(load_from, layout):
        return
    own = None if is_uri(load_from) else osp.realpath(load_from)
    found = [f for f in existing_checkpoints(layout) if osp.realpath(f) != own]
    if found:
        where = f'work dir {layout.work_dir}'
        if layout.folder != layout.work_dir:
            where += f' / checkpoint folder {layout.folder} (CheckpointHook out_dir)'
        raise FileExistsError(
            f'--resume {load_from}: that checkpoint is not from the {where}, which '
            f'already holds checkpoints ({", ".join(found[:3])}'
            f'{" ..." if len(found) > 3 else ""}). The resumed run would overwrite them '
            'and its max_keep_ckpts could delete them (it removes old checkpoints by '
            'number). Pass --resume alone to continue the run there, choose another '
            '--work-dir, or pass --force to resume there anyway.')


def refuse_overwrite(cfg: Config, force: bool = False) -> None:
    """Refuse a new run (``resume=False``) where checkpoints exist, unless ``force``:
    it could overwrite them (see :func:`existing_checkpoints`)."""
    if cfg.get('resume', False) or force:
        return
    layout = checkpoint_layout(cfg)
    found = existing_checkpoints(layout)
    if found:
        where = f'Work dir {layout.work_dir}'
        if layout.folder != layout.work_dir and not layout.remote:
            where += f' / checkpoint folder {layout.folder} (CheckpointHook out_dir)'
        raise FileExistsError(
            f'{where} already holds checkpoints ({", ".join(found[:3])}'
            f'{" ..." if len(found) > 3 else ""}); a new run could overwrite them. Pass '
            '--resume to continue that run, --force to train there anyway, or choose '
            'another --work-dir.')
