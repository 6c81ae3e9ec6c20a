"""Gamma-scaled activations (paper Sec. 3, "variance preserving" nonlinearities).

A scaled-WS conv outputs unit-variance activations at init.  Multiplying a
nonlinearity by ``gamma = 1 / sqrt(Var[g(x)])``, ``x ~ N(0, 1)``, keeps the variance
at 1 after it.  The constants are those of DeepMind's release.
"""
from typing import Optional

import mmcv.cnn.bricks.activation  # noqa: F401  (registers torch activations first)
import torch
import torch.nn as nn

from nfnets_mm.registry import MODELS

#: gamma per activation module class name, DeepMind's constants.
ACT_GAMMAS = {
    'GELU': 1.7015043497085571,
    'ReLU': 1.7139588594436646,
    'SiLU': 1.7881293296813965,
    'Swish': 1.7881293296813965,
    'ELU': 1.2716004848480225,
    'CELU': 1.270926833152771,
    'LeakyReLU': 1.70590341091156,
    'ReLU6': 1.7131484746932983,
    'SELU': 1.0008515119552612,
    'Sigmoid': 4.803835391998291,
    'Tanh': 1.5939117670059204,
    'Softplus': 1.9203323125839233,
    'Softsign': 2.338853120803833,
    'LogSigmoid': 1.9193484783172607,
}

def _torch_activation(name: str) -> Optional[type]:
    """``torch.nn.<name>`` if it is one of torch's activation modules, else None."""
    if name not in nn.modules.activation.__all__:
        return None
    return getattr(nn, name)


def build_activation(act_cfg: dict) -> nn.Module:
    """Build an activation from a config such as ``dict(type='GELU')``.

    The type is looked up in the ``MODELS`` registry first (mmcv registers ``ReLU``,
    ``GELU``, ``SiLU``, ``Swish``, ...); a name it lacks that is one of torch's activation
    modules (``CELU``, ``SELU``, ``Softplus``, ``Softsign``, ``LogSigmoid``, ...) is built
    from ``torch.nn`` directly.  nfnets_mm does not register torch's activations itself:
    a second package registering the same generic names would collide with them.
    """
    if not isinstance(act_cfg, dict) or 'type' not in act_cfg:
        raise TypeError(f'act_cfg must be a dict with a "type" key, got {act_cfg!r}.')
    cfg = dict(act_cfg)
    act_type = cfg['type']
    if not isinstance(act_type, str) or MODELS.get(act_type) is not None:
        return MODELS.build(cfg)
    torch_cls = _torch_activation(act_type)
    if torch_cls is None:
        raise KeyError(f'Unknown activation type {act_type!r}; activations with a known '
                       f'gamma are: {", ".join(sorted(ACT_GAMMAS))}.')
    cfg.pop('type')
    return torch_cls(**cfg)


@MODELS.register_module(name='NFGammaAct')
class GammaAct(nn.Module):
    """``gamma * act(x)`` with the variance-preserving gamma of ``act``.

    Registered as ``type='NFGammaAct'`` (NF-prefixed so that it cannot collide with another
    package's name in MMEngine's root registry; see :mod:`nfnets_mm.registry`).

    Args:
        act_cfg (dict): The activation, e.g. ``dict(type='GELU')`` (exact) or
            ``dict(type='GELU', approximate='tanh')`` (DeepMind's GELU), ``dict(type='ReLU')``.
        gamma (float, optional): Override the gain; required for an activation that is
            not in :data:`ACT_GAMMAS`.  ``1.0`` gives the plain activation.
        fold_gamma (bool): Leave the multiplication by ``gamma`` to the consumer of the
            output: ``forward`` returns ``act(x)`` and :attr:`deferred_gamma` is ``gamma``,
            which the next :class:`ScaledStdConv2d` takes as its ``input_scale`` (a
            constant on its weight instead of a pass over the activation).  Only valid
            where every consumer applies it; NF backbones do this with
            ``fold_scales=True``. Defaults to False.

    Shapes:
        - input: any; output: same as input.
    """

    def __init__(self, act_cfg: dict = dict(type='GELU'), gamma: Optional[float] = None,
                 fold_gamma: bool = False) -> None:
        super().__init__()
        self.act = build_activation(act_cfg)
        if gamma is None:
            name = type(self.act).__name__
            if name not in ACT_GAMMAS:
                raise KeyError(f'No known gamma for activation {name!r}; pass gamma=... '
                               f'explicitly or use one of: {", ".join(sorted(ACT_GAMMAS))}.')
            gamma = ACT_GAMMAS[name]
        self.gamma = float(gamma)
        self.fold_gamma = bool(fold_gamma)

    @property
    def deferred_gamma(self) -> float:
        """The factor the consumer must apply: ``gamma`` when folded, else 1."""
        return self.gamma if self.fold_gamma else 1.0

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}' + (' (folded into the next conv)' if self.fold_gamma
                                        else '')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(x)
        return out if self.fold_gamma or self.gamma == 1.0 else out * self.gamma
