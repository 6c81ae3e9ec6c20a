"""tools/train.py, tools/test.py and tools/dist_train.sh on the demo data (CPU, tiny runs)."""
import os
import os.path as osp
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT as REPO
from conftest import free_port, load_test_tool, tools_on_path
from mmengine.config import Config

from nfnets_mm.engine.hooks import state_dict_digest
from demo_data import ensure_demo_data  # tools/data/demo_data.py (conftest puts it on sys.path)

PYTHON = sys.executable
DEMO = 'configs/nfnet/nfnet_demo.py'
DET_DEMO = 'configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py'
#: Two iterations of 8 images, validation on 12 images, a log line per iteration.
TINY = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=8',
        'train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=12',
        'default_hooks.logger.interval=1']

tools_on_path()
import runner_utils  # noqa: E402
import train as train_tool  # noqa: E402


def run(args, env=None, check=True, timeout=600):
    env_vars = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(args, cwd=REPO, env=env_vars, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-5000:]}')
    return proc


def log_text(work_dir: str) -> str:
    logs = [osp.join(root, f) for root, _, files in os.walk(work_dir) for f in files
            if f.endswith('.log')]
    assert logs, f'no log in {work_dir}'
    return '\n'.join(open(p).read() for p in logs)


@pytest.fixture(scope='module')
def demo_data():
    ensure_demo_data(osp.join(REPO, 'data', 'demo'))


#: stdout + stderr of the ``demo_run`` training command.
DEMO_RUN_OUTPUT = {}


@pytest.fixture(scope='module')
def demo_run(demo_data, tmp_path_factory):
    """Pre-train the demo classifier for 2 iterations; returns its work dir."""
    work_dir = str(tmp_path_factory.mktemp('demo_run'))
    proc = run([PYTHON, 'tools/train.py', DEMO, '--work-dir', work_dir, '--cfg-options',
                *TINY])
    DEMO_RUN_OUTPUT['text'] = proc.stdout + proc.stderr
    return work_dir


def test_train_writes_checkpoint_logs_and_evaluates(demo_run):
    ckpt = torch.load(osp.join(demo_run, 'epoch_1.pth'), map_location='cpu',
                      weights_only=False)
    assert ckpt['meta']['iter'] == 2 and ckpt['meta']['epoch'] == 1
    assert ckpt['state_dict']['head.fc.weight'].shape == (6, 512)
    text = log_text(demo_run)
    for key in ('loss:', 'lr:', 'agc_clip_fraction:', 'Epoch(train) [1][2/2]'):
        assert key in text, key
    assert re.search(r'Epoch\(val\) \[1\]\[\d+/\d+\]\s+accuracy/top1: [\d.]+', text)
    pngs = [f for _, _, files in os.walk(demo_run) for f in files if f.endswith('.png')]
    assert pngs == ['training_curves.png']
    # the per-kind AGC statistics reach the log
    for key in ('agc_clip_fraction_weights:', 'agc_clip_fraction_gains_biases:',
                'agc_clip_fraction_skip_gains:', 'agc_max_clip_ratio:'):
        assert key in text, key
    if not torch.cuda.is_available():  # no "pin_memory ... no accelerator" warnings
        assert 'no accelerator is found' not in DEMO_RUN_OUTPUT['text'] + text


def test_train_refuses_a_work_dir_with_checkpoints(demo_run):
    proc = run([PYTHON, 'tools/train.py', DEMO, '--work-dir', demo_run], check=False)
    assert proc.returncode != 0 and 'already holds checkpoints' in proc.stderr


