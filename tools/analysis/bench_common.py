"""Shared pieces of ``tools/analysis/benchmark.py``: timing, memory, tables, output.

Timing is always *interleaved*: every contender runs ``iters`` steps per round, the order
of the contenders alternates from round to round, and each contender's time is the
median over rounds of its per-step mean.  On a shared or thermally throttling machine
this keeps the ratios honest even when absolute times drift; the per-round ratios are
reported too (median of ``a_i / b_i``).
"""
import contextlib
import datetime
import importlib
import os
import platform
import statistics
import time
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

#: The precisions the tool knows; AMP ones map to the autocast dtype.
PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
#: Memory formats by their command-line name.
FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}
#: Execution modes: eager, or ``torch.compile`` as MMEngine's ``compile=`` option does it.
MODES = ('eager', 'compile')


def sync(device: torch.device) -> None:
    """Wait for the device, so that host timers measure finished work."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def interleaved_times(steps: Dict[str, Callable[[], object]], device: torch.device,
                      rounds: int, iters: int) -> Dict[str, List[float]]:
    """Per-step milliseconds of each contender, one value per round.

    Args:
        steps: name -> callable running one step (warmed up already).
        device: synchronized around each contender's round.
        rounds: rounds; odd rounds run the contenders in reverse order.
        iters: steps per contender per round.

    Returns:
        dict: name -> list of ``rounds`` per-step means (ms).
    """
    names = list(steps)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                steps[name]()
            sync(device)
            times[name].append((time.perf_counter() - start) / iters * 1e3)
    return times


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a_i / b_i`` (robust to drift shared by both)."""
    return statistics.median(x / y for x, y in zip(a, b))


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Measure the peak device memory allocated inside the block, above its start.

    Yields a dict whose ``'gib'`` is filled on exit (``None`` on CPU, where PyTorch keeps
    no allocator statistics).
    """
    result: dict = {'gib': None}
    if device.type != 'cuda':
        yield result
        return
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    yield result
    sync(device)
    result['gib'] = (torch.cuda.max_memory_allocated(device) - base) / 2**30


def fmt(value: Optional[float], digits: int = 1) -> str:
    """A table cell: ``-`` for a missing value."""
    if value is None:
        return '-'
    return f'{value:.{digits}f}'


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
             right: Sequence[bool]) -> List[str]:
    """Markdown table lines; ``right[i]`` right-aligns column ``i`` (numbers)."""
    lines = ['| ' + ' | '.join(headers) + ' |',
             '|' + '|'.join('---:' if r else '---' for r in right) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return lines


def parse_md_table(lines: Sequence[str]) -> List[Dict[str, str]]:
    """Rows of the first markdown table in ``lines`` as dicts (header -> cell)."""
    table = [ln for ln in lines if ln.startswith('|')]
    if len(table) < 2:
        return []
    headers = [h.strip() for h in table[0].strip('|').split('|')]
    rows = []
    for line in table[2:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        rows.append(dict(zip(headers, cells)))
    return rows


def environment(device: torch.device) -> List[str]:
    """Bullet lines naming the device, the library versions and the machine load."""
    if device.type == 'cuda':
        cap = torch.cuda.get_device_capability(device)
        name = (f'{torch.cuda.get_device_name(device)} (sm_{cap[0]}{cap[1]}), CUDA '
                f'{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; '
                f'`cudnn.benchmark={torch.backends.cudnn.benchmark}`, TF32 convolutions '
                f'{torch.backends.cudnn.allow_tf32}, TF32 matmuls '
                f'{torch.backends.cuda.matmul.allow_tf32}')
    else:
        name = (f'CPU {platform.machine()}, {os.cpu_count()} cores, '
                f'{torch.get_num_threads()} torch threads')
    versions = [f'torch {torch.__version__}']
    for module in ('mmengine', 'mmcv', 'mmpretrain', 'timm'):
        try:
            versions.append(f'{module} {importlib.import_module(module).__version__}')
        except ImportError:
            versions.append(f'{module} missing')
    lines = [f'- Device: {name}',
             f'- {", ".join(versions)}, Python {platform.python_version()}',
             f'- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC']
    if hasattr(os, 'getloadavg'):
        lines.append('- Load average at the start: ' +
                     ', '.join(f'{x:.2f}' for x in os.getloadavg()) +
                     ' (a shared machine makes absolute times noisy; compare ratios)')
    return lines


def write_report(lines: Sequence[str], out_dir: Optional[str], name: str,
                 append_to: Optional[str], force: bool) -> List[str]:
    """Write ``lines`` to ``out_dir/name`` and/or append them to ``append_to``.

    An existing ``out_dir/name`` is only replaced with ``force``; ``append_to`` is only
    ever appended to (earlier sections are kept).

    Returns:
        list: the paths written.
    """
    text = '\n'.join(lines).rstrip() + '\n'
    written = []
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, name)
        if os.path.exists(path) and not force:
            raise FileExistsError(f'{path} exists; pass --force to overwrite it, or choose '
                                  'another --out-dir.')
        with open(path, 'w') as f:
            f.write(text)
        written.append(path)
    if append_to:
        with open(append_to, 'a') as f:
            f.write('\n' + text)
        written.append(append_to)
    return written


# ------------------------------------------------------------ bytes saved for backward
MIB = 2**20


class SavedTensorCounter:
    """Count the bytes autograd holds for the backward pass of the code run inside it.

    The memory a training step needs beyond its parameters, gradients and optimizer
    state is dominated by the tensors the forward pass saves for the backward pass; unlike
    the allocator's peak this is device-independent, so a CPU run counts exactly what a
    GPU step of the same batch, precision and memory format will hold.

    Inside the ``with`` block every tensor autograd saves passes through
    :func:`torch.autograd.graph.saved_tensors_hooks`; the pack hook records its storage and
    hands autograd a detached alias (same storage: no copy, no reference cycle through the
    output's ``grad_fn``).  :meth:`summary` then counts, among the saves whose alias the
    graph still holds (a weak reference tells), each *storage* once (by its data pointer;
    several saved views of one storage, or one tensor saved by two ops, count once; a
    view counts its whole storage, which is what stays allocated):

    * ``params``: storages of parameters (given as ``params``, or a saved leaf tensor that
      requires grad, or a view of one, e.g. the ``weight.t()`` a ``Linear`` saves);
    * ``activations``: every other storage (inputs, activations, standardized or
      autocast-cast weights).

    With ``model`` given, each storage is also attributed to the innermost module of
    ``model`` whose forward was running when the storage was first saved (forward
    pre-hooks push, forward hooks pop; ``''`` = outside every submodule).

    Args:
        model (nn.Module, optional): Attribute saves to its modules.
        params (iterable of Tensor, optional): Tensors counted as parameters
            (default: ``model.parameters()``).
    """

    def __init__(self, model=None, params=None) -> None:
        self.model = model
        if params is None and model is not None:
            params = model.parameters()
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in (params or ())}
        self.records: List[tuple] = []  # (weakref to the alias, ptr, nbytes, is_param, module)
        self._stack: List[str] = ['']
        self._handles: list = []
        self._hooks = None

    # the module stack
    def _push(self, name: str):
        def hook(module, args):
            self._stack.append(name)
        return hook

    def _pop(self, module, args, output):
        self._stack.pop()

    def _is_param(self, t: torch.Tensor, ptr: int) -> bool:
        if ptr in self.param_ptrs:
            return True
        base = t if t._base is None else t._base
        return base.is_leaf and base.requires_grad

    def _pack(self, t: torch.Tensor):
        alias = t.detach()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        self.records.append((weakref.ref(alias), ptr, storage.nbytes(),
                             self._is_param(t, ptr), self._stack[-1]))
        return alias

    @staticmethod
    def _unpack(alias: torch.Tensor) -> torch.Tensor:
        return alias

    def __enter__(self) -> 'SavedTensorCounter':
        self.records.clear()
        if self.model is not None:
            for name, module in self.model.named_modules():
                if name:
                    self._handles.append(module.register_forward_pre_hook(self._push(name)))
                    self._handles.append(module.register_forward_hook(self._pop))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack[:] = ['']

    def storages(self) -> Dict[int, tuple]:
        """ptr -> (nbytes, is_param, module) of every storage still held, first save wins."""
        held: Dict[int, tuple] = {}
        for ref, ptr, nbytes, is_param, module in self.records:
            if ref() is None:
                continue  # its graph node is gone (not on the path to the loss)
            if ptr in held:
                old = held[ptr]
                held[ptr] = (max(old[0], nbytes), old[1] or is_param, old[2])
            else:
                held[ptr] = (nbytes, is_param, module)
        return held

    def summary(self) -> Dict[str, int]:
        """``{'activations': bytes, 'params': bytes, 'tensors': saves, 'storages': n}``."""
        held = self.storages()
        live = sum(1 for r in self.records if r[0]() is not None)
        return dict(activations=sum(n for n, p, _ in held.values() if not p),
                    params=sum(n for n, p, _ in held.values() if p),
                    tensors=live, storages=len(held))

    def by_module(self, params: bool = False) -> Dict[str, int]:
        """module name -> bytes of the activation (or, ``params=True``, parameter)
        storages attributed to it."""
        out: Dict[str, int] = {}
        for nbytes, is_param, module in self.storages().values():
            if is_param == params:
                out[module] = out.get(module, 0) + nbytes
        return out


def count_saved(fn: Callable[[], object], model=None) -> Tuple[object, SavedTensorCounter]:
    """Run ``fn`` (a forward up to the loss) under a :class:`SavedTensorCounter`.

    Returns ``(fn's result, counter)``; read the counter while the result (the loss and
    its graph) is alive, then drop both.
    """
    with SavedTensorCounter(model) as counter:
        result = fn()
    return result, counter
