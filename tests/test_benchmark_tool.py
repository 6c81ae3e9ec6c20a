"""``tools/analysis/benchmark.py``: the tiny CPU path of every sub-command, in-process.

Each run writes ``<sub-command>.md`` under ``--out-dir``; the tests parse its tables and
check the expected rows and columns and that every timing is a finite positive number.
The GPU script ``tools/analysis/gpu_benchmarks.sh`` runs the same sub-commands with
``--device cuda``; its own CPU dry run (``DEVICE=cpu``) is checked at the end.
"""
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ANALYSIS = osp.join(REPO_ROOT, 'tools', 'analysis')
if ANALYSIS not in sys.path:
    sys.path.insert(0, ANALYSIS)

import benchmark  # noqa: E402
from bench_common import parse_md_table  # noqa: E402

FAST = ['--device', 'cpu', '--tiny', '--threads', '1', '--warmup', '1', '--rounds', '2',
        '--iters', '1']


def tables(path: str):
    """Every markdown table in ``path`` as a list of row dicts, in file order."""
    with open(path) as f:
        lines = f.read().splitlines()
    found, current = [], []
    for line in lines + ['']:
        if line.startswith('|'):
            current.append(line)
        elif current:
            found.append(parse_md_table(current))
            current = []
    return found


def number(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value) and value > 0, cell
    return value


def test_train_tables(tmp_path):
    out = tmp_path / 'out'
    code = benchmark.main(['train', *FAST, '--precisions', 'fp32', 'bf16', '--formats',
                           'contiguous', '--profile-steps', '1', '--profile-top', '5',
                           '--memory-breakdown', '--breakdown-top', '6', '--out-dir', str(out)])
    assert code == 0
    text = (out / 'train.md').read_text()
    assert 'Command: `python tools/analysis/benchmark.py train' in text
    (steps, fp32_stages, fp32_modules, bf16_stages, bf16_modules, best, profile,
     timm_profile) = tables(str(out / 'train.md'))
    # one row per precision x contender, ours first
    assert [(r['precision'], r['contender']) for r in steps] == [
        (p, c) for p in ('fp32', 'bf16') for c in ('nfnets_mm', 'timm', 'resnet50')]
    for row in steps:
        ms, img_s = number(row['ms/step']), number(row['img/s'])
        assert img_s == pytest.approx(4 / ms * 1e3, rel=0.02, abs=0.51)  # both rounded
        assert row['px'] == '32' and row['batch'] == '4' and row['mode'] == 'eager'
        number(row['time / nfnets_mm'])
        assert row['peak GiB'] == '-'  # CPU: no allocator statistics
        number(row['saved MiB']), number(row['saved params MiB']), number(row['saved / timm'])
    assert {r['contender']: r['time / nfnets_mm'] for r in steps[:3]}['nfnets_mm'] == '1.00'
    assert {r['contender']: r['saved / timm'] for r in steps[:3]}['timm'] == '1.00'
    # bf16 autocast saves bf16 copies: fewer bytes of activations than fp32
    saved = {(r['precision'], r['contender']): float(r['saved MiB']) for r in steps}
    assert saved['bf16', 'nfnets_mm'] < saved['fp32', 'nfnets_mm']
    for precision, stages, modules in (('fp32', fp32_stages, fp32_modules),
                                       ('bf16', bf16_stages, bf16_modules)):
        # the per-stage breakdown adds up to the table's total, for both networks
        for name in ('nfnets_mm', 'timm'):
            total = sum(float(r[f'{name} MiB']) for r in stages)
            assert total == pytest.approx(saved[precision, name], abs=0.01 * len(stages))
        assert [r['stage'] for r in stages][:2] == ['stem', 'stages.0']
        assert 'stages.3' in [r['stage'] for r in stages]
        assert len(modules) == 7 and modules[-1]['module'].startswith('(')
        for row in modules:
            delta = float(row['nfnets_mm MiB']) - float(row['timm MiB'])
            assert float(row['nfnets_mm - timm MiB']) == pytest.approx(delta, abs=0.011)
    assert [r['precision'] for r in best] == ['bf16', 'fp32']
    for row in best:
        number(row['speed ours / timm'])
        number(row['saved for backward ours / timm'])
    assert '### Profile: nfnets_mm F0 bf16' in text and '### Profile: timm F0 bf16' in text
    assert len(profile) == len(timm_profile) == 5
    for row in profile + timm_profile:
        number(row['calls/step'])
        assert float(row['self CPU ms/step']) >= 0
    assert 'AMP bf16 / fp32 throughput' in text and 'ours / timm speed' in text
    assert 'bytes saved for backward ours / timm' in text


