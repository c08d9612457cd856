"""Linear learning-rate decay over the last part of a run.

The learning rate of a step is a function of the step and the run's total
steps, so a resumed run continues on the same curve and a checkpoint needs
no scheduler state. Decay lets G and D settle at the end of training: on the 2D
mixtures it tightens the modes and removes most of the samples between
them (BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import torch


def decay_factor(step: int, steps: int, decay_start: float) -> float:
    """Return the multiplier of the base learning rates at step `step` (0-based) of a `steps`-step run.

    The factor is 1 before round(decay_start * steps), then falls linearly
    and reaches 1 / (steps - start) at the last step. A decay_start of 1
    keeps the factor at 1 throughout.
    """
    start = round(decay_start * steps)
    if step < start:
        return 1.0
    return (steps - step) / (steps - start)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Set the learning rate of every parameter group of `optimizer`."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
