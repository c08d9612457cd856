"""Train through Trainer.fit() with non-finite values injected into the data or into G's buffers.

Arguments: output folder, then a mode:

    data RANK FIRST COUNT   rank RANK's real samples contain NaN at step indices FIRST to FIRST + COUNT - 1
    buffer STEP LOG_EVERY   a buffer of G becomes NaN on every rank at step index STEP; gradients stay finite
    gradient STEP           G's backward pass returns Inf gradients on every rank at step index STEP; losses stay finite

Each rank writes its final G and D weights to G_rank{i}.safetensors and
D_rank{i}.safetensors and prints a DistganError as `error: rank {i}: ...`.
"""

import dataclasses
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from common import small_config
from distgan.data import DataSet
from distgan.errors import DistganError
from distgan.models import build_discriminator, build_generator, default_architecture
from distgan.trainer import Trainer

out, mode, values = Path(sys.argv[1]), sys.argv[2], [int(value) for value in sys.argv[3:]]
rank = int(os.environ.get("RANK", "0"))


class NaNSamples:
    """A batch source whose samples on one rank are NaN at chosen steps."""

    def __init__(self, inner, bad: bool, first: int, count: int) -> None:
        self.inner = inner
        self.bad = bad
        self.steps = range(first, first + count)

    def batch(self, step: int):
        real, labels = self.inner.batch(step)
        if self.bad and step in self.steps:
            real = real.clone()
            real[0, 0] = float("nan")
        return real, labels

    def close(self) -> None:
        self.inner.close()


@dataclasses.dataclass
class NaNData(DataSet):
    """A data set from the Python API: the 2D mixture with NaN samples on one rank."""

    bad_rank: int = 0
    first: int = 0
    count: int = 0

    def source(self, **kwargs):
        return NaNSamples(super().source(**kwargs), kwargs["rank"] == self.bad_rank, self.first, self.count)


class NaNBuffer(nn.Module):
    """Wrap a generator with a buffer that turns NaN at one step; its outputs and gradients stay finite."""

    def __init__(self, base: nn.Module, bad_step: int) -> None:
        super().__init__()
        self.base = base
        self.bad_step = bad_step
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # one call with gradients per step, in the G phase
            self.calls += 1
            if self.calls.item() == self.bad_step + 1:
                self.calls.fill_(float("nan"))
        return self.base(z)


class InfGradient(torch.autograd.Function):
    """Identity forward; the backward pass returns Inf, as a gradient that overflowed would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("inf"))


class InfGradientAt(nn.Module):
    """Wrap a generator whose gradients turn Inf at one step, while its outputs and losses stay finite."""

    def __init__(self, base: nn.Module, bad_step: int) -> None:
        super().__init__()
        self.base = base
        self.bad_step = bad_step
        self.calls = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        samples = self.base(z)
        if torch.is_grad_enabled():  # one call with gradients per step, in the G phase
            self.calls += 1
            if self.calls == self.bad_step + 1:
                samples = InfGradient.apply(samples)
        return samples


class RecordingTrainer(Trainer):
    def close(self) -> None:
        if "G_inner" not in self.__dict__:  # set-up failed before the models existed
            super().close()
            return
        for name, module in (("G", self.G_inner), ("D", self.D_inner)):
            state = {key: tensor.detach().clone() for key, tensor in module.state_dict().items()}
            save_file(state, out / f"{name}_rank{self.accelerator.process_index}.safetensors")
        super().close()


def main() -> None:
    log_every = values[1] if mode == "buffer" else 1
    config, data = small_config(out / "run", steps=10, checkpoint_every=2, max_skipped_steps=3, log_every=log_every)
    architecture = default_architecture("dense", "points", [2], config.z_dim, config.width)
    G, D = build_generator(architecture), build_discriminator(architecture)
    if mode == "data":
        bad_rank, first, count = values
        fields = {field.name: getattr(data, field.name) for field in dataclasses.fields(DataSet)}
        data = NaNData(**fields, bad_rank=bad_rank, first=first, count=count)
    elif mode == "buffer":
        G = NaNBuffer(G, values[0])
    else:
        G = InfGradientAt(G, values[0])
    RecordingTrainer(config, data, generator=G, discriminator=D).fit()


try:
    main()
except DistganError as error:
    print(f"error: rank {rank}: {error}", file=sys.stderr)
    sys.exit(1)
