"""Writing converted checkpoints without ever clobbering a user's file."""
import os
import os.path as osp
import tempfile
from typing import Dict

import torch


def _current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` (Linux >= 4.7) where possible:
    ``os.umask`` can only be read by setting it, which briefly changes it for every
    thread of the process."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_existing(dst: str, force: bool = False) -> None:
    """Raise ``FileExistsError`` if ``dst`` exists and ``force`` is not set (callers check
    before expensive work too, e.g. a conversion, then write with
    :func:`save_checkpoint_atomic`)."""
    if osp.exists(dst) and not force:
        raise FileExistsError(f'{dst!r} already exists; pass --force to overwrite it.')


def save_checkpoint_atomic(state_dict: Dict[str, torch.Tensor], meta: dict, dst: str,
                           force: bool = False) -> None:
    """Write ``{'state_dict', 'meta'}`` to ``dst`` atomically.

    Refuses an existing ``dst`` unless ``force``; the file appears only once fully written
    (a temporary file in the same folder is renamed onto it), so an interrupted run leaves
    any previous ``dst`` intact.  ``dst`` gets the permissions a plain ``open(dst, 'w')``
    would give a new file, ``0o666 & ~umask`` (e.g. ``0o644`` under umask ``022``), not
    the private ``0o600`` of the temporary file.
    """
    refuse_existing(dst, force)
    out_dir = osp.dirname(osp.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix='.tmp')
    try:
        try:
            os.fchmod(fd, 0o666 & ~_current_umask())
        finally:
            os.close(fd)
        torch.save(dict(state_dict=state_dict, meta=meta), tmp)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
