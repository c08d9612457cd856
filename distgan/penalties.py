"""Gradient penalties on the discriminator: R1 (Mescheder et al., 2018) and WGAN-GP (Gulrajani et al., 2017).

Both take the logits of a forward pass and the input that produced them, so
they run inside the one D forward pass of a step. torch.autograd.grad with
create_graph=True computes input gradients only; the parameter gradients of
the penalty arrive in the phase's single backward pass, where DDP all-reduces
them together with the rest of D's gradients.
"""

from __future__ import annotations

import torch


def input_gradients(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Return d(sum of logits)/d(inputs), flattened to [B, -1], keeping the graph for a second backward."""
    (gradients,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return gradients.flatten(1)


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||grad_x D(x)||^2 at the real samples x."""
    return input_gradients(real_logits, real).square().sum(1).mean()


def wgan_gradient_penalty(mixed_logits: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of (||grad_x D(x)|| - 1)^2 at samples x interpolated between real and fake."""
    norms = input_gradients(mixed_logits, mixed).norm(2, dim=1)
    return (norms - 1.0).square().mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return weights * real + (1 - weights) * fake with one weight in [0, 1] per sample ([B])."""
    shape = [len(weights)] + [1] * (real.dim() - 1)
    weights = weights.view(shape).to(real.dtype)
    return weights * real + (1.0 - weights) * fake
