"""The variant table: the paper's scaling rules hold, and everything else reads from it."""
import pytest

from nfnets_mm.analysis import TABLE3
from nfnets_mm.models import NFNet
from nfnets_mm.variants import (DEEPMIND_WEIGHTS_URL, NFNET_VARIANTS, NFNET_WIDE_WIDTHS,
                                NFNET_WIDTHS, get_variant)

BASE = [f'F{i}' for i in range(8)]


def test_depths_follow_the_papers_scaling_rule():
    """Sec. 5: F-k multiplies F0's depths (1, 2, 6, 3) by k + 1; widths stay fixed."""
    f0 = get_variant('F0').depths
    for k, name in enumerate(BASE):
        variant = get_variant(name)
        assert variant.depths == tuple((k + 1) * d for d in f0), name
        assert variant.widths == NFNET_WIDTHS


def test_sizes_and_regularisation_grow_with_the_variant():
    rows = [get_variant(name) for name in BASE]
    for small, big in zip(rows, rows[1:]):
        assert small.train_size < big.train_size and small.test_size < big.test_size
        assert small.dropout <= big.dropout and small.ra_magnitude <= big.ra_magnitude
    for v in rows:
        assert v.test_size > v.train_size  # "FixRes" effect: test larger than train
        assert v.ra_num_layers == 4 and v.drop_path_rate == 0.25


def test_released_weights_are_deepminds_f0_to_f6():
    released = {name: v.dm_weights_url for name, v in NFNET_VARIANTS.items()
                if v.dm_weights_url}
    assert released == {f'F{i}': DEEPMIND_WEIGHTS_URL.format(name=f'F{i}') for i in range(7)}
    assert [name for name, v in NFNET_VARIANTS.items() if v.sam] == ['F6']
    for name in released:  # every released model has the accuracy it was published with
        assert get_variant(name).top1 is not None and get_variant(name).top5 is not None


def test_wide_variants_differ_only_in_widths_and_have_no_table3_numbers():
    for name in BASE:
        base, wide = get_variant(name), get_variant(name + '+')
        assert wide.widths == NFNET_WIDE_WIDTHS
        assert (wide.depths, wide.train_size, wide.test_size, wide.dropout, wide.ra_magnitude,
                wide.drop_path_rate) == (base.depths, base.train_size, base.test_size,
                                         base.dropout, base.ra_magnitude, base.drop_path_rate)
        assert (wide.params_m, wide.flops_g, wide.top1, wide.dm_weights_url) == (None,) * 4


def test_nfnet_arch_zoo_and_table3_read_the_table():
    assert set(NFNet.arch_zoo) == {name.lower() for name in NFNET_VARIANTS}
    for name, v in NFNET_VARIANTS.items():
        assert NFNet.arch_zoo[name.lower()] == dict(depths=v.depths, widths=v.widths)
    assert TABLE3 == {name: dict(params=v.params_m, flops=v.flops_g, test_size=v.test_size)
                      for name, v in NFNET_VARIANTS.items() if v.params_m is not None}
    assert sorted(TABLE3) == [f'F{i}' for i in range(7)]


def test_get_variant_is_case_insensitive_and_names_the_valid_choices():
    assert get_variant('f3+') is NFNET_VARIANTS['F3+']
    with pytest.raises(KeyError, match=r"'F8'.*valid variants: F0, F1, .*F7\+"):
        get_variant('F8')
    with pytest.raises(KeyError, match='Unknown NFNet arch .*f8'):
        NFNet(arch='f8')


def test_complexity_tool_reads_the_table(capsys):
    """tools/analysis/complexity.py: any variant (case-insensitive), Table 3 from the table."""
    import importlib.util
    import os.path as osp

    from conftest import REPO_ROOT
    spec = importlib.util.spec_from_file_location(
        'nfnets_complexity_tool', osp.join(REPO_ROOT, 'tools', 'analysis', 'complexity.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--archs', 'f0'])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| F0 ')]
    cells = [c.strip() for c in row[0].strip('|').split('|')]
    f0 = get_variant('F0')
    assert cells[1] == str(f0.test_size) and cells[3] == str(f0.params_m)
    assert cells[5] == str(f0.flops_g) and abs(float(cells[6].rstrip('%'))) < 0.1
    assert float(cells[2]) == pytest.approx(f0.params_m, abs=0.05)
    with pytest.raises(SystemExit):
        tool.main(['--archs', 'F8'])
    assert "invalid choice: 'F8'" in capsys.readouterr().err


# DeepMind's nfnets/base.py `nfnet_params` rows, read from the release and written out here
# as the independent reference the table is checked against:
# (train_imsize, test_imsize, RA_level, drop_rate, depth).
DEEPMIND_BASE_PY = {
    'F0': (192, 256, '405', 0.2, (1, 2, 6, 3)),
    'F1': (224, 320, '410', 0.3, (2, 4, 12, 6)),
    'F2': (256, 352, '410', 0.4, (3, 6, 18, 9)),
    'F3': (320, 416, '415', 0.4, (4, 8, 24, 12)),
    'F4': (384, 512, '415', 0.5, (5, 10, 30, 15)),
    'F5': (416, 544, '415', 0.5, (6, 12, 36, 18)),
    'F6': (448, 576, '415', 0.5, (7, 14, 42, 21)),
    'F7': (480, 608, '415', 0.5, (8, 16, 48, 24)),
}


@pytest.mark.parametrize('name', sorted(DEEPMIND_BASE_PY))
def test_table_rows_equal_deepminds_base_py(name):
    train, test, ra_level, drop, depths = DEEPMIND_BASE_PY[name]
    for row in (get_variant(name), get_variant(name + '+')):
        assert (row.train_size, row.test_size, row.dropout, row.depths) == (
            train, test, drop, depths)
        # RA_level '4mm': 4 layers at magnitude mm
        assert (row.ra_num_layers, row.ra_magnitude) == (int(ra_level[0]), int(ra_level[1:]))
        # experiment_nfnets.py: stochdepth_rate 0.25 for every variant
        assert row.drop_path_rate == 0.25
    assert get_variant(name).widths == (256, 512, 1536, 1536)
    assert get_variant(name + '+').widths == (384, 768, 2048, 2048)
