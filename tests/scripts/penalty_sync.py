"""Train a few steps with a gradient penalty and save each rank's D weights, to compare them across ranks.

The discriminator has a parameter that only the penalty's double backward
moves: `slope` scales a term whose value is always zero but whose input
gradient is `slope`, so the adversarial loss gives it a zero gradient and R1
or WGAN-GP a non-zero one.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from common import small_config
from distgan.models import build_discriminator, build_generator, default_architecture
from distgan.trainer import Trainer


class PenaltyOnlyParameter(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.slope = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.slope * (x - x.detach()).flatten(1).sum(1)


out = Path(sys.argv[1])
loss, r1_gamma = sys.argv[2], float(sys.argv[3])
config, data = small_config(out / "run", loss=loss, r1_gamma=r1_gamma, r1_every=2, steps=4)
architecture = default_architecture("dense", "points", [2], config.z_dim, config.width)
trainer = Trainer(config, data, generator=build_generator(architecture),
                  discriminator=PenaltyOnlyParameter(build_discriminator(architecture)))
start = trainer.setup()
for step in range(start, config.steps):
    trainer.train_step(step)
state = {name: tensor.detach().clone() for name, tensor in trainer.D_inner.state_dict().items()}
save_file(state, out / f"D_rank{trainer.accelerator.process_index}.safetensors")
trainer.close()
