"""Spectral normalization of the discriminator (Miyato et al., 2018), a training-only parametrization.

Every weight of a Linear, convolution or Embedding layer is divided by its
largest singular value, estimated by one power iteration per forward pass in
training mode. torch.nn.utils.parametrizations.spectral_norm keeps the raw
weight as `parametrizations.weight.original` and the power iteration vectors
as buffers, so checkpoints of D restore the estimate exactly.

Only D gets it: the generator that export reads never carries a
parametrization.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

NORMALIZED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Parametrize the weight of every Linear, convolution and Embedding layer in `module`; return `module`."""
    for layer in list(module.modules()):
        if isinstance(layer, NORMALIZED_LAYERS) and not parametrize.is_parametrized(layer, "weight"):
            spectral_norm(layer)
    return module


def has_parametrizations(module: nn.Module) -> bool:
    """Return whether any layer of `module` carries a torch parametrization (spectral norm, weight norm, ...)."""
    return any(parametrize.is_parametrized(layer) for layer in module.modules())
