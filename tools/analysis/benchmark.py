#!/usr/bin/env python
"""Side-by-side speed of NFNet training and inference: nfnets_mm vs timm vs ResNet-50.

Three sub-commands, each measuring its contenders in one process with interleaved rounds
(medians over rounds, ratios per round; see ``bench_common``) and writing markdown tables:

* ``train``: the full training step as MMEngine's runner runs it,
  ``model.train_step(data, optim_wrapper)`` of the ``ImageClassifier`` built from
  ``configs/nfnet/f*_imagenet.py`` (its data preprocessor and batch augments, AGC wrapper,
  SGD), against timm's ``dm_nfnet_f*`` + timm's AGC and MMPretrain's ResNet-50 (same batch,
  precision, memory format, eager / ``torch.compile``), at each variant's train size from
  ``nfnets_mm/variants.py``: ms per step, images/s, peak memory (CUDA), the bytes saved
  for the backward pass (any device: counted exactly, see ``SavedTensorCounter``; with
  ``--memory-breakdown`` per stage and module, ours next to timm); plus a profiler table
  of the first variant's AMP step (top ops by self time, kernel launches per step).
* ``agc``: AGC alone on the variant's parameters with real gradients:
  ``adaptive_clip_grad_``, the wrapper's ``_clip_grad`` (with its statistics), the compiled
  pass ``CompiledAGC`` (``clip_grad.fused``; its compile time apart; ``--no-fused-agc``
  skips it; ``--compile-backend`` / ``--compile-mode`` apply), timm's
  ``adaptive_clip_grad`` and two memory-traffic floors, its share of the ``train`` step of
  the same run, and the largest difference from ``agc_reference`` (Eq. 3, tensor by tensor).
* ``infer``: eval forward at the variant's test size: nfnets_mm with weight
  standardization every forward / cached / deployed (``switch_to_deploy``), timm, ResNet-50.

Examples::

    # CPU, a tiny network, seconds (what tests/test_benchmark_tool.py runs)
    python tools/analysis/benchmark.py train --device cpu --tiny --out-dir /tmp/bench
    # GPU, F0 at batch 128, AMP bf16 vs fp32, both memory formats
    python tools/analysis/benchmark.py train --device cuda --archs F0 --batch-sizes 128 \\
        --precisions fp32 bf16 --formats contiguous channels_last --out-dir $OUT
    # every GPU table within the device's time budget
    bash tools/analysis/gpu_benchmarks.sh

``--append-to docs/benchmarks.md`` appends the tables (with the command, device, versions
and date) to that file; ``--out-dir`` writes ``<sub-command>.md`` there (an existing file
is kept unless ``--force``).
"""
import argparse
import gc
import itertools
import math
import os.path as osp
import shlex
import statistics
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
for path in (HERE, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from bench_common import (FORMATS, MIB, MODES, PRECISIONS, count_saved,  # noqa: E402
                          environment, fmt, interleaved_times, md_table, median_ratio,
                          peak_memory, sync, write_report)
from bench_models import (CONTENDERS, DEFAULT_CONTENDERS, TINY_NFNET,  # noqa: E402
                          TINY_SIZE, TRAIN_STEPS, Setting, common_module_name,
                          inference_models, stage_and_role)

#: Issue-10 targets, reported (never asserted) under the tables.
TARGET_AMP_SPEEDUP = 1.5  # AMP bf16 / fp32 throughput of F0 at batch 128
TARGET_F0_IMG_S = 3000  # F0 full step, AMP bf16, one H100/H200
TARGET_VS_TIMM = 1.2  # ours / timm throughput, each at its best of eager / compile
TARGET_AGC_SHARE = 0.02  # AGC / full step
TARGET_CPU_TRAIN = 0.90  # CPU fp32 time ratio ours / timm, train step
TARGET_CPU_INFER = 0.85  # CPU fp32 time ratio ours (deployed) / timm, inference
#: Extra warm-up steps of compiled contenders (see ``Bench.warm``).
COMPILE_EXTRA_WARMUP = 9
#: The ``agc`` table's row of the compiled AGC pass.
FUSED_ROW = 'nfnets_mm `CompiledAGC` (`clip_grad.fused=True`)'


class Bench:
    """Settings shared by the sub-commands, the report lines and the failures."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str]) -> None:
        self.args = args
        self.argv = list(argv)
        self.device = torch.device(args.device)
        self.lines: List[str] = []
        self.failures: List[str] = []
        self.compile_notes: List[str] = []
        self.breakdown_lines: List[str] = []
        if args.threads:
            torch.set_num_threads(args.threads)
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
            # fp32 means TF32 tensor-core convolutions and matmuls on Ampere+ (the "fp32
            # (TF32)" rows of the issue), as timm's train.py and most recipes run it.
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cuda.matmul.allow_tf32 = True
        from mmengine.logging import MMLogger
        # quiet MMEngine's per-parameter INFO lines from the optimizer constructors
        MMLogger.get_instance('benchmark', log_level='WARNING')
        import nfnets_mm  # noqa: F401  (registers the NFNet modules and wrappers)

    # ----------------------------------------------------------------- helpers
    def out(self, line: str = '') -> None:
        print(line, flush=True)
        self.lines.append(line)

    def header(self, title: str, what: str) -> None:
        a = self.args
        self.out(f'## {title} ({"tiny CPU smoke run" if a.tiny else self.device_name()})')
        self.out()
        self.out(what)
        self.out()
        self.out(f'Command: `python tools/analysis/benchmark.py {shlex.join(self.argv)}`')
        self.out()
        for line in environment(self.device):
            self.out(line)
        self.out(f'- Timing: {a.warmup} warm-up steps per contender, then {a.rounds} rounds of '
                 f'{a.iters} steps per contender, the order alternating round by round; ms = '
                 'median over rounds of the per-step mean; "ratio" = median over rounds of the '
                 'per-round time ratio.')
        self.out()

    def device_name(self) -> str:
        if self.device.type == 'cuda':
            return torch.cuda.get_device_name(self.device)
        return f'CPU, {torch.get_num_threads()} threads'

    def setting(self, arch: str, batch: int, size: int, precision: str, memory_format: str,
                mode: str) -> Setting:
        a = self.args
        kwargs = {}
        if a.compile_backend:
            kwargs['backend'] = a.compile_backend
        if a.compile_mode:
            kwargs['mode'] = a.compile_mode
        return Setting(arch=arch, batch=batch, size=size, precision=precision,
                       memory_format=memory_format, mode=mode, device=self.device,
                       tiny=a.tiny, compile_kwargs=kwargs)

    def settings(self, which: str):
        """Every point of the grid ``--archs`` x ``--batch-sizes`` x ``--precisions`` x
        ``--formats`` x ``--modes``, at each arch's ``which`` ('train' / 'test') size."""
        a = self.args
        for arch in a.archs:
            size = self.size_of(arch, which)
            for batch, precision, memory_format, mode in itertools.product(
                    a.batch_sizes, a.precisions, a.formats, a.modes):
                yield self.setting(arch, batch, size, precision, memory_format, mode)

    def size_of(self, arch: str, which: str) -> int:
        """Train / test size of ``arch`` from the variant table (``--size`` overrides)."""
        if self.args.size:
            return self.args.size
        if self.args.tiny:
            return TINY_SIZE
        from nfnets_mm.variants import get_variant
        return getattr(get_variant(arch), f'{which}_size')

    def free(self) -> None:
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
        torch._dynamo.reset()

    def fail(self, what: str) -> None:
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        last = text.strip().splitlines()[-1]
        self.failures.append(f'{what}: {last}')

    def warm(self, name: str, fn: Callable[[], object], compiled: bool = False
             ) -> Optional[float]:
        """Warm ``fn`` up; return the peak memory (GiB) of its warm-up steps.

        Compiled steps get ``COMPILE_EXTRA_WARMUP`` more: a frame whose guards fail every
        step is recompiled up to Dynamo's ``recompile_limit`` (8) times before it falls
        back to eager, and the timing should see the steady state.  Compilations that
        still happen during the timed rounds are counted and reported.
        """
        steps = self.args.warmup + (COMPILE_EXTRA_WARMUP if compiled else 0)
        with peak_memory(self.device) as peak:
            for _ in range(steps):
                fn()
        return peak['gib']

    def finish(self) -> int:
        if self.failures:
            self.out('Failures: ' + ' | '.join(self.failures))
            self.out()
        written = write_report(self.lines, self.args.out_dir, f'{self.args.command}.md',
                               self.args.append_to, self.args.force)
        for path in written:
            print(f'wrote {path}', flush=True)
        return 1 if self.failures else 0

    # ------------------------------------------------------------------ train
    def train(self) -> Dict[tuple, dict]:
        a = self.args
        self.header('Train step: nfnets_mm vs timm vs ResNet-50',
                    'Step = `model.train_step(data, optim_wrapper)` of the recipe config '
                    '(uint8 batch and the loader\'s mixed soft targets on the host -> data '
                    'preprocessor -> forward -> loss -> backward -> [unscale] -> AGC -> SGD '
                    'Nesterov; MixUp/CutMix happen in the loader, as in the recipe), timm = '
                    'its `train.py` iteration for `dm_nfnet_f*` (soft targets, '
                    'SoftTargetCrossEntropy, `dispatch_clip_grad(mode="agc")`, SGD), '
                    'resnet50 = MMPretrain\'s `resnet50_8xb32_in1k.py` classifier, plain '
                    'wrapper.  lr = 0.1 x batch / 256.  Peak memory = the most allocated '
                    'during the contender\'s warm-up steps above what was allocated before '
                    'it was built (CUDA only).  Saved MiB = the storages autograd holds for '
                    'the backward pass when the loss has been computed (one extra forward '
                    'after the warm-up, eager rows only; each storage counted once, '
                    'parameters separately as "saved params MiB"; counted, not sampled: the '
                    'same on every device for the same batch, precision and format).')
        results: Dict[tuple, dict] = {}
        rows = []
        for s in self.settings('train'):
            rows += self._train_point(s, results)
        self.out(f'### Train step, {"tiny NFNet " + str(TINY_NFNET) if a.tiny else ""}')
        self.out()
        for line in md_table(
                ['arch', 'px', 'batch', 'precision', 'format', 'mode', 'contender',
                 'ms/step', 'img/s', 'peak GiB', 'saved MiB', 'saved params MiB',
                 'saved / timm', 'time / nfnets_mm', 'rounds ms'],
                rows, [False, True, True, False, False, False, False, True, True, True, True,
                       True, True, True, False]):
            self.out(line)
        self.out()
        for line in self.breakdown_lines:
            self.out(line)
        for line in self.compile_notes:
            self.out(line)
        if self.compile_notes:
            self.out()
        self._train_summary(results)
        if a.profile:
            for name in a.profile_contenders:
                if name not in a.contenders:
                    continue
                try:
                    self.profile(name)
                except Exception:
                    self.fail(f'profile {name}')
        return results

    def _train_point(self, s: Setting, results: Dict[tuple, dict]) -> List[list]:
        a = self.args
        key = (s.arch, s.batch, s.precision, s.memory_format, s.mode)
        steps, peaks, saved, rows = {}, {}, {}, []
        for name in a.contenders:
            try:
                step = TRAIN_STEPS[name](s)
                peaks[name] = self.warm(name, step, compiled=s.mode == 'compile')
                steps[name] = step
            except Exception:
                self.fail(f'train {name} {key}')
                rows.append([s.arch, s.size, s.batch, s.precision, s.memory_format, s.mode,
                             name, 'ERROR', '-', '-', '-', '-', '-', '-',
                             self.failures[-1][-60:]])
                self.free()
                continue
            if s.mode == 'eager':
                try:
                    saved[name] = self.saved_for_backward(step)
                except Exception:
                    self.fail(f'saved bytes {name} {key}')
        if a.memory_breakdown and s.mode == 'eager':
            self.breakdown_lines += self._breakdown(s, saved)
        if steps:
            from torch._dynamo.utils import counters
            frames_before = counters['frames']['ok']
            try:
                times = interleaved_times(steps, self.device, a.rounds, a.iters)
            except Exception:
                self.fail(f'train timing {key}')
                times = {}
            recompiled = counters['frames']['ok'] - frames_before
            if s.mode == 'compile':
                self.compile_notes.append(
                    f'- {s.arch} batch {s.batch} {s.precision} {s.memory_format}: {recompiled} '
                    'frames compiled during the timed rounds (0 = steady state; warm-up had '
                    f'{a.warmup + COMPILE_EXTRA_WARMUP} steps).')
            for name, ts in times.items():
                ms = statistics.median(ts)
                finite = _finite(steps[name])
                mine, timm = saved.get(name), saved.get('timm')
                results[key + (name, )] = dict(ms=ms, img_s=s.batch / ms * 1e3,
                                               peak=peaks[name], times=ts,
                                               saved=mine['activations'] if mine else None)
                ratio = (median_ratio(ts, times['nfnets_mm']) if 'nfnets_mm' in times
                         else None)
                rows.append([s.arch, s.size, s.batch, s.precision, s.memory_format, s.mode,
                             name + ('' if finite else ' (NON-FINITE weights)'), fmt(ms),
                             _rate(s.batch / ms * 1e3), fmt(peaks[name], 2),
                             _mib(mine and mine['activations']), _mib(mine and mine['params']),
                             fmt(mine['activations'] / timm['activations'], 2)
                             if mine and timm else '-',
                             fmt(ratio, 2), f'{min(ts):.1f}-{max(ts):.1f}'])
                # progress (and what survives a timeout): the row as soon as it is measured
                print('row: | ' + ' | '.join(str(c) for c in rows[-1]) + ' |', flush=True)
        del steps
        self.free()
        return rows

    def saved_for_backward(self, step) -> dict:
        """MiB autograd holds for the backward pass of ``step``'s forward up to the loss.

        Returns:
            dict: ``activations`` and ``params`` (MiB), ``tensors`` / ``storages`` (counts),
            ``modules`` (module name -> activation bytes; with ``--memory-breakdown``).
        """
        loss, counter = count_saved(step.forward_loss, step.model)
        total = counter.summary()
        out = dict(activations=total['activations'] / MIB, params=total['params'] / MIB,
                   tensors=total['tensors'], storages=total['storages'],
                   modules=counter.by_module() if self.args.memory_breakdown else None)
        del loss, counter
        self.free()
        return out

    def _breakdown(self, s: Setting, saved: Dict[str, dict]) -> List[str]:
        """Tables of the activation bytes saved for backward per network stage and per
        module of a stage (blocks of a stage summed), the NFNet contenders side by side in
        one module naming (:func:`bench_models.common_module_name`)."""
        names = [n for n in saved if n != 'resnet50' and saved[n].get('modules') is not None]
        if not names:
            return []
        per_stage: Dict[str, Dict[str, float]] = {n: {} for n in names}
        per_role: Dict[str, Dict[tuple, float]] = {n: {} for n in names}
        for name in names:
            for module, nbytes in saved[name]['modules'].items():
                stage, role = stage_and_role(common_module_name(name, module))
                per_stage[name][stage] = per_stage[name].get(stage, 0) + nbytes / MIB
                per_role[name][stage, role] = per_role[name].get((stage, role), 0) + nbytes / MIB
        ours = 'nfnets_mm' if 'nfnets_mm' in names else names[0]
        diff = 'timm' in names and ours != 'timm'

        def cells(table, key):
            values = [table[n].get(key, 0.) for n in names]
            extra = ([_mib(table[ours].get(key, 0.) - table['timm'].get(key, 0.), signed=True)]
                     if diff else [])
            return [_mib(v) for v in values] + extra

        headers = [f'{n} MiB' for n in names] + ([f'{ours} - timm MiB'] if diff else [])
        title = (f'{s.arch} {s.size} px, batch {s.batch}, {s.precision}, {s.memory_format}')
        lines = [f'### Saved for backward by stage: {title}', '',
                 'Activation storages held for the backward pass when the loss has been '
                 'computed, attributed to the innermost module running when each was first '
                 'saved (a block\'s own ops -- pre-activation scaling, residual sums -- to the '
                 'block, `(block)`); one module naming for both (timm\'s renamed to ours, see '
                 '`bench_models.TIMM_TO_OURS`; `loss` = timm\'s step code outside the model).',
                 '']
        for name in names:
            r = saved[name]
            lines.append(f'- {name}: {r["tensors"]} saved tensors in {r["storages"]} '
                         f'storages; activations {_mib(r["activations"])} MiB, parameters '
                         f'{_mib(r["params"])} MiB.')
        lines.append('')
        stages = sorted({k for n in names for k in per_stage[n]}, key=_stage_order)
        lines += md_table(['stage'] + headers, [[k] + cells(per_stage, k) for k in stages],
                          [False] + [True] * len(headers))
        lines.append('')
        keys = sorted({k for n in names for k in per_role[n]},
                      key=lambda k: -max(per_role[n].get(k, 0.) for n in names))
        top = keys[:self.args.breakdown_top]
        rest = keys[len(top):]
        rows = [[k[0], f'`{k[1]}`'] + cells(per_role, k) for k in top]
        if rest:
            rest_table = {n: {'rest': sum(per_role[n].get(k, 0.) for k in rest)} for n in names}
            rows.append(['', f'({len(rest)} more)'] + cells(rest_table, 'rest'))
        lines += [f'### Saved for backward by module (top {len(top)}): {title}', '']
        lines += md_table(['stage', 'module'] + headers, rows,
                          [False, False] + [True] * len(headers))
        lines.append('')
        return lines

    def _train_summary(self, results: Dict[tuple, dict]) -> None:
        """Best of eager / compile per contender, and the issue's targets."""
        a = self.args
        best: Dict[tuple, dict] = {}
        for (arch, batch, prec, mf, mode, name), r in results.items():
            k = (arch, batch, prec, mf, name)
            if k not in best or r['ms'] < best[k]['ms']:
                best[k] = dict(r, mode=mode)
        rows = []
        for (arch, batch, prec, mf, name), r in sorted(best.items()):
            if name != 'nfnets_mm':
                continue
            timm = best.get((arch, batch, prec, mf, 'timm'))
            saved = _saved_ratio(results, arch, batch, prec, mf)
            rows.append([arch, batch, prec, mf, f'{_rate(r["img_s"])} ({r["mode"]})',
                         f'{_rate(timm["img_s"])} ({timm["mode"]})' if timm else '-',
                         fmt(r['img_s'] / timm['img_s'], 2) if timm else '-',
                         fmt(r['peak'] / timm['peak'], 2) if timm and r['peak'] and
                         timm['peak'] else '-', fmt(saved, 2)])
        if not rows:
            return
        self.out('### Best of eager / compile: nfnets_mm vs timm')
        self.out()
        for line in md_table(['arch', 'batch', 'precision', 'format', 'nfnets_mm img/s',
                              'timm img/s', 'speed ours / timm', 'peak memory ours / timm',
                              'saved for backward ours / timm'],
                             rows, [False, True, False, False, True, True, True, True, True]):
            self.out(line)
        self.out()
        self.out('Targets (issue 10; absolute ones only mean something on an H100/H200):')
        self.out()
        for arch, batch, mf in sorted({(k[0], k[1], k[3]) for k in best}):
            ours = {p: best.get((arch, batch, p, mf, 'nfnets_mm')) for p in PRECISIONS}
            if ours['fp32'] and ours['bf16']:
                speedup = ours['bf16']['img_s'] / ours['fp32']['img_s']
                self.out(f'- {arch} batch {batch} {mf}: AMP bf16 / fp32 throughput '
                         f'{speedup:.2f}x (target >= {TARGET_AMP_SPEEDUP}x: '
                         f'{_verdict(speedup, TARGET_AMP_SPEEDUP)})')
            if ours['bf16'] and arch == 'F0' and not a.tiny:
                img_s = ours['bf16']['img_s']
                self.out(f'- {arch} batch {batch} {mf}: AMP bf16 {img_s:.0f} img/s (target >= '
                         f'{TARGET_F0_IMG_S} on one H100/H200: '
                         f'{_verdict(img_s, TARGET_F0_IMG_S)})')
            for p, r in ours.items():
                timm = best.get((arch, batch, p, mf, 'timm'))
                if not (r and timm):
                    continue
                speed = r['img_s'] / timm['img_s']
                target = TARGET_VS_TIMM if self.device.type == 'cuda' else 1 / TARGET_CPU_TRAIN
                self.out(f'- {arch} batch {batch} {p} {mf}: ours / timm speed {speed:.2f}x '
                         f'(time ratio {1 / speed:.2f}; target speed >= {target:.2f}x: '
                         f'{_verdict(speed, target)})')
                if r['peak'] and timm['peak']:
                    mem = r['peak'] / timm['peak']
                    self.out(f'  peak memory ours / timm {mem:.2f} (target <= 1: '
                             f'{_verdict(1 / mem, 1.0)})')
                saved = _saved_ratio(results, arch, batch, p, mf)
                if saved:
                    self.out(f'  bytes saved for backward ours / timm {saved:.2f} (eager; '
                             'what dominates the peak-memory target <= 1: '
                             f'{_verdict(1 / saved, 1.0)})')
        self.out()

    # ---------------------------------------------------------------- profile
    def profile(self, name: str = 'nfnets_mm') -> None:
        """Profiler table of ``name``'s step: first arch and batch, last format, bf16
        if measured (else the first precision), eager."""
        from torch.profiler import ProfilerActivity, profile
        a = self.args
        precision = 'bf16' if 'bf16' in a.precisions else a.precisions[0]
        arch, batch, mf = a.archs[0], a.batch_sizes[0], a.formats[-1]
        s = self.setting(arch, batch, self.size_of(arch, 'train'), precision, mf, 'eager')
        step = TRAIN_STEPS[name](s)
        self.warm(name, step)
        activities = [ProfilerActivity.CPU]
        if self.device.type == 'cuda':
            activities.append(ProfilerActivity.CUDA)
        n = a.profile_steps
        sync(self.device)
        with profile(activities=activities) as prof:
            for _ in range(n):
                step()
            sync(self.device)
        on_device = self.device.type == 'cuda'
        events = prof.key_averages()

        def self_time(e) -> float:
            if not on_device:
                return e.self_cpu_time_total
            device_time = getattr(e, 'self_device_time_total', None)  # torch >= 2.4
            return device_time if device_time is not None else e.self_cuda_time_total

        total = sum(self_time(e) for e in events) or 1.0
        launch_names = ('cudaLaunchKernel', 'cuLaunchKernel', 'cudaLaunchKernelExC',
                        'cuLaunchKernelEx', 'cudaGraphLaunch')
        launches = sum(e.count for e in events if e.key in launch_names) / n
        aten_calls = sum(e.count for e in events if e.key.startswith('aten::')) / n
        kernels = sum(e.count for e in events
                      if on_device and str(getattr(e, 'device_type', '')).endswith('CUDA')) / n
        syncs = sum(e.count for e in events if e.key in ('cudaStreamSynchronize',
                                                         'cudaDeviceSynchronize',
                                                         'cudaMemcpyAsync')) / n
        top = sorted(events, key=self_time, reverse=True)[:a.profile_top]
        clock = 'device' if on_device else 'CPU'
        self.out(f'### Profile: {name} {arch} {precision} train step, batch {batch}, {mf}')
        self.out()
        self.out(f'`torch.profiler` over {n} steps after warm-up; self {clock} time per step. '
                 f'Per step: {launches:.0f} kernel launches (CUDA launch API calls; '
                 f'{kernels:.0f} device kernel events), '
                 f'{aten_calls:.0f} aten op calls, {syncs:.0f} synchronizing / copy calls '
                 '(`cudaStreamSynchronize`, `cudaDeviceSynchronize`, `cudaMemcpyAsync`).')
        self.out()
        rows = [[f'`{e.key[:70]}`', f'{e.count / n:.1f}', f'{self_time(e) / n / 1e3:.3f}',
                 f'{self_time(e) / total * 100:.1f}%'] for e in top]
        for line in md_table(['op', 'calls/step', f'self {clock} ms/step', 'share'], rows,
                             [False, True, True, True]):
            self.out(line)
        self.out()
        del step
        self.free()

    # -------------------------------------------------------------------- agc
    def agc(self) -> None:
        timm_agc = None
        if 'timm' in self.args.contenders:
            from timm.utils.agc import adaptive_clip_grad as timm_agc

        from nfnets_mm.engine.optim_wrappers import adaptive_clip_grad_
        from nfnets_mm.engine.optim_wrappers.agc import agc_reference
        from nfnets_mm.engine.optim_wrappers.agc_fused import CompiledAGC
        a = self.args
        arch, batch, prec, mf = a.archs[0], a.batch_sizes[0], a.precisions[0], a.formats[0]
        s = self.setting(arch, batch, self.size_of(arch, 'train'), prec, mf, 'eager')
        self.header('AGC alone vs the train step',
                    f'Adaptive Gradient Clipping (lambda 0.01, eps 1e-3) on the parameters of '
                    f'the nfnets_mm {arch} classifier (`head.fc.weight` excluded, as the '
                    f'recipe), with the fp32 gradients of a real {prec} train step at batch '
                    f'{batch}, {s.size} px, {mf}.  Gradients are restored before every call '
                    '(a copy, timed separately as "restore" and subtracted).')
        step = TRAIN_STEPS['nfnets_mm'](s)
        self.warm('nfnets_mm', step)
        wrapper, model = step.wrapper, step.model
        wrapper.optimizer.zero_grad(set_to_none=False)
        with wrapper.optim_context(model):
            data = model.data_preprocessor(step.data, True)
            losses = model(**data, mode='loss')
        wrapper.backward(sum(v for k, v in losses.items() if 'loss' in k))
        if s.amp:
            wrapper.loss_scaler.unscale_(wrapper.optimizer)
            wrapper.loss_scaler.update()  # closes this update (no optimizer step)
        params = wrapper.agc_params()
        grads = [p.grad.detach().clone() for p in params]
        every = [p for p in model.parameters() if p.grad is not None]
        timm_params = [p for n, p in model.named_parameters()
                       if p.grad is not None and n != 'head.fc.weight']
        n_el = sum(p.numel() for p in params)

        buffers = [p.grad for p in params]

        def restore():
            # the train step in the same rounds sets .grad to None (zero_grad)
            for p, buf in zip(params, buffers):
                p.grad = buf
            torch._foreach_copy_(buffers, grads)

        # correctness: one call each on the same gradients
        restore()
        stats = adaptive_clip_grad_(params, clipping=0.01, eps=1e-3)
        ours_out = [p.grad.clone() for p in params]
        ref = [agc_reference(p.detach(), g, 0.01, 1e-3) for p, g in zip(params, grads)]
        rel_ref = _max_rel_diff(ours_out, ref)
        rel_timm = None
        if timm_agc is not None:
            restore()
            timm_agc(params, 0.01, 1e-3)
            rel_timm = _max_rel_diff(ours_out, [p.grad for p in params])
        fraction = float(stats.clip_fraction)
        fused, compile_s, rel_fused = None, None, None
        if a.fused_agc:
            fused = CompiledAGC(1e-3, 1e-6, s.compile_kwargs)
            restore()
            t0 = time.perf_counter()
            fused([(0.01, params)])
            sync(self.device)
            compile_s = time.perf_counter() - t0
            rel_fused = _max_rel_diff([p.grad for p in params], ref)
        del ours_out, ref

        w_and_g = [p.detach() for p in params] + buffers
        fns = {
            'restore (copy of the gradients)': restore,
            'nfnets_mm `adaptive_clip_grad_`': lambda: (restore(), adaptive_clip_grad_(
                params, clipping=0.01, eps=1e-3)),
            'nfnets_mm `AGCOptimWrapper._clip_grad` (+ statistics)': lambda: (
                restore(), wrapper._clip_grad()),
            'floor: `_foreach_norm` of all W and G': lambda: (
                restore(), torch._foreach_norm(w_and_g)),
            'floor: `_foreach_mul_(G, 1.0)`': lambda: (restore(), torch._foreach_mul_(
                buffers, 1.0)),
        }
        if fused is not None:
            fns[FUSED_ROW] = lambda: (restore(), fused([(0.01, params)]))
        if timm_agc is not None:
            fns['timm `adaptive_clip_grad`'] = lambda: (restore(), timm_agc(timm_params, 0.01,
                                                                             1e-3))
        fns['full train step (nfnets_mm)'] = step
        for name, fn in fns.items():
            if name != 'full train step (nfnets_mm)':
                for _ in range(a.warmup):
                    fn()
        times = interleaved_times(fns, self.device, a.rounds, a.iters)
        restore_ms = statistics.median(times['restore (copy of the gradients)'])
        step_ms = statistics.median(times['full train step (nfnets_mm)'])
        rows = []
        for name, ts in times.items():
            ms = statistics.median(ts)
            is_step = name.startswith(('full', 'restore'))
            net = ms if is_step else ms - restore_ms
            share = '-' if is_step else f'{net / step_ms * 100:.1f}%'
            rows.append([name, fmt(net, 3), f'{min(ts) - (0 if is_step else restore_ms):.3f}',
                         share])
        self.out(f'{len(params)} AGC tensors, {n_el / 1e6:.2f}M elements ({len(every)} '
                 f'parameters with gradients); {fraction * 100:.1f}% of the units clipped.')
        self.out()
        for line in md_table(['what', 'median ms', 'min ms', 'share of the step'], rows,
                             [False, True, True, True]):
            self.out(line)
        self.out()
        agc_ms = statistics.median(times['nfnets_mm `adaptive_clip_grad_`']) - restore_ms
        if timm_agc is not None:
            timm_ms = statistics.median(times['timm `adaptive_clip_grad`']) - restore_ms
            self.out(f'- Ours / timm time: {agc_ms / timm_ms:.2f}.')
        self.out(f'- AGC share of the step: {agc_ms / step_ms * 100:.1f}% (target <= '
                 f'{TARGET_AGC_SHARE * 100:.0f}%: {_verdict(TARGET_AGC_SHARE, agc_ms / step_ms)}).')
        ok = rel_ref <= 1e-6
        self.out(f'- Largest difference from `agc_reference` relative to the tensor\'s largest '
                 f'clipped gradient: {rel_ref:.2e} (target <= 1e-6: {"met" if ok else "MISSED"})'
                 + (f'; from timm: {rel_timm:.2e}.' if rel_timm is not None else '.'))
        if not ok:
            self.failures.append(f'agc: differs from agc_reference by {rel_ref:.2e}')
        if fused is not None:
            fused_ms = statistics.median(times[FUSED_ROW]) - restore_ms
            fused_ok = rel_fused <= 1e-6
            self.out(f'- Compiled pass (`clip_grad.fused`, torch.compile '
                     f'{s.compile_kwargs or "defaults"}): compiled in {compile_s:.1f} s (first '
                     f'update only); {fused_ms / agc_ms:.2f}x the eager time, '
                     f'{fused_ms / step_ms * 100:.1f}% of the step (target <= '
                     f'{TARGET_AGC_SHARE * 100:.0f}%: '
                     f'{_verdict(TARGET_AGC_SHARE, fused_ms / step_ms)}); largest difference '
                     f'from `agc_reference`: {rel_fused:.2e} (target <= 1e-6: '
                     f'{"met" if fused_ok else "MISSED"}).')
            if not fused_ok:
                self.failures.append(f'agc: the compiled pass differs from agc_reference by '
                                     f'{rel_fused:.2e}')
        self.out()
        self.free()

    # ------------------------------------------------------------------ infer
    def infer(self) -> None:
        a = self.args
        self.header('Inference: nfnets_mm (WS every forward / cached / deployed) vs timm',
                    'Eval-mode classifier forward (logits) on a normalized batch at the '
                    'variant\'s test size; nfnets_mm rows: `ws-every-forward` (gradients '
                    'enabled: weight standardization in every call), `eval-cached` '
                    '(`no_grad`: standardized weights cached), `deployed` '
                    '(`backbone.switch_to_deploy()`: plain convs, what ONNX export uses); '
                    'timm `dm_nfnet_f*` and MMPretrain ResNet-50 under `no_grad`.')
        rows, notes = [], []
        for s in self.settings('test'):
            rows += self._infer_point(s, notes)
        for line in md_table(['arch', 'px', 'batch', 'precision', 'format', 'mode', 'model',
                              'ms', 'img/s', 'time / timm', 'rounds ms'], rows,
                             [False, True, True, False, False, False, False, True, True, True,
                              False]):
            self.out(line)
        self.out()
        for line in notes:
            self.out(line)
        self.out()

    def _infer_point(self, s: Setting, notes: List[str]) -> List[list]:
        a = self.args
        key = f'{s.arch} batch {s.batch} {s.precision} {s.memory_format} {s.mode}'
        try:
            fns = inference_models(s, a.contenders)
        except Exception:
            self.fail(f'infer build {key}')
            return [[s.arch, s.size, s.batch, s.precision, s.memory_format, s.mode, 'ERROR',
                     '-', '-', '-', self.failures[-1][-60:]]]
        g = torch.Generator().manual_seed(0)
        x = torch.randn(s.batch, 3, s.size, s.size, generator=g).to(s.device).contiguous(
            memory_format=s.mf)
        steps = {name: (lambda fn=fn: fn(x)) for name, fn in fns.items()}
        for name, fn in steps.items():
            self.warm(name, fn)
        if 'nfnets_mm eval-cached' in fns and 'nfnets_mm deployed' in fns:
            ref, dep = fns['nfnets_mm eval-cached'](x).float(), fns['nfnets_mm deployed'](x).float()
            diff = float((dep - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            notes.append(f'- {key}: deployed vs eval-cached logits, max abs diff / max abs = '
                         f'{diff:.1e}.')
        times = interleaved_times(steps, self.device, a.rounds, a.iters)
        rows = []
        for name, ts in times.items():
            ms = statistics.median(ts)
            ratio = median_ratio(ts, times['timm']) if 'timm' in times else None
            rows.append([s.arch, s.size, s.batch, s.precision, s.memory_format, s.mode, name,
                         fmt(ms, 2), f'{s.batch / ms * 1e3:.1f}', fmt(ratio, 2),
                         f'{min(ts):.1f}-{max(ts):.1f}'])
            if name == 'nfnets_mm deployed' and ratio is not None and s.device.type == 'cpu' \
                    and s.precision == 'fp32':
                notes.append(f'- {key}: deployed / timm time {ratio:.2f} (CPU fp32 target <= '
                             f'{TARGET_CPU_INFER}: {_verdict(TARGET_CPU_INFER, ratio)}).')
        del steps, fns
        self.free()
        return rows


def _rate(img_s: float) -> str:
    """Images per second: integers from 100 up, one decimal below (CPU rates)."""
    return f'{img_s:.0f}' if img_s >= 100 else f'{img_s:.1f}'


def _mib(value: Optional[float], signed: bool = False) -> str:
    """MiB with about three significant digits (``-`` when missing)."""
    if value is None:
        return '-'
    if 0 < abs(value) < 0.01:
        return f'{value:+.1e}' if signed else f'{value:.1e}'
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def _max_rel_diff(outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> float:
    """Largest ``max|out - ref|`` relative to ``max|ref|``, over pairs of tensors."""
    return max(float((o - r).abs().max() / r.abs().max().clamp_min(1e-30))
               for o, r in zip(outs, refs))


def _stage_order(stage: str):
    """Network order of the breakdown's stages: input to loss."""
    order = ['data_preprocessor', 'stem', 'stages', 'final', 'neck', 'head', 'loss']
    head, _, index = stage.partition('.')
    rank = order.index(head) if head in order else len(order)
    return rank, int(index) if index.isdigit() else 0, stage


def _saved_ratio(results: Dict[tuple, dict], arch: str, batch: int, precision: str,
                 memory_format: str) -> Optional[float]:
    """Activation bytes saved for backward, ours / timm, of the eager rows."""
    ours = results.get((arch, batch, precision, memory_format, 'eager', 'nfnets_mm'), {})
    timm = results.get((arch, batch, precision, memory_format, 'eager', 'timm'), {})
    if ours.get('saved') and timm.get('saved'):
        return ours['saved'] / timm['saved']
    return None


def _verdict(value: float, target: float) -> str:
    """'met' when ``value >= target``, else 'missed by x%'."""
    if math.isnan(value):
        return 'unknown'
    if value >= target:
        return 'met'
    return f'missed by {(1 - value / target) * 100:.0f}%'


def _finite(step) -> bool:
    model = getattr(step, 'model', None)
    if model is None:
        return True
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---------------------------------------------------------------------------- CLI
def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    sub = parser.add_subparsers(dest='command', required=True, metavar='{train,agc,infer}')
    defaults = dict(train=dict(batch_sizes=[64, 128, 256], precisions=['fp32', 'bf16', 'fp16']),
                    agc=dict(batch_sizes=[128], precisions=['bf16']),
                    infer=dict(batch_sizes=[1, 64], precisions=['fp32', 'bf16']))
    for name, help_text in (('train', 'full training step, side by side'),
                            ('agc', 'AGC alone, its share of the step, equality to Eq. 3'),
                            ('infer', 'eval forward: WS / cached / deployed vs timm')):
        p = sub.add_parser(name, help=help_text)
        p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
        p.add_argument('--tiny', action='store_true',
                       help=f'tiny NFNet / ResNet at {TINY_SIZE} px (CPU smoke test)')
        p.add_argument('--archs', nargs='+', default=['F0'],
                       help='NFNet variants (F0 F1 F2 ...), sizes from nfnets_mm/variants.py')
        p.add_argument('--size', type=positive, default=None,
                       help='override the variant\'s train / test size (px)')
        p.add_argument('--batch-sizes', nargs='+', type=positive, default=None,
                       help=f'(default {defaults[name]["batch_sizes"]}; tiny [4])')
        p.add_argument('--precisions', nargs='+', choices=list(PRECISIONS),
                       default=defaults[name]['precisions'])
        p.add_argument('--formats', nargs='+', choices=list(FORMATS),
                       default=['contiguous', 'channels_last'])
        p.add_argument('--modes', nargs='+', choices=list(MODES), default=['eager'])
        p.add_argument('--contenders', nargs='+', choices=list(CONTENDERS),
                       default=list(DEFAULT_CONTENDERS),
                       help='(default: %(default)s; nfnets_mm_unfused_ws: ours with the '
                       'plain autograd weight standardization, train only)')
        p.add_argument('--compile-backend', default=None,
                       help='torch.compile backend (default inductor; aot_eager for CPU tests)')
        p.add_argument('--compile-mode', default=None,
                       help='torch.compile mode, e.g. max-autotune-no-cudagraphs')
        p.add_argument('--warmup', type=positive, default=None, help='(3; tiny 1)')
        p.add_argument('--rounds', type=positive, default=None, help='(5; tiny 2)')
        p.add_argument('--iters', type=positive, default=None, help='steps per round (3; tiny 1)')
        p.add_argument('--threads', type=positive, default=None, help='torch.set_num_threads')
        p.add_argument('--out-dir', default=None, help='write <sub-command>.md here')
        p.add_argument('--append-to', default=None, help='append the tables to this markdown')
        p.add_argument('--force', action='store_true', help='overwrite --out-dir/<name>.md')
        if name == 'agc':
            p.add_argument('--no-fused-agc', dest='fused_agc', action='store_false',
                           help='skip the compiled AGC pass (clip_grad.fused)')
        if name == 'train':
            p.add_argument('--no-profile', dest='profile', action='store_false',
                           help='skip the profiler table')
            p.add_argument('--profile-steps', type=positive, default=3)
            p.add_argument('--profile-top', type=positive, default=15)
            p.add_argument('--profile-contenders', nargs='+', choices=list(CONTENDERS),
                           default=['nfnets_mm', 'timm'], help='profile these steps')
            p.add_argument('--memory-breakdown', action='store_true',
                           help='tables of the bytes saved for backward per stage and module, '
                           'nfnets_mm next to timm (eager points)')
            p.add_argument('--breakdown-top', type=positive, default=20,
                           help='modules in the per-module breakdown table')
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [4] if args.tiny else defaults[args.command]['batch_sizes']
    for key, full, small in (('warmup', 3, 1), ('rounds', 5, 2), ('iters', 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, small if args.tiny else full)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available here; use --device cpu (with '
                     '--tiny for a quick smoke test).')
    from nfnets_mm.variants import get_variant
    for arch in args.archs:
        try:
            get_variant(arch)
        except (KeyError, ValueError) as err:
            parser.error(f'--archs {arch}: {err}')
        if not osp.exists(osp.join(REPO_ROOT, 'configs', 'nfnet', f'{arch.lower()}_imagenet.py')):
            parser.error(f'--archs {arch}: no recipe config configs/nfnet/'
                         f'{arch.lower()}_imagenet.py')
    if args.out_dir is None and args.append_to is None:
        print('note: no --out-dir / --append-to; the tables go to stdout only', flush=True)
    if args.out_dir and not args.force and osp.exists(
            osp.join(args.out_dir, f'{args.command}.md')):
        parser.error(f'{osp.join(args.out_dir, args.command + ".md")} exists; pass --force '
                     'to overwrite it.')
    if args.command != 'train' and 'nfnets_mm' not in args.contenders:
        parser.error(f'{args.command} measures nfnets_mm; keep it in --contenders.')
    train_only = set(args.contenders) - set(DEFAULT_CONTENDERS)
    if args.command != 'train' and train_only:
        parser.error(f'--contenders {" ".join(sorted(train_only))}: a train-only contender; '
                     f'{args.command} takes {", ".join(DEFAULT_CONTENDERS)}.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    bench = Bench(args, argv)
    try:
        getattr(bench, args.command)()
    except Exception:
        bench.fail(args.command)
    bench.out(f'Wall time {time.perf_counter() - start:.0f} s.')
    return bench.finish()


if __name__ == '__main__':
    sys.exit(main())
