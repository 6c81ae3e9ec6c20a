"""Check and time AGC under mixed precision (``AmpAGCOptimWrapper``) on a GPU.

Three parts, on NFNet-F0 + a 1000-class ``head.fc`` (``head.fc.weight`` excluded from AGC,
SGD Nesterov 0.9, weight decay 2e-5 without decay on gains/biases, i.e. the groups that
:class:`AGCOptimWrapperConstructor` builds for the recipe):

1. Correctness, for ``dtype`` bfloat16 and float16.  From identical weights,
   ``AmpAGCOptimWrapper.step()`` is compared with an fp32 ``AGCOptimWrapper.step()``:

   - *injected*: both get the same fp32 gradients (the AMP one multiplied by its loss
     scale, a power of two, as ``backward`` would leave them).  AGC must act on the
     unscaled gradients, so clipped gradients and updated weights must agree to
     rounding.  Clipping the still-scaled gradients would shrink them by the scale.
   - *forward*: each runs its own forward/backward on the same batch (autocast for the
     AMP one), so the differences are those of mixed precision itself.
   - *inf*: an injected gradient with one ``inf`` must leave every weight and the
     optimizer state untouched and halve the loss scale.

2. Throughput of a full train step (forward, loss, backward, wrapper step) at
   ``--img`` px and ``--batch`` images, fp32 / AMP bf16 / AMP fp16, each with AGC and
   with the plain MMEngine wrapper of the same precision (no clipping), contiguous and
   channels_last.  AGC and plain alternate round by round on the same model.

3. :func:`adaptive_clip_grad_` alone on F0's parameters, and the wrapper's whole
   ``_clip_grad`` (which also reads the clip statistics back for the message hub).

Only ``nfnets_mm.models.backbones`` and ``nfnets_mm.engine.optim_wrappers`` are needed,
so the script runs where MMEngine and mmcv (no ops needed) are installed but MMPretrain
is not (see :func:`import_nfnets_mm`).

Examples::

    python tools/benchmark_amp_gpu.py --device cpu --tiny          # smoke test, no CUDA
    python tools/benchmark_amp_gpu.py --device cuda --out amp.md  # the GPU benchmark
"""
import argparse
import contextlib
import copy
import datetime
import importlib
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
import types
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

SECTION = '## GPU: AMP + AGC'
TINY_ARCH = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
                 stem_channels=(8, 8, 16, 16))
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
AGC_CFG = dict(type='agc', clipping=0.01, eps=1e-3, exclude=['head.fc.weight'])


def import_nfnets_mm(block_mmpretrain: bool = False) -> Tuple[type, Callable, type, str]:
    """Import NFNet, ``adaptive_clip_grad_`` and the AGC wrapper constructor.

    ``nfnets_mm/__init__.py`` also imports ``nfnets_mm.models.heads`` and
    ``nfnets_mm.datasets``, which subclass MMPretrain classes.  Where MMPretrain is not
    installed (the GPU machine), bare package objects are put in ``sys.modules`` for
    ``nfnets_mm``, ``nfnets_mm.models`` and ``nfnets_mm.engine`` (their ``__path__`` is
    the real folder), so that Python imports the two subpackages needed here without
    running those three ``__init__`` files.  No package file is changed; the modules
    loaded are the repository's own.

    Args:
        block_mmpretrain (bool): Pretend MMPretrain is missing (to test that path here).

    Returns:
        tuple: ``(NFNet, adaptive_clip_grad_, AGCOptimWrapperConstructor, how)``.
    """
    if block_mmpretrain:
        sys.modules['mmpretrain'] = None  # makes ``import mmpretrain`` raise ImportError
    try:
        importlib.import_module('mmpretrain')
        importlib.import_module('nfnets_mm')
        how = 'import nfnets_mm (MMPretrain present)'
    except ImportError:
        for name in ('nfnets_mm', 'nfnets_mm.models', 'nfnets_mm.engine'):
            if name not in sys.modules:
                module = types.ModuleType(name)
                module.__path__ = [os.path.join(REPO_ROOT, *name.split('.'))]
                sys.modules[name] = module
        how = ('MMPretrain missing: nfnets_mm.models.backbones and '
               'nfnets_mm.engine.optim_wrappers imported without the package __init__ files')
    backbones = importlib.import_module('nfnets_mm.models.backbones')
    wrappers = importlib.import_module('nfnets_mm.engine.optim_wrappers')
    return backbones.NFNet, wrappers.adaptive_clip_grad_, \
        wrappers.AGCOptimWrapperConstructor, how