def test_resume_without_last_checkpoint_continues_from_the_newest_checkpoint(demo_run,
                                                                           tmp_path):
    """Issue 9.2: a work dir with epoch_1.pth but no last_checkpoint (e.g. killed while
    writing it, or copied without it) resumes from epoch_1.pth instead of training from
    scratch over it."""
    work_dir = tmp_path / 'copied'
    work_dir.mkdir()
    shutil.copy(osp.join(demo_run, 'epoch_1.pth'), work_dir / 'epoch_1.pth')
    before = state_dict_digest(torch.load(work_dir / 'epoch_1.pth', map_location='cpu',
                                          weights_only=False)['state_dict'])
    cfg = [c.replace('max_epochs=1', 'max_epochs=2') for c in TINY
           if not c.startswith('val_dataloader')]
    run([PYTHON, 'tools/train.py', DEMO, '--resume', '--work-dir', str(work_dir),
         '--no-validate', '--cfg-options', *cfg])
    text = log_text(str(work_dir))
    assert 'Epoch(train) [2][2/2]' in text and 'Epoch(train) [1]' not in text
    assert f'resuming from its newest epoch checkpoint {work_dir}/epoch_1.pth' in text
    ckpt = torch.load(work_dir / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4 and ckpt['meta']['epoch'] == 2
    after = state_dict_digest(torch.load(work_dir / 'epoch_1.pth', map_location='cpu',
                                         weights_only=False)['state_dict'])
    assert after == before


def test_resume_with_checkpoint_hook_out_dir(demo_data, tmp_path):
    """CheckpointHook(out_dir=...) saves to <out_dir>/<work dir name> but writes
    last_checkpoint into the work dir: --resume follows it (it raised FileNotFoundError,
    looking for the file in the work dir), and a new run there is refused."""
    work_dir, store = tmp_path / 'work' / 'run', tmp_path / 'store'
    folder = store / 'run'
    base = [PYTHON, 'tools/train.py', DEMO, '--work-dir', str(work_dir), '--no-validate',
            '--cfg-options', f'default_hooks.checkpoint.out_dir={store}',
            *(c for c in TINY if not c.startswith('val_dataloader'))]
    run(base)
    assert (folder / 'epoch_1.pth').is_file() and not (work_dir / 'epoch_1.pth').exists()
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(folder / 'epoch_1.pth')

    refused = run(base, check=False)
    assert refused.returncode != 0 and 'already holds checkpoints' in refused.stderr
    assert str(folder / 'epoch_1.pth') in refused.stderr

    resumed = [c.replace('max_epochs=1', 'max_epochs=2') for c in base]
    run(resumed[:3] + ['--resume'] + resumed[3:])
    text = log_text(str(work_dir))
    assert 'Epoch(train) [2][2/2]' in text
    assert f'Resuming from {folder}/epoch_1.pth (named by {work_dir}/last_checkpoint)' in text
    ckpt = torch.load(folder / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4 and ckpt['meta']['epoch'] == 2


def test_test_tool_prints_accuracy_and_dumps_predictions(demo_run, tmp_path):
    out = str(tmp_path / 'preds.pkl')
    args = [PYTHON, 'tools/test.py', DEMO, osp.join(demo_run, 'epoch_1.pth'), '--work-dir',
            str(tmp_path / 'test'), '--out', out, '--cfg-options',
            'test_dataloader.dataset.indices=12']
    proc = run(args)
    match = re.search(r'accuracy/top1: ([\d.]+)', proc.stdout + proc.stderr)
    assert match, proc.stdout[-2000:]
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 12
    correct = sum(int(p['pred_label'].item() == p['gt_label'].item()) for p in preds)
    assert abs(float(match.group(1)) - 100. * correct / 12) < 1e-3
    again = run(args, check=False)
    assert again.returncode != 0 and 'pass --force' in again.stderr


def test_dist_train_two_ranks_agree(demo_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): 2 iterations, checkpoint, eval, same weights."""
    port = free_port()
    work_dir = str(tmp_path / 'dist')
    cfg = [c.replace('batch_size=8', 'batch_size=4') for c in TINY]  # 16 / 2 ranks / 4
    run(['bash', 'tools/dist_train.sh', DEMO, '2', '--work-dir', work_dir, '--cfg-options',
         'env_cfg.dist_cfg.backend=gloo', *cfg], env=dict(PYTHON=PYTHON, PORT=str(port)))
    text = log_text(work_dir)
    assert 'world_size: 2' in text.replace('  ', ' ') or 'Distributed training: True' in text
    assert 'Epoch(train) [1][2/2]' in text
    match = re.search(r'identical across 2 rank\(s\) after training; sha256 '
                      r'rank0=([0-9a-f]{64}), rank1=([0-9a-f]{64})', text)
    assert match, text[-3000:]
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu',
                      weights_only=False)
    assert ckpt['meta']['iter'] == 2
    # Rank 0 saved the checkpoint; rank 1's own weights hash to the same digest.
    assert match.group(1) == match.group(2) == state_dict_digest(ckpt['state_dict'])
    assert re.search(r'Epoch\(val\) \[1\]\[\d+/\d+\]\s+accuracy/top1', text)


def test_finetune_with_a_new_head(demo_run, tmp_path):
    """Fine-tune the demo model on 3 re-labelled classes: head skipped, backbone loaded."""
    keep = {'circle': 0, 'square': 1, 'triangle': 2}
    lines = []
    with open(osp.join(REPO, 'data/demo/cls/meta/train.txt')) as f:
        for line in f:
            path, _ = line.split()
            name = path.split('/')[0]
            if name in keep and sum(l.startswith(name) for l in lines) < 4:
                lines.append(f'{path} {keep[name]}')
    ann = tmp_path / 'subset.txt'
    ann.write_text('\n'.join(lines) + '\n')
    work_dir = str(tmp_path / 'ft')
    pretrained = osp.join(demo_run, 'epoch_1.pth')
    proc = run([PYTHON, 'tools/train.py', DEMO, '--work-dir', work_dir, '--no-validate',
         '--cfg-options', f'load_from={pretrained}', 'model.head.num_classes=3',
         'model.data_preprocessor.num_classes=3', f'train_dataloader.dataset.ann_file={ann}',
         'train_dataloader.dataset.metainfo.classes=[circle,square,triangle]',
         'train_dataloader.batch_size=6', 'train_cfg.max_epochs=1',
         'optim_wrapper.optimizer.lr=0.0'])
    # MMEngine prints the load report (to stdout, not the log file).
    report = proc.stdout + proc.stderr
    assert 'do not match exactly' in report
    skipped = set(re.findall(r'size mismatch for ([\w.]+):', report))
    assert skipped == {'head.fc.weight', 'head.fc.bias'}
    assert 'missing keys in source' not in report and 'unexpected key in source' not in report
    old = torch.load(pretrained, map_location='cpu', weights_only=False)['state_dict']
    new = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu',
                     weights_only=False)['state_dict']
    assert new['head.fc.weight'].shape == (3, 512)
    backbone = [k for k in old if k.startswith('backbone.')]
    assert backbone and all(torch.equal(old[k], new[k]) for k in backbone)


def test_detection_demo_trains_through_the_mmdet_scope(demo_run, tmp_path):
    """The demo detector, its backbone initialised from the demo classifier's checkpoint
    (as tools/run_demo.sh chains them)."""
    work_dir = str(tmp_path / 'det')
    classifier = osp.join(demo_run, 'epoch_1.pth')
    proc = run([PYTHON, 'tools/train.py', DET_DEMO, '--work-dir', work_dir, '--cfg-options',
         'model.backbone.init_cfg.type=Pretrained', 'model.backbone.init_cfg.prefix=backbone.',
         f'model.backbone.init_cfg.checkpoint={classifier}',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
         'train_dataloader.dataset.indices=4', 'val_dataloader.dataset.indices=2',
         'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=1'])
    text = log_text(work_dir)
    assert 'agc_clip_fraction' in text and 'loss_mask' in text
    assert 'coco/bbox_mAP' in text and 'coco/segm_mAP' in text
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    # every backbone weight came from the classifier; only its final conv was left out
    report = proc.stdout + proc.stderr + text
    assert f'load backbone. in model from: {classifier}' in report
    assert 'missing keys in source state_dict' not in report
    assert re.search(r'unexpected key in source state_dict: final\.conv\.weight, '
                     r'final\.conv\.bias, final\.conv\.gain\s', report)


@pytest.mark.parametrize('before,after', [('AGCOptimWrapper', 'AmpAGCOptimWrapper'),
                                          ('OptimWrapper', 'AmpOptimWrapper'),
                                          ('AmpAGCOptimWrapper', 'AmpAGCOptimWrapper')])
def test_amp_flag_keeps_agc(before, after):
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    cfg.optim_wrapper.type = before
    args = train_tool.parse_args([DEMO, '--amp', '--work-dir', '/nonexistent/x'])
    cfg = train_tool.merge_args(cfg, args)
    assert cfg.optim_wrapper.type == after
    if after == 'AmpAGCOptimWrapper':  # bf16 where native, else fp16 with a dynamic scale
        assert (cfg.optim_wrapper.dtype, cfg.optim_wrapper.loss_scale) == ('auto', 'auto')
    else:
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.clip_grad.type == 'agc'


def test_amp_flag_on_a_detector_autocasts_fp16():
    """mmcv's RoIAlign has no bf16 kernel: --amp on an MMDetection config stays fp16."""
    cfg = Config(dict(default_scope='mmdet', optim_wrapper=dict(type='AGCOptimWrapper')))
    runner_utils.apply_amp(cfg)
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.dtype) == ('AmpAGCOptimWrapper', 'float16')


def test_amp_flag_rejects_unknown_wrappers():
    cfg = Config(dict(optim_wrapper=dict(type='MyWrapper')))
    with pytest.raises(ValueError, match='AmpAGCOptimWrapper'):
        runner_utils.apply_amp(cfg)


def test_tools_reject_unsupported_scopes(tmp_path):
    cfg = Config(dict(default_scope='mmseg'))
    with pytest.raises(ValueError, match="mmpretrain', 'mmdet"):
        runner_utils.check_scope(cfg, 'x.py')


def _schedule(cfg_options):
    options = ['--cfg-options', *cfg_options] if cfg_options else []
    args = train_tool.parse_args([DEMO, '--work-dir', '/nonexistent/x', *options])
    cfg = train_tool.merge_args(Config.fromfile(osp.join(REPO, DEMO)), args)
    return [(s.type, s.begin, s.end) for s in cfg.param_scheduler]


def test_max_epochs_on_the_command_line_moves_the_schedule_end():
    """--cfg-options train_cfg.max_epochs=N: the cosine schedule ends at N (it ended at
    the config's 40 and the LR never decayed); the warmup is left alone."""
    original = _schedule([])
    max_epochs = Config.fromfile(osp.join(REPO, DEMO)).train_cfg.max_epochs
    cosine = [s for s in original if s[0] == 'CosineAnnealingLR']
    assert cosine and cosine[0][2] == max_epochs
    moved = _schedule(['train_cfg.max_epochs=7'])
    assert moved == [(t, b, 7 if e == max_epochs else e) for t, b, e in original]
    assert moved != original
    # a schedule given on the command line is the user's: left as given
    explicit = _schedule(['train_cfg.max_epochs=7', 'param_scheduler.1.end=30'])
    assert explicit == original[:1] + [original[1][:2] + (30, )] + original[2:]
    warmup_end = max(s[2] for s in original if s[0] == 'LinearLR')
    with pytest.warns(UserWarning, match=r'param_scheduler\[1\] \(CosineAnnealingLR\) '
                      'begins at .*does not run'):
        assert _schedule([f'train_cfg.max_epochs={warmup_end}']) == original


def test_iteration_schedules_follow_max_iters():
    cfg = Config(dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=100),
                      param_scheduler=[dict(type='LinearLR', by_epoch=False, begin=0, end=10),
                                       dict(type='CosineAnnealingLR', by_epoch=False,
                                            begin=10, end=100)]))
    before = runner_utils.schedule_snapshot(cfg)
    cfg.merge_from_dict({'train_cfg.max_iters': 50})
    notes = runner_utils.follow_training_length(cfg, before)
    assert [s.end for s in cfg.param_scheduler] == [10, 50]
    assert notes == ['param_scheduler[1] (CosineAnnealingLR): end 100 -> 50, following '
                     'train_cfg.max_iters']


