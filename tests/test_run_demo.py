"""tools/run_demo.sh: its thread count, and the classifier -> detector chain (run with a
stub Python that records its command lines)."""
import itertools
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = """#!/bin/sh
echo "python sees OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} MKL_NUM_THREADS=${MKL_NUM_THREADS:-unset}"
echo "argv: $*"
if [ "$1" = tools/train.py ]; then mkdir -p "$4" && echo "$4/ckpt.pth" > "$4/last_checkpoint"; fi
"""
RUNS = itertools.count()


@pytest.fixture
def demo_tree(tmp_path):
    """A checkout holding only tools/run_demo.sh and a .venv whose python is a stub."""
    os.makedirs(tmp_path / 'tools')
    shutil.copy(os.path.join(REPO, 'tools', 'run_demo.sh'), tmp_path / 'tools')
    python = tmp_path / '.venv' / 'bin' / 'python'
    os.makedirs(python.parent)
    python.write_text(STUB)
    python.chmod(0o755)
    return tmp_path


def _run(tree, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    base['WORK_DIR'] = str(tree / 'work_dirs' / f'run{next(RUNS)}')  # timestamps may clash
    proc = subprocess.run(['bash', str(tree / 'tools' / 'run_demo.sh')], cwd=tree,
                          env=dict(base, **env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_threads_default_to_one_and_are_printed(demo_tree):
    out = _run(demo_tree)
    assert re.search(r'^threads: OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ', out, re.M), out
    assert set(re.findall(r'python sees (.*)', out)) == {'OMP_NUM_THREADS=1 MKL_NUM_THREADS=1'}


def test_user_thread_settings_are_kept(demo_tree):
    out = _run(demo_tree, OMP_NUM_THREADS='3')
    assert 'threads: OMP_NUM_THREADS=3 MKL_NUM_THREADS=3' in out
    out = _run(demo_tree, OMP_NUM_THREADS='3', MKL_NUM_THREADS='5')
    assert set(re.findall(r'python sees (.*)', out)) == {'OMP_NUM_THREADS=3 MKL_NUM_THREADS=5'}


def _commands(out):
    return [line[len('argv: '):].split() for line in out.splitlines()
            if line.startswith('argv: ')]


def test_detector_starts_from_the_classifier_and_draws_its_predictions(demo_tree):
    out = _run(demo_tree)
    commands = _commands(out)
    tools = [c[0] for c in commands]
    assert tools == ['tools/data/make_demo_data.py', 'tools/train.py', 'tools/test.py',
                     'tools/train.py', 'tools/test.py']
    cls_train, cls_test, det_train, det_test = commands[1:]
    assert cls_train[1] == 'configs/nfnet/nfnet_demo.py'
    work_dir = cls_train[cls_train.index('--work-dir') + 1]
    classifier = f'{work_dir}/ckpt.pth'
    assert cls_test[1:3] == ['configs/nfnet/nfnet_demo.py', classifier]
    assert det_train[1] == 'configs/mask_rcnn/mask-rcnn_nfnet-demo_fpn_coco.py'
    det_dir = det_train[det_train.index('--work-dir') + 1]
    assert det_dir.startswith(work_dir + '/')
    options = det_train[det_train.index('--cfg-options') + 1:]
    assert options == ['model.backbone.init_cfg.type=Pretrained',
                       'model.backbone.init_cfg.prefix=backbone.',
                       f'model.backbone.init_cfg.checkpoint={classifier}']
    assert det_test[1:3] == [det_train[1], f'{det_dir}/ckpt.pth']
    assert det_test[det_test.index('--show-dir') + 1].startswith(det_dir + '/')


def test_detection_can_be_left_out(demo_tree):
    tools = [c[0] for c in _commands(_run(demo_tree, DETECTION='0'))]
    assert tools == ['tools/data/make_demo_data.py', 'tools/train.py', 'tools/test.py']