class Classifier(nn.Module):
    """NFNet backbone + global average pool + ``head.fc`` (MMPretrain's names)."""

    def __init__(self, nfnet_cls: type, arch, num_classes: int, **backbone_kwargs) -> None:
        super().__init__()
        self.backbone = nfnet_cls(arch=arch, **backbone_kwargs)
        self.head = nn.Module()
        self.head.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> logits (N, num_classes)."""
        return self.head.fc(self.backbone(x)[-1].mean((2, 3)))


class Bench:
    """Holds the settings and the imported nfnets_mm pieces."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        (self.NFNet, self.adaptive_clip_grad_, self.Constructor,
         self.import_how) = import_nfnets_mm(args.block_mmpretrain)
        self.arch = TINY_ARCH if args.tiny else 'F0'
        self.lines: List[str] = []
        # Quiet MMEngine's per-parameter INFO lines from the optimizer constructor.
        from mmengine.logging import MMLogger
        MMLogger.get_instance('benchmark_amp_gpu', log_level='WARNING')
        self.failures: List[str] = []

    # ------------------------------------------------------------------ helpers
    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def model(self, seed: int = 0, **kwargs) -> Classifier:
        torch.manual_seed(seed)
        return Classifier(self.NFNet, self.arch, self.args.num_classes, **kwargs).to(self.device)

    def wrapper(self, model: nn.Module, precision: str, agc: bool, lr: float):
        """Build the wrapper the recipe would build (same groups with and without AGC)."""
        amp = precision != 'fp32'
        if agc:
            wtype = 'AmpAGCOptimWrapper' if amp else 'AGCOptimWrapper'
        else:
            wtype = 'AmpOptimWrapper' if amp else 'OptimWrapper'
        cfg = dict(type=wtype, optimizer=dict(type='SGD', lr=lr, momentum=0.9, nesterov=True,
                                              weight_decay=2e-5))
        if agc:
            cfg['clip_grad'] = dict(AGC_CFG)
        if amp:
            cfg['dtype'] = {'bf16': 'bfloat16', 'fp16': 'float16'}[precision]
        with warnings.catch_warnings(), self._cpu_amp_shim(amp):
            warnings.simplefilter('ignore', FutureWarning)  # torch.cuda.amp.GradScaler
            if self.device.type == 'cpu':
                warnings.simplefilter('ignore', UserWarning)  # "CUDA is not available"
            wrapper = self.Constructor(cfg)(model)
        if amp and self.device.type == 'cpu':
            # CPU smoke test only: MMEngine builds a CUDA GradScaler and its autocast
            # refuses fp16 on CPU; use torch's CPU scaler and CPU autocast instead.
            wrapper.loss_scaler = torch.amp.GradScaler('cpu')
            dtype = wrapper.cast_dtype

            @contextlib.contextmanager
            def cpu_context(_model):
                with torch.autocast('cpu', dtype=dtype):
                    yield

            wrapper.optim_context = cpu_context
        if amp:
            # GradScaler creates its scale tensor lazily in the first ``scale()``; do it now
            # so that ``step()`` works on injected gradients too.
            wrapper.loss_scaler.scale(torch.zeros((), device=self.device))
        return wrapper

    @contextlib.contextmanager
    def _cpu_amp_shim(self, amp: bool):
        """On CPU (smoke test), let ``AmpOptimWrapper`` be built without CUDA."""
        if not (amp and self.device.type == 'cpu'):
            yield
            return
        module = importlib.import_module('mmengine.optim.optimizer.amp_optimizer_wrapper')
        saved = module.is_cuda_available
        module.is_cuda_available = lambda: True
        try:
            yield
        finally:
            module.is_cuda_available = saved

    def batch(self, n: int, seed: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 3, self.args.img, self.args.img, generator=g)
        y = torch.randint(0, self.args.num_classes, (n, ), generator=g)
        return x.to(self.device), y.to(self.device)

    def out(self, line: str = '') -> None:
        print(line, flush=True)
        self.lines.append(line)

    # ------------------------------------------------------------- correctness
    @staticmethod
    def _rel(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
        """max over tensors of ||a - b|| / ||b|| (0 where both are 0)."""
        worst = 0.
        for x, y in zip(a, b):
            diff = torch.linalg.vector_norm((x.double() - y.double())).item()
            ref = torch.linalg.vector_norm(y.double()).item()
            worst = max(worst, diff / ref if ref > 0 else (0. if diff == 0 else float('inf')))
        return worst

    def _fp32_grads(self, model: nn.Module, x, y) -> List[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return grads

    @staticmethod
    def _set_grads(model: nn.Module, grads: Sequence[torch.Tensor], scale: float) -> None:
        for p, g in zip(model.parameters(), grads):
            p.grad = g * scale

    @staticmethod
    def _snapshot(model: nn.Module) -> List[torch.Tensor]:
        return [p.detach().clone() for p in model.parameters()]

    @staticmethod
    def _grads(model: nn.Module) -> List[torch.Tensor]:
        return [p.grad.detach().clone() for p in model.parameters()]

    def correctness(self) -> None:
        a = self.args
        lr = 0.1
        ref = self.model(drop_path_rate=0.)  # deterministic forward for the comparison
        init = copy.deepcopy(ref.state_dict())
        x, y = self.batch(a.check_batch, seed=2)
        grads = self._fp32_grads(ref, x, y)
        g_mult = a.grad_mult
        grads = [g * g_mult for g in grads]

        # fp32 AGCOptimWrapper reference on the injected gradients.
        w_ref = self.wrapper(ref, 'fp32', True, lr)
        w0 = self._snapshot(ref)
        self._set_grads(ref, grads, 1.0)
        w_ref.step()
        ref_clipped, ref_w = self._grads(ref), self._snapshot(ref)
        ref_delta = [n - o for n, o in zip(ref_w, w0)]
        frac = w_ref.message_hub.get_scalar('train/agc_clip_fraction').current()
        factor = w_ref.message_hub.get_scalar('train/agc_mean_factor').current()
        unclipped_change = self._rel(ref_clipped, grads)

        self.out('### 1. Correctness: one AmpAGCOptimWrapper step vs one fp32 AGCOptimWrapper '
                 'step')
        self.out()
        self.out(f'Same initial weights (seed 0, `drop_path_rate=0`), batch {a.check_batch} at '
                 f'{a.img} px, SGD lr {lr}.  Injected gradients: fp32 gradients of that batch '
                 f'x {g_mult:g}; AGC clipped {frac:.3f} of the units (mean factor {factor:.3f}; '
                 f'clipping changed the gradients by up to {unclipped_change:.2f} relative).  '
                 f'Differences are max over the {len(grads)} tensors of ||amp - fp32|| / ||fp32||.')
        self.out()
        self.out('| dtype | test | clipped grads | weight update | updated weights | max abs '
                 'weight diff | result |')
        self.out('|---|---|---:|---:|---:|---:|---|')
        for name in a.amp_dtypes:
            try:
                self._correct_one(name, init, grads, x, y, ref_clipped, ref_w, ref_delta, w0, lr)
            except Exception:  # keep going: report what failed
                self.failures.append(f'correctness {name}: {traceback.format_exc()}')
                print(traceback.format_exc(), flush=True)
                self.out(f'| {name} | - | - | - | - | - | ERROR (see log) |')
        self.out()

    def _correct_one(self, name, init, grads, x, y, ref_clipped, ref_w, ref_delta, w0,
                     lr) -> None:
        tol_injected = 1e-6
        # (a) injected gradients, pre-multiplied by the loss scale.
        model = self.model(drop_path_rate=0.)
        model.load_state_dict(init)
        wrapper = self.wrapper(model, name, True, lr)
        scale = float(wrapper.loss_scaler.get_scale())
        self._set_grads(model, grads, scale)
        wrapper.step()
        clipped, new_w = self._grads(model), self._snapshot(model)
        delta = [n - o for n, o in zip(new_w, w0)]
        r_g, r_d, r_w = (self._rel(clipped, ref_clipped), self._rel(delta, ref_delta),
                         self._rel(new_w, ref_w))
        mad = max((n - r).abs().max().item() for n, r in zip(new_w, ref_w))
        ok = max(r_g, r_d) <= tol_injected
        if not ok:
            self.failures.append(f'{name} injected: relative diff {max(r_g, r_d):.2e} > '
                                 f'{tol_injected}')
        self.out(f'| {name} | injected grads (x loss scale {scale:g}) | {r_g:.2e} | {r_d:.2e} | '
                 f'{r_w:.2e} | {mad:.2e} | {"PASS" if ok else "FAIL"} (<= {tol_injected:g}) |')

        # (b) own forward/backward under autocast, same batch.
        model = self.model(drop_path_rate=0.)
        model.load_state_dict(init)
        wrapper = self.wrapper(model, name, True, lr)
        # fp32 reference on the real (not multiplied) gradients of this batch.
        ref = self.model(drop_path_rate=0.)
        ref.load_state_dict(init)
        w_ref = self.wrapper(ref, 'fp32', True, lr)
        w_ref.backward(F.cross_entropy(ref(x), y))
        w_ref.step()
        rc, rw = self._grads(ref), self._snapshot(ref)
        rd = [n - o for n, o in zip(rw, w0)]
        skipped = 0
        for _ in range(20):
            with wrapper.optim_context(model):
                logits = model(x)
            before = float(wrapper.loss_scaler.get_scale())
            wrapper.backward(F.cross_entropy(logits.float(), y))
            wrapper.step()
            if float(wrapper.loss_scaler.get_scale()) < before:  # overflow: step skipped
                skipped += 1
                wrapper.zero_grad()
                continue
            break
        clipped, new_w = self._grads(model), self._snapshot(model)
        delta = [n - o for n, o in zip(new_w, w0)]
        mad = max((n - r).abs().max().item() for n, r in zip(new_w, rw))
        note = f'; {skipped} overflow step(s) skipped first' if skipped else ''
        self.out(f'| {name} | own forward/backward (autocast){note} | '
                 f'{self._rel(clipped, rc):.2e} | {self._rel(delta, rd):.2e} | '
                 f'{self._rel(new_w, rw):.2e} | {mad:.2e} | info (AMP rounding) |')

        # (c) one inf in the (scaled) gradients: step skipped, nothing changes.
        model = self.model(drop_path_rate=0.)
        model.load_state_dict(init)
        wrapper = self.wrapper(model, name, True, lr)
        scale = float(wrapper.loss_scaler.get_scale())
        self._set_grads(model, grads, scale)
        first = next(model.parameters())
        first.grad.view(-1)[0] = float('inf')
        before = self._snapshot(model)
        wrapper.step()
        after = self._snapshot(model)
        unchanged = all(torch.equal(b, c) for b, c in zip(before, after))
        new_scale = float(wrapper.loss_scaler.get_scale())
        no_state = len(wrapper.optimizer.state) == 0
        ok = unchanged and no_state and new_scale == scale / 2
        if not ok:
            self.failures.append(f'{name} inf: unchanged={unchanged} no_state={no_state} '
                                 f'scale {scale}->{new_scale}')
        self.out(f'| {name} | inf in one gradient | - | - | '
                 f'{"bitwise equal" if unchanged else "CHANGED"} | - | '
                 f'{"PASS" if ok else "FAIL"} (step skipped, optimizer state '
                 f'{"empty" if no_state else "NOT empty"}, scale {scale:g} -> {new_scale:g}) |')

    # -------------------------------------------------------------- throughput
    def _step(self, model, wrapper, x, y) -> None:
        with wrapper.optim_context(model):
            logits = model(x)
        wrapper.update_params(F.cross_entropy(logits.float(), y))

    def throughput(self) -> Dict[Tuple[str, str, bool], float]:
        a = self.args
        results: Dict[Tuple[str, str, bool], float] = {}
        x0, y = self.batch(a.batch, seed=3)
        self.out(f'### 2. Train step throughput, batch {a.batch} at {a.img} px')
        self.out()
        self.out(f'NFNet-{self.arch if isinstance(self.arch, str) else "tiny"} + 1000-class '
                 f'head.fc, backbone defaults (drop_path_rate 0.1), SGD lr {a.lr}; '
                 f'`cudnn.benchmark={torch.backends.cudnn.benchmark}`, '
                 f'`cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}`, '
                 f'`cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}`.  '
                 f'Step = forward + cross-entropy + `update_params` (backward, [unscale,] '
                 f'[AGC,] SGD, zero_grad).  {a.warmup} warm-up steps per wrapper, then '
                 f'{a.rounds} rounds alternating plain / AGC, {a.iters} steps each, synchronized '
                 'around each round; ms = median over rounds of the per-step mean.')
        self.out()
        self.out('| memory format | precision | plain ms | AGC ms | plain img/s | AGC img/s | '
                 'AGC overhead | notes |')
        self.out('|---|---|---:|---:|---:|---:|---:|---|')
        for fmt in a.formats:
            for prec in a.precisions:
                try:
                    self._throughput_one(fmt, prec, x0, y, results)
                except Exception:
                    self.failures.append(f'throughput {fmt} {prec}: {traceback.format_exc()}')
                    print(traceback.format_exc(), flush=True)
                    self.out(f'| {fmt} | {prec} | - | - | - | - | - | ERROR (see log) |')
                if self.device.type == 'cuda':
                    torch.cuda.empty_cache()
        self.out()
        self.out('AGC overhead = (AGC ms - plain ms) / plain ms.')
        self.out()
        return results

    def _throughput_one(self, fmt, prec, x0, y, results) -> None:
        a = self.args
        mf = torch.channels_last if fmt == 'channels_last' else torch.contiguous_format
        model = self.model(seed=0).to(memory_format=mf)
        x = x0.contiguous(memory_format=mf)
        wrappers = {False: self.wrapper(model, prec, False, a.lr),
                    True: self.wrapper(model, prec, True, a.lr)}
        for agc in (False, True):
            for _ in range(a.warmup):
                self._step(model, wrappers[agc], x, y)
        self.sync()
        times = {False: [], True: []}
        scales0 = {k: (float(w.loss_scaler.get_scale()) if prec != 'fp32' else None)
                   for k, w in wrappers.items()}
        for r in range(a.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for agc in order:
                self.sync()
                t0 = time.perf_counter()
                for _ in range(a.iters):
                    self._step(model, wrappers[agc], x, y)
                self.sync()
                times[agc].append((time.perf_counter() - t0) / a.iters * 1e3)
        finite = all(torch.isfinite(p).all().item() for p in model.parameters())
        plain, agc = statistics.median(times[False]), statistics.median(times[True])
        results[(fmt, prec, False)], results[(fmt, prec, True)] = plain, agc
        notes = []
        if prec != 'fp32':
            for k, w in wrappers.items():
                s = float(w.loss_scaler.get_scale())
                if s != scales0[k]:
                    notes.append(f'{"AGC" if k else "plain"} loss scale {scales0[k]:g}->{s:g}')
        if not finite:
            notes.append('NON-FINITE weights')
        spread = (f'rounds plain {min(times[False]):.1f}-{max(times[False]):.1f}, '
                  f'AGC {min(times[True]):.1f}-{max(times[True]):.1f} ms')
        notes.append(spread)
        self.out(f'| {fmt} | {prec} | {plain:.1f} | {agc:.1f} | {a.batch / plain * 1e3:.0f} | '
                 f'{a.batch / agc * 1e3:.0f} | {(agc - plain) / plain * 100:+.1f}% | '
                 f'{"; ".join(notes)} |')

    # ----------------------------------------------------------------- AGC only
    def agc_alone(self, steps: Dict[Tuple[str, str, bool], float]) -> None:
        a = self.args
        model = self.model(seed=0)
        x, y = self.batch(min(a.batch, 16), seed=4)
        grads = self._fp32_grads(model, x, y)
        self._set_grads(model, grads, 1.0)
        wrapper = self.wrapper(model, 'fp32', True, a.lr)
        params = wrapper.agc_params()
        n_el = sum(p.numel() for p in params)

        def timeit(fn: Callable[[], object]) -> Tuple[float, float]:
            for _ in range(a.agc_warmup):
                fn()
            self.sync()
            ts = []
            for _ in range(a.agc_repeats):
                t0 = time.perf_counter()
                fn()
                self.sync()
                ts.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(ts), min(ts)

        def clip():
            self.adaptive_clip_grad_(params, clipping=0.01, eps=1e-3)

        t_clip = timeit(clip)
        t_wrap = timeit(wrapper._clip_grad)
        self.out('### 3. AGC alone')
        self.out()
        arch = self.arch if isinstance(self.arch, str) else 'tiny'
        self.out(f'fp32 gradients of NFNet-{arch} (real backward of {min(a.batch, 16)} images, '
                 f'{a.img} px) on the '
                 f'{len(params)} AGC tensors ({n_el / 1e6:.1f}M elements; head.fc.weight '
                 f'excluded).  {a.agc_warmup} warm-up calls, then median (min) of '
                 f'{a.agc_repeats} calls, synchronized after each.')
        self.out()
        self.out('| what | median ms | min ms | share of a plain step (contiguous) |')
        self.out('|---|---:|---:|---|')
        for label, (med, mn) in (('`adaptive_clip_grad_(params)`', t_clip),
                                 ('`AGCOptimWrapper._clip_grad()` (+ stats read-back)', t_wrap)):
            shares = []
            for prec in a.precisions:
                base = steps.get(('contiguous', prec, False))
                if base:
                    shares.append(f'{prec} {med / base * 100:.1f}%')
            self.out(f'| {label} | {med:.2f} | {mn:.2f} | {", ".join(shares) or "-"} |')
        self.out()

    # -------------------------------------------------------------------- main
    def header(self, argv: Sequence[str]) -> None:
        import mmengine
        try:
            import mmcv
            mmcv_v = mmcv.__version__
        except ImportError:
            mmcv_v = 'not installed'
        if self.device.type == 'cuda':
            dev = torch.cuda.get_device_name(self.device)
            cap = torch.cuda.get_device_capability(self.device)
            dev = f'{dev} (sm_{cap[0]}{cap[1]}), CUDA {torch.version.cuda}, ' \
                  f'cuDNN {torch.backends.cudnn.version()}'
        else:
            dev = f'CPU {platform.machine()} ({os.cpu_count()} cores)'
        self.out(SECTION)
        self.out()
        self.out(f'Command: `python tools/benchmark_amp_gpu.py {shlex.join(argv)}` '
                 f'({datetime.date.today().isoformat()})')
        self.out()
        self.out(f'- Device: {dev}')
        self.out(f'- torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv_v}, '
                 f'Python {platform.python_version()}')
        self.out(f'- nfnets_mm import: {self.import_how}')
        self.out()

    def run(self, argv: Sequence[str]) -> int:
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        t0 = time.perf_counter()
        self.header(argv)
        steps: Dict[Tuple[str, str, bool], float] = {}
        for name in ('correctness', 'throughput', 'agc_alone'):
            if name not in self.args.parts:
                continue
            try:
                if name == 'correctness':
                    self.correctness()
                elif name == 'throughput':
                    steps = self.throughput()
                else:
                    self.agc_alone(steps)
            except Exception:
                self.failures.append(f'{name}: {traceback.format_exc()}')
                print(traceback.format_exc(), flush=True)
                self.out(f'{name}: ERROR (see log)')
                self.out()
        if self.device.type == 'cuda':
            peak = torch.cuda.max_memory_allocated() / 2**30
            self.out(f'Peak GPU memory allocated: {peak:.1f} GiB; '
                     f'wall time of the script {time.perf_counter() - t0:.0f} s.')
        else:
            self.out(f'Wall time of the script {time.perf_counter() - t0:.0f} s.')
        self.out()
        short = [f.splitlines()[0] if f.strip() else f for f in self.failures]
        self.out('Checks: ' + ('all passed.' if not self.failures else
                               'FAILED: ' + ' | '.join(short)))
        return 1 if self.failures else 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--tiny', action='store_true',
                        help='tiny NFNet, 32 px, batch 4, few iterations (smoke test)')
    parser.add_argument('--img', type=int, default=None, help='image size (192; tiny 32)')
    parser.add_argument('--batch', type=int, default=None, help='throughput batch (64; tiny 4)')
    parser.add_argument('--check-batch', type=int, default=None,
                        help='batch of the correctness check (16; tiny 4)')
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--grad-mult', type=float, default=1.0,
                        help='multiply the injected gradients (more clipping)')
    parser.add_argument('--lr', type=float, default=1e-3, help='SGD lr of the timed steps')
    parser.add_argument('--warmup', type=int, default=None, help='warm-up steps (5; tiny 1)')
    parser.add_argument('--rounds', type=int, default=None, help='timed rounds (6; tiny 2)')
    parser.add_argument('--iters', type=int, default=None, help='steps per round (5; tiny 1)')
    parser.add_argument('--agc-warmup', type=int, default=5)
    parser.add_argument('--agc-repeats', type=int, default=None, help='(50; tiny 3)')
    parser.add_argument('--formats', nargs='+', default=['contiguous', 'channels_last'],
                        choices=['contiguous', 'channels_last'])
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16', 'fp16'],
                        choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--amp-dtypes', nargs='+', default=['bf16', 'fp16'],
                        choices=['bf16', 'fp16'], help='dtypes of the correctness check')
    parser.add_argument('--parts', nargs='+', default=['correctness', 'throughput', 'agc_alone'],
                        choices=['correctness', 'throughput', 'agc_alone'])
    parser.add_argument('--block-mmpretrain', action='store_true',
                        help='act as if MMPretrain were not installed (tests that import path)')
    parser.add_argument('--out', default=None,
                        help='also write the markdown section to this file')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    args = parser.parse_args(argv)
    tiny = args.tiny
    for key, full, small in (('img', 192, 32), ('batch', 64, 4), ('check_batch', 16, 4),
                             ('warmup', 5, 1), ('rounds', 6, 2), ('iters', 5, 1),
                             ('agc_repeats', 50, 3)):
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else full)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available here; use --device cpu '
                     '(with --tiny for a quick smoke test).')
    if args.out and os.path.exists(args.out) and not args.force:
        parser.error(f'--out {args.out} exists; pass --force to overwrite it.')
    for key in ('img', 'batch', 'check_batch', 'rounds', 'iters', 'agc_repeats'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    bench = Bench(args)
    code = bench.run(argv)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(bench.lines).rstrip() + '\n')
    return code


if __name__ == '__main__':
    sys.exit(main())
