"""The NFNet model zoo in MMPretrain's ``ModelHub``: ``get_model('nfnet-f0_3rdparty-dm_in1k')``.

MMPretrain finds its models by name through ``mmpretrain.apis.ModelHub``, which reads a
``model-index.yml``.  nfnets_mm keeps its index at the repository root (importing
``configs/nfnet/metafile.yml``, generated from the variant table by
``tools/model_zoo/generate.py``); :func:`register_model_zoo` adds it to the hub, so the
names listed in ``configs/nfnet/README.md`` work wherever MMPretrain takes a model name::

    from mmpretrain import ImageClassificationInferencer, get_model, list_models
    list_models('nfnet*')
    model = get_model('nfnet-f1_3rdparty-dm_in1k', pretrained=True)  # DeepMind's weights
    inferencer = ImageClassificationInferencer('nfnet-f0_3rdparty-dm_in1k', pretrained=True)

``import nfnets_mm`` calls it.  The configs are files of the repository, not of the Python
package: with a non-editable install that has no ``model-index.yml`` next to the package,
nothing is registered and configs are given by path instead.
"""
import os.path as osp
from typing import List, Optional

#: The model index of a source checkout / editable install (the repository root).
DEFAULT_MODEL_INDEX = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                               'model-index.yml')


def register_model_zoo(model_index: Optional[str] = None) -> List[str]:
    """Register the zoo's models in MMPretrain's ``ModelHub`` (once; later calls add nothing).

    Args:
        model_index: a ``model-index.yml``; config paths in it are relative to its folder.
            Defaults to :data:`DEFAULT_MODEL_INDEX`; if that file does not exist, nothing is
            registered.

    Returns:
        The names registered by this call (lower case, as ``ModelHub`` keys them).

    Raises:
        FileNotFoundError: an explicitly given ``model_index`` does not exist.
        ValueError: a name of the index is already registered for another config.
    """
    path = model_index or DEFAULT_MODEL_INDEX
    if not osp.isfile(path):
        if model_index is not None:
            raise FileNotFoundError(f'model index {model_index!r} does not exist; nfnets_mm '
                                    f'keeps its index at {DEFAULT_MODEL_INDEX}.')
        return []
    from mmpretrain.apis import ModelHub
    from modelindex.load_model_index import load

    index = load(path)
    index.build_models_with_collections()
    prefix = osp.dirname(osp.abspath(path))
    added = []
    for info in index.models:
        name = info.name.lower()
        config = osp.abspath(osp.join(prefix, info.config))
        known = ModelHub._models_dict.get(name)
        if known is not None:
            if not isinstance(known.config, str) or osp.abspath(known.config) != config:
                raise ValueError(f'model name {name!r} of {path} is already registered in '
                                 f'MMPretrain\'s ModelHub for {known.config!r}.')
            continue  # registered by an earlier call
        info.config = config
        ModelHub._models_dict[name] = info
        added.append(name)
    return added


__all__ = ['DEFAULT_MODEL_INDEX', 'register_model_zoo']
