"""Plot the training curves MMEngine logged, at the end of training."""
import json
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.visualization import LocalVisBackend

from nfnets_mm.registry import HOOKS

Series = Dict[str, Tuple[List[float], List[float]]]
#: AGC keys the optimizer wrappers log (``AGCMixin``) that get a panel of their own kind.
CLIP_FRACTION = 'agc_clip_fraction'
MAX_CLIP_RATIO = 'agc_max_clip_ratio'


def read_scalars(path: str) -> Tuple[Series, Series]:
    """Read MMEngine's ``scalars.json`` (one JSON dict per line).

    Returns:
        tuple[dict, dict]: ``(train, val)``, each ``{key: (steps, values)}``.  Train
        lines are those with an ``lr`` entry (step = iteration); the others are
        validation lines (step = epoch or iteration, as the ``LoggerHook`` logs them).
    """
    train: Series = {}
    val: Series = {}
    skip = {'step', 'epoch', 'iter', 'data_time', 'time', 'memory'}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            step = record.get('step')
            if step is None:
                continue
            target = train if any(k == 'lr' or k.endswith('_lr') for k in record) else val
            for key, value in record.items():
                if key in skip or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                steps, values = target.setdefault(key, ([], []))
                steps.append(step)
                values.append(value)
    return train, val


@HOOKS.register_module(name='NFPlotCurveHook')  # NF prefix: see nfnets_mm/registry.py
class PlotCurveHook(Hook):
    """Save a PNG of the logged training curves when training ends.

    Rank 0 only; test-only runs plot nothing.

    It reads the ``scalars.json`` that MMEngine's ``LocalVisBackend`` writes (so the
    visualizer must have one, as the default runtimes do) and draws one panel per
    train key (``loss``, ``lr``, ``agc_mean_factor`` ... whichever were logged), one
    panel with every AGC clip fraction (overall and per unit kind: weights, gains and
    biases, skip gains), one for the largest AGC clip ratio (log scale, a dashed line at
    1 = the clipping threshold) and one for the validation metrics, using matplotlib's
    ``Agg`` backend.  The AGC panels are what show SkipInit x AGC at a glance: skip gains
    clipped at every step while the overall fraction stays low
    (``docs/training.md``).  The file
    goes into the run's timestamped log folder inside the work dir
    (``<work_dir>/<timestamp>/<out_file>``), so it never replaces an earlier plot.

    Args:
        out_file (str): File name of the PNG. Defaults to ``'training_curves.png'``.
        train_keys (Sequence[str], optional): Train keys to plot; None plots ``loss``,
            ``lr`` and every ``agc_*`` key found.
        val_keys (Sequence[str], optional): Validation keys; None plots all.
    """

    priority = 'VERY_LOW'

    def __init__(self, out_file: str = 'training_curves.png',
                 train_keys: Optional[Sequence[str]] = None,
                 val_keys: Optional[Sequence[str]] = None) -> None:
        if not out_file.lower().endswith('.png'):
            raise ValueError(f'PlotCurveHook writes a PNG; out_file must end with .png, '
                             f'got {out_file!r}.')
        if osp.basename(out_file) != out_file:
            raise ValueError(f'out_file must be a plain file name, got {out_file!r}.')
        self.out_file = out_file
        self.train_keys = list(train_keys) if train_keys is not None else None
        self.val_keys = list(val_keys) if val_keys is not None else None
        #: Path of the last PNG written (None until then).
        self.saved_path: Optional[str] = None

    @staticmethod
    def scalars_path(runner) -> Optional[str]:
        """Where the runner's ``LocalVisBackend`` writes ``scalars.json``."""
        backends = getattr(runner.visualizer, '_vis_backends', {}) or {}
        for backend in backends.values():
            if isinstance(backend, LocalVisBackend) and backend._save_dir is not None:
                return osp.join(backend._save_dir, osp.basename(backend._scalar_save_file))
        return None

    def _select(self, train: Series) -> List[str]:
        if self.train_keys is not None:
            return [k for k in self.train_keys if k in train]
        keys = [k for k in ('loss', 'lr') if k in train]
        keys += sorted(k for k in train if k.startswith('agc_'))
        return keys

    @staticmethod
    def panels(train_keys: Sequence[str]) -> List[Tuple[str, List[str]]]:
        """Group train keys into panels ``(title, keys)``: all ``agc_clip_fraction*``
        keys share one, every other key has its own (in ``train_keys`` order)."""
        out: List[Tuple[str, List[str]]] = []
        fractions = [k for k in train_keys if k.startswith(CLIP_FRACTION)]
        for key in train_keys:
            if key.startswith(CLIP_FRACTION):
                if key == fractions[0]:
                    out.append((CLIP_FRACTION, fractions))
            else:
                out.append((key, [key]))
        return out

    @master_only
    def after_train(self, runner) -> None:
        path = self.scalars_path(runner)
        if path is None or not osp.isfile(path):
            runner.logger.warning('PlotCurveHook: no scalars.json found (is a '
                                  'LocalVisBackend configured?); no plot written.')
            return
        train, val = read_scalars(path)
        train_keys = self._select(train)
        val_keys = [k for k in (self.val_keys if self.val_keys is not None else sorted(val))
                    if k in val]
        if not train_keys and not val_keys:
            return  # e.g. a test-only run: nothing to plot
        self.saved_path = self.plot(train, val, train_keys, val_keys,
                                    osp.join(runner.log_dir, self.out_file))
        runner.logger.info(f'PlotCurveHook: training curves saved to {self.saved_path}')

    @staticmethod
    def plot(train: Series, val: Series, train_keys: Sequence[str],
             val_keys: Sequence[str], out_path: str) -> str:
        """Draw the panels and save them to ``out_path``."""
        import matplotlib
        matplotlib.use('Agg', force=True)
        import matplotlib.pyplot as plt

        train_panels = PlotCurveHook.panels(train_keys)
        panels = len(train_panels) + (1 if val_keys else 0)
        cols = min(panels, 3)
        rows = int(math.ceil(panels / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
        flat = list(axes.flat)
        for ax, (title, keys) in zip(flat, train_panels):
            for key in keys:
                steps, values = train[key]
                label = key[len(CLIP_FRACTION) + 1:] or 'all units'
                ax.plot(steps, values, lw=1.2, label=label if len(keys) > 1 else None)
            if len(keys) > 1:
                ax.legend(fontsize=7)
            if title == MAX_CLIP_RATIO:
                # how far above the threshold the worst unit is: orders of magnitude
                ax.set_yscale('log')
                ax.axhline(1.0, color='grey', ls='--', lw=0.8)
            ax.set_title(title)
            ax.set_xlabel('iteration')
            ax.grid(alpha=0.3)
        if val_keys:
            ax = flat[len(train_panels)]
            for key in val_keys:
                steps, values = val[key]
                ax.plot(steps, values, marker='o', lw=1.2, label=key)
            ax.set_title('validation')
            ax.set_xlabel('step (epoch or iteration, as logged)')
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        for ax in flat[panels:]:
            ax.axis('off')
        fig.tight_layout()
        fig.savefig(out_path, dpi=100)
        plt.close(fig)
        return out_path