def test_pin_memory_is_turned_off_without_cuda(monkeypatch):
    cfg = Config(dict(train_dataloader=dict(pin_memory=True), val_dataloader=dict()))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    runner_utils.unpin_without_cuda(cfg, ['train_dataloader', 'val_dataloader'])
    assert cfg.train_dataloader.pin_memory is True
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    runner_utils.unpin_without_cuda(cfg, ['train_dataloader', 'val_dataloader'])
    assert cfg.train_dataloader.pin_memory is False and 'pin_memory' not in cfg.val_dataloader


def test_test_tool_without_checkpoint_uses_load_from_or_says_what_is_missing(demo_run,
                                                                           tmp_path):
    refused = run([PYTHON, 'tools/test.py', DEMO, '--work-dir', str(tmp_path / 'none')],
                  check=False)
    assert refused.returncode != 0
    assert 'No checkpoint to evaluate' in refused.stderr and 'load_from' in refused.stderr
    ckpt = osp.join(demo_run, 'epoch_1.pth')
    proc = run([PYTHON, 'tools/test.py', DEMO, '--work-dir', str(tmp_path / 'cfg'),
                '--cfg-options', f'load_from={ckpt}', 'test_dataloader.dataset.indices=6'])
    assert re.search(r'accuracy/top1: [\d.]+', proc.stdout + proc.stderr)
    assert f'Load checkpoint from {ckpt}' in proc.stdout + proc.stderr


