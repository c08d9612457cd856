"""Differentiable augmentation (DiffAugment, Zhao et al., 2020) of the images that D receives.

The same kinds of transform apply to real and generated images, in the D
phase and in the G phase, and every transform is differentiable with
respect to the image, so G learns through it. The transforms:

- color: add a brightness offset in [-0.5, 0.5), scale the saturation by a
  factor in [0, 2) and the contrast by a factor in [0.5, 1.5).
- translation: shift by a whole number of pixels in [-r, r] on each axis,
  r = 1/8 of the side, filling with zeros.
- cutout: zero a square of half the side, centred on a random pixel.

The parameters of a step are drawn for the global batch from (seed, stream,
step) and each rank takes its rows, so a run with augmentation gives the
same result on any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from distgan.seeding import make_generator

TRANSLATION_RATIO = 0.125  # largest shift as a fraction of the image side
CUTOUT_RATIO = 0.5  # side of the cut-out square as a fraction of the image side


@dataclass
class AugmentParams:
    """Per-sample parameters of one augmentation; a field is None when its transform is off."""

    brightness: torch.Tensor | None = None  # [B] offsets in [-0.5, 0.5)
    saturation: torch.Tensor | None = None  # [B] factors in [0, 2)
    contrast: torch.Tensor | None = None  # [B] factors in [0.5, 1.5)
    shift: torch.Tensor | None = None  # [B, 2] int64 pixel shifts (rows, columns)
    cutout: torch.Tensor | None = None  # [B, 2] int64 centre pixel (row, column)

    def select(self, rows: torch.Tensor) -> AugmentParams:
        """Return the parameters of the samples at `rows`."""
        return AugmentParams(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                                for f in fields(self)})

    def chunk(self, count: int) -> list[AugmentParams]:
        """Split along the batch into `count` equal parts, like torch.chunk."""
        parts: list[dict[str, torch.Tensor | None]] = [{} for _ in range(count)]
        for f in fields(self):
            value = getattr(self, f.name)
            pieces = [None] * count if value is None else value.chunk(count)
            for part, piece in zip(parts, pieces):
                part[f.name] = piece
        return [AugmentParams(**part) for part in parts]


class DiffAugment:
    """Draw and apply the transforms of `policy` to images [B, C, H, W] of side `size`."""

    def __init__(self, policy: tuple[str, ...], size: int) -> None:
        self.policy = policy
        self.size = size
        self.reach = int(size * TRANSLATION_RATIO + 0.5)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def draw(self, seed: int, stream: str, step: int, count: int, device: torch.device) -> AugmentParams:
        """Draw the parameters of `count` samples (a step's global batch) from (seed, stream, step)."""
        generator = make_generator(seed, "augment", stream, step, device=device)
        params = AugmentParams()

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(count, generator=generator, device=device)

        if "color" in self.policy:
            params.brightness = uniform(-0.5, 0.5)
            params.saturation = uniform(0.0, 2.0)
            params.contrast = uniform(0.5, 1.5)
        if "translation" in self.policy:
            params.shift = torch.randint(-self.reach, self.reach + 1, (count, 2), generator=generator, device=device)
        if "cutout" in self.policy:
            params.cutout = torch.randint(0, self.size, (count, 2), generator=generator, device=device)
        return params

    def __call__(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply the transforms in the fixed order color, translation, cutout."""
        if params.brightness is not None:
            images = color(images, params.brightness, params.saturation, params.contrast)
        if params.shift is not None:
            images = translate(images, params.shift, self.reach)
        if params.cutout is not None:
            images = cut_out(images, params.cutout, int(self.size * CUTOUT_RATIO + 0.5))
        return images


def color(images: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor,
          contrast: torch.Tensor) -> torch.Tensor:
    """Shift the brightness, then scale the saturation and the contrast, one factor per image."""
    per_image = [-1, 1, 1, 1]
    images = images + brightness.view(per_image).to(images.dtype)
    gray = images.mean(dim=1, keepdim=True)
    images = (images - gray) * saturation.view(per_image).to(images.dtype) + gray
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * contrast.view(per_image).to(images.dtype) + mean


def translate(images: torch.Tensor, shift: torch.Tensor, reach: int) -> torch.Tensor:
    """Move each image by shift[b] = (rows, columns) pixels, |shift| <= reach, filling the border with zeros."""
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, [reach, reach, reach, reach])
    # Output pixel (i, j) reads padded pixel (i + reach - shift_row, j + reach - shift_column).
    rows = torch.arange(height, device=images.device)[None, :] + (reach - shift[:, 0:1])
    columns = torch.arange(width, device=images.device)[None, :] + (reach - shift[:, 1:2])
    index = torch.arange(batch, device=images.device)[:, None, None]
    moved = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], columns[:, None, :]]
    return moved.permute(0, 3, 1, 2)


def cut_out(images: torch.Tensor, centres: torch.Tensor, side: int) -> torch.Tensor:
    """Zero a square of `side` pixels around centres[b] = (row, column) in each image, clipped at the border."""
    _, _, height, width = images.shape
    rows = torch.arange(height, device=images.device)[None, :] - centres[:, 0:1]
    columns = torch.arange(width, device=images.device)[None, :] - centres[:, 1:2]
    half = side // 2
    inside_rows = (rows >= -half) & (rows < side - half)
    inside_columns = (columns >= -half) & (columns < side - half)
    keep = ~(inside_rows[:, :, None] & inside_columns[:, None, :])
    return images * keep[:, None, :, :].to(images.dtype)
