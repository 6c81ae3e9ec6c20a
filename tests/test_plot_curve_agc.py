"""The curves plot shows AGC's clip statistics per unit kind and its largest clip ratio."""
import json

from nfnets_mm.engine.hooks import PlotCurveHook, read_scalars


def test_clip_fractions_share_a_panel_and_the_ratio_is_log_scaled(tmp_path, monkeypatch):
    kinds = dict(agc_clip_fraction=0.05, agc_clip_fraction_weights=0.01,
                 agc_clip_fraction_gains_biases=0.4, agc_clip_fraction_skip_gains=1.0)
    lines = [dict(lr=0.1 * i, loss=2.0 / i, agc_mean_factor=0.9, agc_max_clip_ratio=200. / i,
                  step=i, iter=i, **kinds) for i in (1, 2, 3)]
    path = tmp_path / 'scalars.json'
    path.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    train, val = read_scalars(str(path))
    hook = PlotCurveHook()
    keys = hook._select(train)
    panels = hook.panels(keys)
    assert ('agc_clip_fraction', sorted(kinds)) in panels
    assert [t for t, _ in panels] == ['loss', 'lr', 'agc_clip_fraction',
                                      'agc_max_clip_ratio', 'agc_mean_factor']

    import matplotlib.axes
    scales, labels = {}, {}
    original_set_title = matplotlib.axes.Axes.set_title

    def record_title(ax, title, *args, **kwargs):
        scales[title] = ax.get_yscale()
        labels[title] = sorted(line.get_label() for line in ax.get_lines()
                               if not line.get_label().startswith('_'))
        return original_set_title(ax, title, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, 'set_title', record_title)
    out = hook.plot(train, val, keys, [], str(tmp_path / 'curves.png'))
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert scales['agc_max_clip_ratio'] == 'log' and scales['loss'] == 'linear'
    assert labels['agc_clip_fraction'] == ['all units', 'gains_biases', 'skip_gains',
                                           'weights']
