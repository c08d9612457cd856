"""Batch sources: the local slice of each step's global batch, on the training device.

`batch(step)` returns (samples float32 [b, *sample_shape], labels int64 [b])
for the rows of the step's global batch that belong to one rank (see
seeding.local_rows), in micro-batch order. Images come in [-1, 1].
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch

from distgan.data.folder import FolderDataset
from distgan.data.mixtures import Mixture
from distgan.data.schedule import IndexSchedule
from distgan.errors import DataError
from distgan.seeding import make_generator


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels to float32 in [-1, 1]."""
    return pixels.float().div_(127.5).sub_(1.0)


class BatchSource(Protocol):
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def close(self) -> None: ...


class TensorSource:
    """A data set held in memory on the device, indexed by the step's schedule."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, schedule: IndexSchedule, rows: torch.Tensor,
                 device: torch.device) -> None:
        self.pixels = pixels.to(device)
        self.labels = labels.to(device)
        self.schedule = schedule
        self.rows = rows
        self.device = device

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.schedule.local_indices(step, self.rows).to(self.device, non_blocking=True)
        return pixels_to_float(self.pixels[indices]), self.labels[indices]

    def close(self) -> None:
        pass


class PackedSource:
    """Rows of a memory-mapped packed data set, gathered on the host and copied to the device.

    On a CUDA device the rows are gathered straight into pinned memory, so the
    copy to the device runs asynchronously. torch's caching host allocator
    does not hand that memory out again before the copy has finished.
    """

    def __init__(self, pixels: np.ndarray, labels: torch.Tensor, schedule: IndexSchedule, rows: torch.Tensor,
                 device: torch.device) -> None:
        self.pixels = pixels
        self.labels = labels.to(device)
        self.schedule = schedule
        self.rows = rows
        self.device = device
        self.pin_memory = device.type == "cuda"

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.schedule.local_indices(step, self.rows)
        if self.pin_memory:
            indices = indices.pin_memory()  # so that their copy to the device is asynchronous too
        host = torch.empty((len(indices), *self.pixels.shape[1:]), dtype=torch.uint8, pin_memory=self.pin_memory)
        # The indices come from a permutation of range(N), so mode="clip" never clips; it only lets
        # numpy write into `out` without the intermediate buffer that mode="raise" needs.
        np.take(self.pixels, indices.numpy(), axis=0, out=host.numpy(), mode="clip")
        pixels = host.to(self.device, non_blocking=True)
        return pixels_to_float(pixels), self.labels[indices.to(self.device, non_blocking=True)]

    def close(self) -> None:
        pass


class MixtureSource:
    """Fresh points of a 2D mixture for every step, drawn on the device from (seed, step)."""

    def __init__(self, mixture: Mixture, seed: int, global_batch: int, rows: torch.Tensor,
                 device: torch.device) -> None:
        self.mixture = mixture
        self.seed = seed
        self.global_batch = global_batch
        self.rows = rows.to(device)
        self.device = device

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = make_generator(self.seed, "data", step, device=self.device)
        points, modes = self.mixture.sample(self.global_batch, generator, self.device)
        return points[self.rows], modes[self.rows]

    def close(self) -> None:
        pass


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yield this rank's indices for steps start_step, start_step + 1, ..., end_step - 1."""

    def __init__(self, schedule: IndexSchedule, rows: torch.Tensor, start_step: int, end_step: int) -> None:
        self.schedule = schedule
        self.rows = rows
        self.start_step = start_step
        self.end_step = end_step

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            yield self.schedule.local_indices(step, self.rows).tolist()

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


class LoaderSource:
    """Images decoded by DataLoader workers, in the order of the step schedule."""

    def __init__(self, dataset: FolderDataset, schedule: IndexSchedule, rows: torch.Tensor,
                 device: torch.device, end_step: int, num_workers: int) -> None:
        self.dataset = dataset
        self.schedule = schedule
        self.rows = rows
        self.device = device
        self.end_step = end_step
        self.num_workers = num_workers
        self._iterator: Iterator | None = None
        self._next_step = -1

    def _start(self, step: int) -> None:
        sampler = StepBatchSampler(self.schedule, self.rows, step, self.end_step)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        self._iterator = iter(loader)
        self._next_step = step

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step != self._next_step or step >= self.end_step:
            self.end_step = max(self.end_step, step + 1)
            self._start(step)
        pixels, labels, errors = next(self._iterator)
        self._next_step += 1
        failures = [error for error in errors if error]
        if failures:
            raise DataError(failures[0])
        pixels = pixels.to(self.device, non_blocking=True)
        return pixels_to_float(pixels), labels.to(self.device, non_blocking=True)

    def close(self) -> None:
        self._iterator = None
