"""2D Gaussian mixtures used to measure mode collapse (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018).

ring8: 8 modes evenly spaced on a circle of radius 2, std 0.02.
grid25: 25 modes on the 5x5 grid {-4, -2, 0, 2, 4}^2, std 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixture:
    """Equally weighted isotropic Gaussians at `centers` [K, 2] with standard deviation `std`."""

    name: str
    centers: torch.Tensor
    std: float

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n points [n, 2] and their mode indices [n]."""
        modes = torch.randint(len(self.centers), (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device)
        return self.centers.to(device)[modes] + self.std * noise, modes


def _ring8() -> Mixture:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return Mixture("ring8", centers.float(), 0.02)


def _grid25() -> Mixture:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    centers = torch.cartesian_prod(axis, axis)
    return Mixture("grid25", centers, 0.05)


MIXTURES = {"ring8": _ring8, "grid25": _grid25}


def get_mixture(name: str) -> Mixture:
    """Return the mixture registered under `name`; raises KeyError for an unknown name."""
    return MIXTURES[name]()