@pytest.mark.parametrize('dtype', ['float32', 'float64', 'bfloat16', 'float16'])
def test_saved_tensor_counter_is_exact(dtype):
    """Linear -> ReLU -> Linear -> square -> mean, bytes computed by hand.

    ``fc1`` saves its input x (its weight's gradient needs it; x needs none, so the
    weight is not saved); ReLU saves its output r; ``fc2`` saves r again (one storage,
    counted once) and its weight (a parameter, ``weight.t()`` is a view of it); the square
    saves its input y; the mean saves nothing.  A side branch whose output is dropped
    holds nothing by the time the loss exists.
    """
    import torch
    import torch.nn as nn
    from bench_common import count_saved
    dtype = getattr(torch, dtype)
    size = torch.empty((), dtype=dtype).element_size()
    n, d_in, d_hidden, d_out = 11, 3, 7, 5
    model = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))
    model.to(dtype)
    side = nn.Linear(d_in, 2).to(dtype)
    x = torch.randn(n, d_in).to(dtype)

    def forward_loss():
        side(torch.randn(n, d_in).to(dtype)).relu()  # dropped: its saves die with it
        return (model(x) ** 2).mean()

    loss, counter = count_saved(forward_loss, model)
    summary = counter.summary()
    assert summary['activations'] == size * n * (d_in + d_hidden + d_out)
    assert summary['params'] == size * d_hidden * d_out
    assert summary['storages'] == 4  # x, r, fc2.weight, y
    assert counter.by_module() == {'0': size * n * d_in, '1': size * n * d_hidden,
                                   '': size * n * d_out}
    assert counter.by_module(params=True) == {'2': size * d_hidden * d_out}
    loss.backward()  # the detached aliases the hooks hand autograd give the true gradient
    reference = model[2].weight.grad.clone()
    model.zero_grad()
    (model(x) ** 2).mean().backward()
    assert torch.equal(model[2].weight.grad, reference)


def test_module_names_are_shared_with_timm():
    """Every module of timm's NFNet has a counterpart of ours in the breakdown naming."""
    from bench_models import common_module_name, nfnet_config, timm_nfnet
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import nfnets_mm  # noqa: F401
    init_default_scope('mmpretrain')
    ours = MODELS.build(nfnet_config('F0', tiny=True).model)
    timm = timm_nfnet('F0', tiny=True)
    our_names = {common_module_name('nfnets_mm', n) for n, _ in ours.named_modules()}
    timm_names = {common_module_name('timm', n) for n, _ in timm.named_modules()}
    assert timm_names <= our_names, sorted(timm_names - our_names)
    assert {'stem.act1', 'stages.1.0.pre_act', 'stages.1.0.act2b', 'stages.1.0.se',
            'stages.1.0.shortcut_conv', 'final.conv', 'loss'} <= timm_names


def test_unfused_ws_contender():
    """``nfnets_mm_unfused_ws`` switches its own convs to the plain WS formula only."""
    import torch
    from bench_models import TRAIN_STEPS, Setting
    from nfnets_mm.models.layers import ScaledStdConv2d
    setting = Setting(arch='F0', batch=2, size=32, precision='fp32',
                      memory_format='contiguous', mode='eager', device=torch.device('cpu'),
                      tiny=True)
    unfused = TRAIN_STEPS['nfnets_mm_unfused_ws'](setting)
    fused = TRAIN_STEPS['nfnets_mm'](setting)
    flags = [[m.fused_ws for m in step.model.modules() if isinstance(m, ScaledStdConv2d)]
             for step in (unfused, fused)]
    assert flags[0] and not any(flags[0]) and all(flags[1])
    assert ScaledStdConv2d.fused_ws is True
    assert math.isfinite(float(unfused.forward_loss().detach()))


def test_agc_table(tmp_path):
    out = tmp_path / 'out'
    assert benchmark.main(['agc', *FAST, '--precisions', 'bf16', '--compile-backend',
                           'aot_eager', '--out-dir', str(out)]) == 0
    text = (out / 'agc.md').read_text()
    (rows, ) = tables(str(out / 'agc.md'))
    what = [r['what'] for r in rows]
    assert what[0].startswith('restore') and what[-1].startswith('full train step')
    assert any('adaptive_clip_grad_' in w for w in what)
    assert any(w.startswith('timm') for w in what)
    number(rows[-1]['median ms'])
    for row in rows[1:-1]:
        assert row['share of the step'].endswith('%')
        assert math.isfinite(float(row['median ms']))
    assert 'agc_reference' in text and '(target <= 1e-6: met)' in text
    # the compiled pass (clip_grad.fused): its row, compile time and equality to Eq. 3
    assert any('CompiledAGC' in w for w in what)
    compiled = [line for line in text.splitlines() if line.startswith('- Compiled pass')]
    assert len(compiled) == 1 and "'backend': 'aot_eager'" in compiled[0]
    assert compiled[0].endswith('(target <= 1e-6: met).')