def test_show_dir_is_relative_to_the_current_directory(demo_run, tmp_path):
    """--show-dir out writes ./out (it went to <work_dir>/<timestamp>/out for detectors);
    a non-empty directory is refused without --force."""
    test_tool = load_test_tool()
    for config in (DEMO, DET_DEMO):
        cfg = Config.fromfile(osp.join(REPO, config))
        scope = cfg.default_scope
        args = test_tool.parse_args([config, 'x.pth', '--show-dir', 'shown'])
        cfg = test_tool.merge_args(cfg, args, scope)
        hook = cfg.default_hooks.visualization
        out = hook.get('test_out_dir', hook.get('out_dir'))
        assert out == osp.join(os.getcwd(), 'shown'), (config, out)
    full = tmp_path / 'full'
    full.mkdir()
    (full / 'mine.png').write_bytes(b'x')
    with pytest.raises(FileExistsError, match='--force'):
        test_tool.main([DEMO, osp.join(demo_run, 'epoch_1.pth'), '--show-dir', str(full)])
    assert (full / 'mine.png').read_bytes() == b'x'


@pytest.mark.parametrize('config,option,length', [
    ('configs/nfnet/f0_imagenet.py', 'train_cfg.max_epochs=40', 40),
    ('configs/nfnet/f0_finetune_imagenet.py', 'train_cfg.max_iters=1000', 1000),
])
def test_recipe_schedule_follows_a_shorter_run(config, option, length):
    """--cfg-options max_epochs / max_iters on the recipes: the cosine ends at the new
    length and decays to 0 there (its period follows), instead of stopping near its peak."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(osp.join(REPO, config))
    args = train_tool.parse_args([config, '--work-dir', '/nonexistent/x',
                                  '--cfg-options', option])
    cfg = train_tool.merge_args(cfg, args)
    cosine = cfg.param_scheduler[-1]
    assert cosine.type == 'CosineAnnealingLR' and cosine.end == length
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.)
    kwargs = {k: v for k, v in cosine.items()
              if k not in ('type', 'by_epoch', 'convert_to_iter_based', 'begin', 'end')}
    steps = cosine.end - cosine.get('begin', 0)  # the scheduler's own steps, from 0
    scheduler = PARAM_SCHEDULERS.get('CosineAnnealingLR')(optimizer, begin=0, end=steps,
                                                          **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]['lr'])
        scheduler.step()
    assert lrs[0] == 1. and lrs[-1] < 0.01  # (a period left at the old length: ~0.98)
    # a config that spells the period out moves with it too
    spelled = Config.fromfile(osp.join(REPO, config))
    spelled.param_scheduler[-1].T_max = spelled.param_scheduler[-1].end - \
        spelled.param_scheduler[-1].get('begin', 0)
    spelled = train_tool.merge_args(spelled, args)
    assert spelled.param_scheduler[-1].T_max == length - spelled.param_scheduler[-1].get('begin', 0)
