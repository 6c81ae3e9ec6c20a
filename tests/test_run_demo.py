"""tools/run_demo.sh picks, exports and prints its thread count (run with a stub Python)."""
import itertools
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = """#!/bin/sh
echo "python sees OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} MKL_NUM_THREADS=${MKL_NUM_THREADS:-unset}"
if [ "$1" = tools/train.py ]; then mkdir -p "$4" && echo ckpt.pth > "$4/last_checkpoint"; fi
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
