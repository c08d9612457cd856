"""Speed options for G and D: the channels-last memory format and torch.compile.

Both are applied to the bare modules before Accelerate wraps them, and both
leave parameter names and values as they are, so checkpoints, resume and
export do not depend on them.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from distgan.config import TrainConfig
from distgan.ema import GeneratorEMA
from distgan.losses import get_loss

logger = logging.getLogger(__name__)


def apply_speed_options(config: TrainConfig, G: nn.Module, D: nn.Module, G_ema: GeneratorEMA | None) -> None:
    """Apply config.channels_last and config.compile to G and D in place.

    Channels-last stores every 4D weight as NHWC, the layout that cuDNN and
    oneDNN convolutions run fastest, and G_ema follows so that its update
    reads weights of the same layout. Compilation uses nn.Module.compile(),
    which keeps the module object and its state_dict keys. G_ema is not
    compiled, because it runs only for sample grids, where compiling would
    cost more time than it saves. D stays uncompiled when a gradient penalty
    (R1 or WGAN-GP) is on, because torch.compile (torch 2.13) does not
    support the double backward pass that the penalties need.
    """
    if config.channels_last:
        for module in (G, D, G_ema.module if G_ema is not None else None):
            if module is not None:
                # Module.to converts only 4D tensors to channels-last and leaves the others as they are.
                module.to(memory_format=torch.channels_last)
    if config.compile:
        G.compile()
        if needs_double_backward(config):
            logger.warning("--compile: compiling G only, because torch.compile does not support the double "
                           "backward pass of the gradient penalty (r1_gamma %g, loss %s)", config.r1_gamma, config.loss)
        else:
            D.compile()


def needs_double_backward(config: TrainConfig) -> bool:
    """Return whether the D phase differentiates through input gradients (R1, or the WGAN-GP penalty)."""
    return bool(config.r1_gamma) or (get_loss(config.loss).gradient_penalty and config.gp_weight > 0)
