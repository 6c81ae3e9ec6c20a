import os.path as osp
import sys

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import nfnets_mm  # noqa: E402,F401  (registers every module)

#: A small NFNet arch with every structural feature of the F-series (grouped 3x3s,
#: transitions with and without stride, SE, final conv) for fast tests.
TINY_NFNET_ARCH = dict(depths=(1, 2, 2, 1), widths=(32, 64, 128, 128), group_width=16,
                       stem_channels=(8, 8, 16, 16))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
