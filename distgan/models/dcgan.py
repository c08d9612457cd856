"""DCGAN pair (Radford et al., 2016) sized from the image resolution and channels.

The generator projects z to a base x base map with a transposed convolution,
then doubles the resolution n times with stride-2 transposed convolutions,
BatchNorm and ReLU, ending in tanh. The discriminator mirrors it with stride-2
convolutions and LeakyReLU(0.2), and a final base x base convolution gives one
logit. The resolution must be base * 2**n with base in 4..7 and n >= 1.
`depth` adds that many 3x3 stride-1 convolutions, which keep the size of the
map, after every hidden layer: after G's projection and each of its
upsamplings but the output layer (with BatchNorm and ReLU), and after each of
D's downsamplings (with LeakyReLU). With depth 0 the pair is the DCGAN of the
paper.
With num_classes > 0 both are class-conditional (see
distgan.models.conditioning): D's projection reads the flattened base x base
feature map that its last convolution reads.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.conditioning import LabelEmbedding, Projection, check_labels

LEAKY_SLOPE = 0.2
INIT_STD = 0.02  # weight init of the DCGAN paper: N(0, 0.02), BatchNorm scale N(1, 0.02)


def plan_resolution(resolution: int) -> tuple[int, int]:
    """Return (base, n) with resolution == base * 2**n, base in 4..7 and n as large as possible.

    Raises ValueError for a resolution the DCGAN pair cannot produce.
    """
    base, n = resolution, 0
    while base % 2 == 0 and base // 2 >= 4:
        base //= 2
        n += 1
    if n == 0 or not 4 <= base <= 7:
        raise ValueError(
            f"the dcgan model needs a resolution of base * 2**n with base in 4..7 and n >= 1 "
            f"(for example 28, 32, 48, 64, 128), got {resolution}"
        )
    return base, n


def _extra_convolutions(width: int, depth: int, norm: bool) -> list[nn.Module]:
    """Return `depth` 3x3 convolutions that keep the width and size of a feature map, each with its activation."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        if norm:
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        else:
            layers += [nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE)]
    return layers


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """Map z [B, z_dim] (and labels int64 [B] with num_classes > 0) to images [B, channels, resolution, resolution].

    The images lie in [-1, 1].
    """

    def __init__(self, z_dim: int, channels: int, resolution: int, width: int = 64, num_classes: int = 0,
                 depth: int = 0) -> None:
        super().__init__()
        base, n = plan_resolution(resolution)
        widths = [width * 2 ** (n - 1 - i) for i in range(n)]
        self.condition = LabelEmbedding(num_classes, z_dim)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + self.condition.out_features, widths[0], base, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            *_extra_convolutions(widths[0], depth, norm=True),
        ]
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False), nn.BatchNorm2d(width_out), nn.ReLU()]
            layers += _extra_convolutions(width_out, depth, norm=True)
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.condition(z, labels)[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Map images [B, channels, resolution, resolution] (and labels int64 [B] with num_classes > 0) to logits [B]."""

    def __init__(self, channels: int, resolution: int, width: int = 64, num_classes: int = 0, depth: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        base, n = plan_resolution(resolution)
        widths = [width * 2**i for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE)]
        layers += _extra_convolutions(widths[0], depth, norm=False)
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(width_in, width_out, 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE)]
            layers += _extra_convolutions(width_out, depth, norm=False)
        layers.append(nn.Conv2d(widths[-1], 1, base, 1, 0))
        self.net = nn.Sequential(*layers)
        self.projection = Projection(num_classes, widths[-1] * base * base) if num_classes else None
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, "discriminator")
        if self.projection is None:
            return self.net(x).flatten(1).squeeze(1)
        features = self.net[:-1](x)
        logits = self.net[-1](features).flatten(1).squeeze(1)
        return logits + self.projection(features.flatten(1), labels)
