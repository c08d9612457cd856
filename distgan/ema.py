"""Exponential moving average of the generator, on torch's AveragedModel.

The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so
early averages are not dominated by the random initial weights. The
warm-up depends only on t, which equals the training step, so a resumed run
continues with the same decay.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from distgan.sharding import local


def warmup_decay(decay: float, updates: int) -> float:
    """Return the EMA decay used for update number `updates` (counted from 0)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class GeneratorEMA:
    """The averaged copy G_ema of a generator, parameters and buffers alike."""

    def __init__(self, generator: nn.Module, decay: float) -> None:
        self.decay = decay
        # AveragedModel deep-copies the generator; pass it before accelerator.prepare() so the
        # copy carries no mixed-precision patch on its forward.
        self.averaged = AveragedModel(generator, multi_avg_fn=self._update, use_buffers=True)
        self.averaged.requires_grad_(False)
        self._rate = torch.zeros((), device=next(self.averaged.parameters()).device)
        self.averaged.eval()

    @torch.no_grad()
    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count: torch.Tensor) -> None:
        if torch.is_floating_point(averaged[0]):
            # Sharded (FSDP) parameters update their local shards, in place, beside plain buffers.
            averaged, current = [local(t) for t in averaged], [local(t) for t in current]
            # averaged += rate * (current - averaged), with the rate 0 on a skipped step.
            differences = torch._foreach_sub(current, averaged)
            torch._foreach_mul_(differences, self._rate.to(averaged[0].dtype))
            torch._foreach_add_(averaged, differences)
        else:
            for target, value in zip(averaged, current):
                target.copy_(value)  # integer buffers such as BatchNorm's num_batches_tracked

    def update(self, generator: nn.Module, step: int, skip: torch.Tensor | None = None) -> None:
        """Fold the weights of `generator` after training step `step` (0-based) into the average.

        `skip` is a 0-dim tensor on the device (bool, or float with 1.0 for a
        skipped step); when set, the average stays as it is, without a host
        synchronization.
        """
        # fill_ passes the rate as a kernel argument: no host-to-device copy, no synchronization.
        self._rate.fill_(1.0 - warmup_decay(self.decay, step))
        if skip is not None:
            self._rate.mul_(skip.logical_not())
        self.averaged.update_parameters(generator)

    @property
    def module(self) -> nn.Module:
        """The averaged generator, in eval mode."""
        return self.averaged.module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.averaged.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.averaged.module.load_state_dict(state_dict)
        self.mark_loaded()

    def mark_loaded(self) -> None:
        """Record that the average holds loaded weights, for a caller that loaded them into `module` itself."""
        # A loaded average is no longer the first update, which would copy instead of average.
        self.averaged.n_averaged.fill_(1)
