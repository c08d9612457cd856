"""Train with a discriminator that returns NaN on one rank at chosen steps, through Trainer.fit().

Arguments: output folder, the rank that sees NaN, the first bad step, the
number of bad steps (0 means every step from the first one on), and
max_skipped_steps. The exit status and the run directory tell what happened.
"""

import os
import sys
from pathlib import Path

import torch
from torch import nn

from common import small_config
from distgan.errors import DistganError
from distgan.models import build_discriminator, build_generator, default_architecture
from distgan.trainer import Trainer

out = Path(sys.argv[1])
bad_rank, first_bad, bad_count, max_skipped = (int(value) for value in sys.argv[2:6])


class NaNAtSteps(nn.Module):
    """Wrap a discriminator; its two calls with gradients per step (D phase, G phase) give the step number."""

    def __init__(self, base: nn.Module, rank: int) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.calls // 2
        if torch.is_grad_enabled():  # the shape check at set-up runs without gradients and is not a step
            self.calls += 1
        logits = self.base(x)
        last = first_bad + bad_count if bad_count else float("inf")
        if self.rank == bad_rank and first_bad <= step < last:
            return logits * float("nan")
        return logits


def main() -> None:
    config, data = small_config(out / "run", steps=10, checkpoint_every=2, max_skipped_steps=max_skipped)
    architecture = default_architecture("dense", "points", [2], config.z_dim, config.width)
    rank = int(os.environ.get("RANK", "0"))
    Trainer(config, data, generator=build_generator(architecture),
            discriminator=NaNAtSteps(build_discriminator(architecture), rank)).fit()


try:
    main()
except DistganError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