def test_infer_table(tmp_path):
    out = tmp_path / 'out'
    assert benchmark.main(['infer', *FAST, '--precisions', 'fp32', '--formats', 'contiguous',
                           '--out-dir', str(out)]) == 0
    (rows, ) = tables(str(out / 'infer.md'))
    assert [r['model'] for r in rows] == [
        'nfnets_mm ws-every-forward', 'nfnets_mm eval-cached', 'nfnets_mm deployed', 'timm',
        'resnet50']
    for row in rows:
        number(row['ms'])
        number(row['time / timm'])
    assert rows[3]['time / timm'] == '1.00'
    text = (out / 'infer.md').read_text()
    assert 'deployed vs eval-cached logits, max abs diff / max abs = 0.0e+00' in text


def test_output_files_are_kept_and_appended(tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'infer.md').write_text('earlier results\n')
    with pytest.raises(SystemExit):
        benchmark.main(['infer', *FAST, '--out-dir', str(out)])
    assert 'exists; pass --force' in capsys.readouterr().err
    assert (out / 'infer.md').read_text() == 'earlier results\n'
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n\nold section\n')
    assert benchmark.main(['infer', *FAST, '--precisions', 'fp32', '--formats', 'contiguous',
                           '--contenders', 'nfnets_mm', '--append-to', str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith('# Benchmarks\n\nold section\n')
    assert '## Inference: nfnets_mm' in text


@pytest.mark.parametrize('argv, message', [
    (['train', '--device', 'cpu', '--archs', 'F9'], '--archs F9'),
    (['train', '--device', 'cpu', '--precisions', 'fp8'], "invalid choice: 'fp8'"),
    (['infer', '--device', 'cpu', '--contenders', 'timm'], 'keep it in --contenders'),
    (['agc', '--device', 'cpu', '--contenders', 'nfnets_mm', 'nfnets_mm_unfused_ws'],
     'a train-only contender'),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(argv)
    assert message in capsys.readouterr().err


def test_gpu_script_commands_parse():
    """The one GPU command: every part's command line (DRYRUN=1 prints them) is valid.

    The commands are parsed here with ``--device cpu`` (no CUDA on the test machine); a
    real CPU run of the script (``DEVICE=cpu``) takes minutes of imports and is what
    ``docs/benchmarks.md`` records as its dry run.
    """
    script = osp.join(ANALYSIS, 'gpu_benchmarks.sh')
    env = dict(os.environ, DRYRUN='1', OUT='/nonexistent/out')
    result = subprocess.run(['bash', script], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.strip().splitlines()
    names = ['train_f0_b128', 'agc', 'train_compile', 'agc_fused', 'infer',
             'train_f0_batches', 'train_f0_fp16', 'train_f1_f2']
    assert [c.rsplit('/.', 1)[1] for c in commands] == names
    for command in commands:
        argv = command.split()[2:]  # drop "<python> tools/analysis/benchmark.py"
        argv[argv.index('--device') + 1] = 'cpu'
        args = benchmark.parse_args(argv)
        assert args.out_dir.startswith('/nonexistent/out/.')
        assert args.warmup == 3 and args.rounds == 5 and args.iters == 3
    assert '--modes eager compile' in commands[2]
    assert '--no-fused-agc' in commands[1] and '--no-fused-agc' not in commands[3]
    assert '--archs F1 F2' in commands[7]
    bad = subprocess.run(['bash', script], cwd=REPO_ROOT, env=dict(env, PARTS='nope'),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and 'valid parts: train_f0_b128 agc' in bad.stderr


def test_train_step_gets_what_the_recipe_loader_gives():
    """The recipe mixes in the loader: the step's samples carry its soft targets."""
    import torch
    from bench_models import Setting, mixes_in_step, nfnet_config, nfnets_mm_train_step
    setting = Setting(arch='F0', batch=4, size=32, precision='fp32',
                      memory_format='contiguous', mode='eager', device=torch.device('cpu'),
                      tiny=True)
    step = nfnets_mm_train_step(setting)
    samples = step.data['data_samples']
    assert not mixes_in_step(nfnet_config('F0', tiny=True))  # the recipe as configured
    for sample in samples:
        assert sample.gt_score.shape == (1000, )
        assert float(sample.gt_score.sum()) == pytest.approx(1.0)
        assert int(sample.gt_score.argmax()) == int(sample.gt_label)
    losses = step()
    assert math.isfinite(float(losses['loss']))
