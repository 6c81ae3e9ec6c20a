"""Squeeze-and-excite as used in NFNet blocks."""
import torch
import torch.nn as nn

from nfnets_mm.registry import MODELS


@MODELS.register_module()
class NFSqueezeExcite(nn.Module):
    """Squeeze-excite with a 2x output gain (NFNet paper Sec. 5, Fig. 3).

    ``out = x * (gain * sigmoid(fc2(relu(fc1(mean_hw(x))))))``.  The gain of 2 makes
    the expected scale of ``x`` unchanged at init, since ``sigmoid(.) ~ 0.5``.

    Args:
        channels (int): Channels :math:`C` of the input.
        hidden_channels (int): Width of the bottleneck (``0.5 * C`` in NFNets).
        gain (float): Output gain. Defaults to 2.0.

    Shapes:
        - input: :math:`(N, C, H, W)`; output: :math:`(N, C, H, W)`.
    """

    def __init__(self, channels: int, hidden_channels: int, gain: float = 2.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.fc2 = nn.Linear(hidden_channels, channels)
        self.gain = gain

    def channel_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation ``gain * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, shape :math:`(N, C)`.

        NF blocks fold it, with the other per-sample constants, into one residual merge
        instead of multiplying ``x`` by it separately.
        """
        h = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(h)))) * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_scale(x)[:, :, None, None]
