"""Signal propagation at init follows the analytic NF variance schedule (paper Sec. 3)."""
import importlib.util
import os.path as osp

import pytest
import torch

from nfnets_mm.analysis import expected_block_output_variances, signal_propagation_stats
from nfnets_mm.models import NFNet, NFResNet


def test_nf_resnet_stream_follows_expected_variance():
    model = NFResNet(depth=50, drop_path_rate=0.).eval()
    stats = signal_propagation_stats(model, torch.randn(8, 3, 64, 64), skip_gain=1.0)
    expected = expected_block_output_variances(model)
    assert len(stats) == len(expected) == 16
    for s, e in zip(stats, expected):
        assert abs(s.mean_sq / e - 1) < 0.2, (s.name, s.mean_sq, e)
        assert s.avg_channel_sq_mean < 0.1 * s.mean_sq, (s.name, s.avg_channel_sq_mean)
    # skip gains are restored afterwards
    assert all(b.skip_gain.item() == 0 for st in model.stages for b in st)


def test_nfnet_stream_grows_by_alpha_squared_per_block():
    """NFNet-F0: absolute schedule in stage 0; within later stages the growth per block
    relative to the transition block's output follows the schedule (the 2x2 average
    pool of stride-2 shortcuts rescales the level, see the module docstring)."""
    model = NFNet(arch='F0', drop_path_rate=0.).eval()
    stats = signal_propagation_stats(model, torch.randn(4, 3, 128, 128), skip_gain=1.0)
    expected = expected_block_output_variances(model)
    assert abs(stats[0].mean_sq / expected[0] - 1) < 0.2
    start = 0
    for stage in model.stages:
        for k in range(start, start + len(stage)):
            measured = stats[k].mean_sq / stats[start].mean_sq
            analytic = expected[k] / expected[start]
            assert abs(measured / analytic - 1) < 0.2, (stats[k].name, measured, analytic)
            assert stats[k].avg_channel_sq_mean < 0.15 * stats[k].mean_sq, stats[k]
        start += len(stage)


def test_skip_init_keeps_stream_flat_and_tool_writes_plot(tmp_path):
    model = NFNet(arch=dict(depths=(2, 2), widths=(64, 128), group_width=32), drop_path_rate=0.)
    x = torch.randn(4, 3, 32, 32)
    flat = signal_propagation_stats(model, x, skip_gain=None)
    # with skip gains at 0 the branches add nothing: only transitions change the stream
    assert flat[1].mean_sq == pytest.approx(flat[0].mean_sq, rel=1e-5)
    assert flat[3].mean_sq == pytest.approx(flat[2].mean_sq, rel=1e-5)

    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'analysis',
                    'signal_propagation.py')
    spec = importlib.util.spec_from_file_location('spp_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'spp.png'
    tool.main(['--model', 'NFResNet', '--depth', '26', '--size', '32', '--batch', '2',
               '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(SystemExit, match='exists'):
        tool.main(['--model', 'NFResNet', '--depth', '26', '--out', str(out)])
