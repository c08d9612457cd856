"""Data sets: the embedded MNIST digits, image folders, packed image arrays and 2D Gaussian mixtures.

`open_data(config)` resolves the data set named by `config.data` before any
process group exists, and its `source()` later builds the per-rank batch
source on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distgan.data.folder import FolderDataset, ImageFolder, scan_folder
from distgan.data.mixtures import MIXTURES, get_mixture
from distgan.data.mnist import CLASS_NAMES as MNIST_CLASSES
from distgan.data.mnist import MNIST_RESOLUTION, load_mnist
from distgan.data.packed import PackedImages, is_packed, open_packed
from distgan.data.schedule import IndexSchedule
from distgan.data.sources import BatchSource, LoaderSource, MixtureSource, PackedSource, TensorSource
from distgan.errors import ConfigError, DataError
from distgan.seeding import local_rows

FOLDER_RESOLUTION = 64


@dataclass
class DataSet:
    """A resolved data set: what its samples look like and how to feed them to one rank."""

    name: str
    kind: str  # "image" ([C, H, W] in [-1, 1]) or "points" ([2], unbounded)
    sample_shape: list[int]
    size: int | None  # None for a mixture, which has no end
    class_names: list[str] = field(default_factory=list)
    pixels: np.ndarray | None = None
    labels: np.ndarray | None = None
    folder: ImageFolder | None = None
    packed: PackedImages | None = None

    def source(self, *, seed: int, global_batch: int, rank: int, world_size: int, device: torch.device,
               end_step: int, num_workers: int, micro_batches: int = 1) -> BatchSource:
        """Build the batch source of one rank.

        `global_batch` counts the samples of one step over all ranks and
        micro-batches; each rank receives its rows of every micro-batch.
        """
        rows = local_rows(global_batch, micro_batches, rank, world_size)
        if self.kind == "points":
            return MixtureSource(get_mixture(self.name), seed, global_batch, rows, device)
        schedule = IndexSchedule(self.size, global_batch, seed)
        if self.pixels is not None:
            return TensorSource(torch.from_numpy(self.pixels), torch.from_numpy(self.labels), schedule, rows, device)
        if self.packed is not None:
            return PackedSource(self.packed.pixels, torch.from_numpy(self.packed.labels), schedule, rows, device)
        dataset = FolderDataset(self.folder, self.sample_shape[0], self.sample_shape[1])
        return LoaderSource(dataset, schedule, rows, device, end_step, num_workers)


def open_data(data: str, resolution: int | None, channels: int | None) -> DataSet:
    """Resolve `data` ("mnist", "ring8", "grid25", a packed data set or a folder path) into a DataSet.

    Raises DataError for a missing, empty or unreadable folder and ConfigError
    for options that do not apply to the data set.
    """
    if data in MIXTURES:
        if resolution is not None or channels is not None:
            raise ConfigError(f"resolution and channels do not apply to the 2D data set '{data}'; remove them")
        return DataSet(data, "points", [2], None, [])
    if data == "mnist":
        channels = channels or 1
        resolution = resolution or MNIST_RESOLUTION
        pixels, labels = load_mnist(channels, resolution)
        return DataSet("mnist", "image", [channels, resolution, resolution], len(pixels), list(MNIST_CLASSES),
                       pixels=pixels, labels=labels)
    if is_packed(data):
        return _open_packed_data(data, resolution, channels)
    if not Path(data).exists():
        raise DataError(f"data folder not found: {data}; pass a folder of images or one of mnist, "
                        f"{', '.join(MIXTURES)}")
    folder = scan_folder(data)
    channels = channels or 3
    resolution = resolution or FOLDER_RESOLUTION
    name = Path(data).resolve().name or "images"
    return DataSet(name, "image", [channels, resolution, resolution], len(folder.files), folder.class_names,
                   folder=folder)


def _open_packed_data(path: str, resolution: int | None, channels: int | None) -> DataSet:
    packed = open_packed(path)
    packed_channels, packed_resolution, _ = packed.sample_shape
    for option, requested, stored in (("resolution", resolution, packed_resolution),
                                      ("channels", channels, packed_channels)):
        if requested is not None and requested != stored:
            raise ConfigError(f"the packed data set {path} has {option} {stored}, but {option} {requested} was "
                              f"requested; remove the {option} option, or run distgan prepare again with "
                              f"--{option} {requested}")
    name = Path(path).resolve().name or "images"
    return DataSet(name, "image", packed.sample_shape, len(packed.pixels), packed.class_names, packed=packed)


__all__ = ["DataSet", "DataError", "open_data"]
