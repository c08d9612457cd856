"""Fully connected generator and discriminator in the style of the original GAN paper.

Both take the sample shape as a list, so the same pair serves images
[C, H, W] and 2D points [2]. With num_classes > 0 both are class-conditional
(see distgan.models.conditioning).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.models.conditioning import LabelEmbedding, Projection, check_labels

LEAKY_SLOPE = 0.2


class DenseGenerator(nn.Module):
    """Map z [B, z_dim] to samples [B, *out_shape] through Linear + LeakyReLU(0.2) layers.

    `output` is "tanh" for images in [-1, 1] or "linear" for unbounded points.
    With num_classes > 0 the forward pass takes labels int64 [B] too.
    """

    def __init__(self, z_dim: int, out_shape: list[int], hidden: list[int], output: str = "tanh",
                 num_classes: int = 0) -> None:
        super().__init__()
        if output not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', got {output!r}")
        self.out_shape = tuple(out_shape)
        self.condition = LabelEmbedding(num_classes, z_dim)
        layers: list[nn.Module] = []
        width_in = z_dim + self.condition.out_features
        for width in hidden:
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(LEAKY_SLOPE)]
            width_in = width
        layers.append(nn.Linear(width_in, math.prod(out_shape)))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.condition(z, labels)).unflatten(1, self.out_shape)


class DenseDiscriminator(nn.Module):
    """Map samples [B, *in_shape] (and labels int64 [B] with num_classes > 0) to one logit per sample [B]."""

    def __init__(self, in_shape: list[int], hidden: list[int], num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = math.prod(in_shape)
        for width in hidden:
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(LEAKY_SLOPE)]
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)
        self.projection = Projection(num_classes, width_in) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, "discriminator")
        if self.projection is None:
            return self.net(x).squeeze(1)
        features = self.net[:-1](x)
        return self.net[-1](features).squeeze(1) + self.projection(features, labels)
