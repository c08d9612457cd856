"""Fully connected generator and discriminator in the style of the original GAN paper.

Both take the sample shape as a list, so the same pair serves images
[C, H, W] and 2D points [2].
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEAKY_SLOPE = 0.2


class DenseGenerator(nn.Module):
    """Map z [B, z_dim] to samples [B, *out_shape] through Linear + LeakyReLU(0.2) layers.

    `output` is "tanh" for images in [-1, 1] or "linear" for unbounded points.
    """

    def __init__(self, z_dim: int, out_shape: list[int], hidden: list[int], output: str = "tanh") -> None:
        super().__init__()
        if output not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', got {output!r}")
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        width_in = z_dim
        for width in hidden:
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(LEAKY_SLOPE)]
            width_in = width
        layers.append(nn.Linear(width_in, math.prod(out_shape)))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(1, self.out_shape)


class DenseDiscriminator(nn.Module):
    """Map samples [B, *in_shape] to one logit per sample [B]."""

    def __init__(self, in_shape: list[int], hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = math.prod(in_shape)
        for width in hidden:
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(LEAKY_SLOPE)]
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
