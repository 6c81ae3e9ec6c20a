"""``import nfnets_mm`` loads no imaging or plotting library of its own (issue 13 item 4).

Pillow and matplotlib still end up in ``sys.modules``: MMPretrain, which the package
registers its head and transforms into, imports mmcv (Pillow) and MMDetection
(matplotlib).  What the package controls is that none of *its* modules runs an import of
them while ``import nfnets_mm`` executes (the demo data generator lives in ``tools/data``,
the curve plot imports matplotlib when it draws).  The check records, in a fresh
interpreter, every import statement executed by a module of the package.
"""
import json
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FORBIDDEN = ('PIL', 'matplotlib')

PROBE = r'''
import builtins, json, sys
original = builtins.__import__
seen = []

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get('__name__', '')
    if importer.split('.')[0] == 'nfnets_mm' and level == 0:
        seen.append([importer, name])
    return original(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
import nfnets_mm  # noqa: E402
builtins.__import__ = original
print(json.dumps(dict(imports=seen, demo_data=[m for m in sys.modules
                                               if m.endswith('demo_data')])))
'''


def _package_imports():
    proc = subprocess.run([sys.executable, '-c', PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={'OMP_NUM_THREADS': '1',
                                                       'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_nfnets_mm_runs_no_pil_or_matplotlib_import():
    result = _package_imports()
    imports = result['imports']
    # the probe works: it sees the package's own imports of its dependencies
    assert any(name.startswith('mmengine') for _, name in imports), imports
    offending = [(importer, name) for importer, name in imports
                 if name.split('.')[0] in FORBIDDEN]
    assert offending == [], offending
    assert result['demo_data'] == []
