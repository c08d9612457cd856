"""Synthetic image folders for the benchmarks, so that they need no downloaded data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

NOISE_STD = 8.0  # pixel noise on top of the gradients, so PNG files compress like photos rather than flat color


def write_image_folder(root: Path, count: int, size: int, classes: int = 4, seed: int = 0) -> Path:
    """Write `count` RGB PNG images of size x size pixels into `classes` subfolders of `root`; return `root`.

    Each image is a random two-color gradient plus Gaussian noise, so that
    decoding costs about what a real photo of that size costs.
    """
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    for i in range(count):
        start, stop = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        direction = ramp[:, None] if i % 2 else ramp[None, :]
        weight = np.broadcast_to(direction, (size, size))[..., None]
        pixels = start * (1 - weight) + stop * weight + rng.normal(0, NOISE_STD, size=(size, size, 3))
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.png")
    return root
