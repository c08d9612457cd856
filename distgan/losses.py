"""Adversarial losses on discriminator logits.

Each loss maps logits of shape [B] to a scalar mean over the local batch;
with equal per-rank batches, DDP's gradient average turns that into the mean
over the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Logits = torch.Tensor


@dataclass(frozen=True)
class AdversarialLoss:
    """The discriminator and generator halves of one GAN objective."""

    name: str
    d_loss: Callable[[Logits, Logits], torch.Tensor]  # (real logits, fake logits) -> scalar
    g_loss: Callable[[Logits], torch.Tensor]  # fake logits -> scalar
    gradient_penalty: bool = False  # the WGAN-GP critic loss adds a penalty on interpolated samples


def _logistic_d(real: Logits, fake: Logits) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _logistic_g(fake: Logits) -> torch.Tensor:
    # The non-saturating form: maximize log D(G(z)) instead of minimizing log(1 - D(G(z))).
    return F.softplus(-fake).mean()


def _hinge_d(real: Logits, fake: Logits) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _hinge_g(fake: Logits) -> torch.Tensor:
    return -fake.mean()


def _least_squares_d(real: Logits, fake: Logits) -> torch.Tensor:
    # LSGAN (Mao et al., 2017) with targets 1 for real and 0 for fake.
    return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())


def _least_squares_g(fake: Logits) -> torch.Tensor:
    return 0.5 * (fake - 1.0).square().mean()


def _wasserstein_d(real: Logits, fake: Logits) -> torch.Tensor:
    return fake.mean() - real.mean()


LOSSES = {
    "logistic": AdversarialLoss("logistic", _logistic_d, _logistic_g),
    "hinge": AdversarialLoss("hinge", _hinge_d, _hinge_g),
    "lsgan": AdversarialLoss("lsgan", _least_squares_d, _least_squares_g),
    "wgan-gp": AdversarialLoss("wgan-gp", _wasserstein_d, _hinge_g, gradient_penalty=True),
}


# R1 weight gamma when --r1-gamma is not given, per loss and data kind. The figures behind them are in
# BENCHMARKS.md. The WGAN-GP critic has its own gradient penalty.
DEFAULT_R1_GAMMA = {
    ("logistic", "image"): 0.1,
    ("logistic", "points"): 0.1,
    ("hinge", "image"): 0.0,
    ("hinge", "points"): 0.0,
    ("lsgan", "image"): 0.0,
    ("lsgan", "points"): 0.0,
    ("wgan-gp", "image"): 0.0,
    ("wgan-gp", "points"): 0.0,
}


def default_r1_gamma(loss: str, kind: str) -> float:
    """Return the R1 weight used when none is configured, for a loss name and a data kind ("image" or "points")."""
    return DEFAULT_R1_GAMMA[(loss, kind)]


def get_loss(name: str) -> AdversarialLoss:
    """Return the loss registered under `name`; raises KeyError for an unknown name."""
    return LOSSES[name]
