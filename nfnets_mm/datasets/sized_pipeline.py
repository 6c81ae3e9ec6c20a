"""Re-size the NFNet recipe's pipeline configs for another variant or resolution.

MMEngine evaluates a config's variables once, when the file that defines them is read: a
child config that changes ``train_size`` does not change the pipelines its ``_base_``
built from it.  The F1..F7, NF-ResNet, fine-tuning and ``dm_weights`` configs therefore
re-size their base's pipelines with :func:`sized_pipeline`, which sets each size-bearing
step by its type (never by list index), from the variant table
(:mod:`nfnets_mm.variants`) or from explicit sizes::

    from nfnets_mm.datasets.sized_pipeline import sized_pipeline
    test_pipeline = sized_pipeline(_base_.test_pipeline, 'F3')
"""
import copy
from typing import List, Optional, Sequence

from nfnets_mm.variants import get_variant

#: Steps that carry a size or a per-variant level, and what sets them.
SIZED_STEPS = ('NFNetRandomResizedCrop', 'NFNetRandAugment', 'NFNetEvalResizeCrop')


def sized_pipeline(pipeline: Sequence[dict],
                   variant: Optional[str] = None,
                   *,
                   train_size: Optional[int] = None,
                   test_size: Optional[int] = None,
                   ra_magnitude: Optional[float] = None) -> List[dict]:
    """A copy of ``pipeline`` with the sizes of ``variant`` (or the ones given).

    ``NFNetRandomResizedCrop.scale`` and ``NFNetRandAugment.image_size`` take the train
    size, ``NFNetRandAugment.magnitude`` / ``num_layers`` the RandAugment level and layers,
    ``NFNetEvalResizeCrop.crop_size`` the test size; other steps are copied unchanged.

    Args:
        pipeline: Step configs (dicts with ``type``).
        variant: A row of the variant table (``'F0'`` ... ``'F7'``, ``'F0+'`` ...), or
            None to give every size explicitly.
        train_size / test_size / ra_magnitude: Override the variant's numbers (e.g. a
            fine-tuning resolution, or NF-ResNet-50's sizes, which are not in the table).

    Raises:
        ValueError: A size-bearing step is in the pipeline but neither ``variant`` nor the
            matching keyword gives its size.
    """
    row = get_variant(variant) if variant is not None else None
    train_size = train_size if train_size is not None else getattr(row, 'train_size', None)
    test_size = test_size if test_size is not None else getattr(row, 'test_size', None)
    ra_magnitude = (ra_magnitude if ra_magnitude is not None
                    else getattr(row, 'ra_magnitude', None))
    updates = dict(
        NFNetRandomResizedCrop=dict(scale=train_size),
        NFNetRandAugment=dict(magnitude=ra_magnitude, image_size=train_size),
        NFNetEvalResizeCrop=dict(crop_size=test_size))
    if row is not None:
        updates['NFNetRandAugment']['num_layers'] = row.ra_num_layers
    sized = []
    for step in pipeline:
        step = copy.deepcopy(dict(step))
        for key, value in updates.get(step.get('type'), {}).items():
            if value is None:
                raise ValueError(
                    f'sized_pipeline: {step["type"]} needs a {key}; give a variant (one of '
                    f'the variant table\'s names) or the matching size keyword '
                    f'(train_size, test_size, ra_magnitude).')
            step[key] = value
        sized.append(step)
    return sized


__all__ = ['SIZED_STEPS', 'sized_pipeline']
