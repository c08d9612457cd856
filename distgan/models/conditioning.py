"""Class conditioning: a label embedding for G and the projection head of D.

G takes labels by concatenating a learned embedding of the label to z. D
uses the projection discriminator of Miyato and Koyama (2018): with the
features phi(x) [B, F] that its last layer reads, the logit becomes
head(phi(x)) + <embed(y), phi(x)>, so the label enters as an inner product
with the image features instead of an extra input channel.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.errors import ConfigError

PROJECTION_INIT_STD = 0.02


def check_labels(labels: torch.Tensor | None, num_classes: int, module: str) -> None:
    """Raise ValueError when a conditional module gets no labels or an unconditional one gets them."""
    if num_classes and labels is None:
        raise ValueError(f"the {module} is conditional on {num_classes} classes and needs labels int64 [B]")
    if not num_classes and labels is not None:
        raise ValueError(f"the {module} is unconditional and takes no labels")


def check_num_classes(num_classes: int) -> None:
    """Raise ConfigError unless num_classes is 0 (unconditional) or at least 2."""
    if num_classes < 0 or num_classes == 1:
        raise ConfigError(f"num_classes must be 0 (unconditional) or at least 2, got {num_classes}")


class LabelEmbedding(nn.Module):
    """Concatenate a learned embedding [B, dim] of each label to z [B, z_dim] (no change without classes)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, dim) if num_classes else None
        self.out_features = dim if num_classes else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        check_labels(labels, self.num_classes, "generator")
        if self.embed is None:
            return z
        return torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)


class Projection(nn.Module):
    """The class term <embed(y), phi(x)> [B] of a projection discriminator, for features [B, F]."""

    def __init__(self, num_classes: int, features: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        # Small, so D starts close to unconditional; not zero, which spectral normalization cannot divide by.
        nn.init.normal_(self.embed.weight, 0.0, PROJECTION_INIT_STD)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (self.embed(labels).to(features.dtype) * features).sum(dim=1)
