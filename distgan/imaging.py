"""PNG grids of generated images and scatter plots of 2D points, with numpy and Pillow only.

This module imports no torch, so the torch-free runtime uses it too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GRID_PADDING = 2  # pixels between tiles


def to_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    """Map float images [N, C, H, W] in [-1, 1] to uint8 [N, H, W, C], clipping values outside the range."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape [N, C, H, W], got {list(images.shape)}")
    scaled = np.clip((images.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1)


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Return uint8 [N, H, W, C] pixels of generator output: float NCHW in [-1, 1], or uint8 NHWC as it is."""
    return images if images.dtype == np.uint8 else to_uint8_nhwc(images)


def upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Enlarge uint8 images [..., H, W, C] by an integer factor, repeating each pixel (nearest neighbour)."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    return pixels.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else pixels


def tile(images: np.ndarray, columns: int | None = None, padding: int = GRID_PADDING) -> np.ndarray:
    """Arrange uint8 images [N, H, W, C] in a grid of `columns` (default: near-square) on a black background."""
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 [H, W, C] array (C = 1 or 3) as a PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    image.save(path)
    return path


def save_grid(images: np.ndarray, path: str | Path, columns: int | None = None, scale: int = 1) -> Path:
    """Write generator output (float [N, C, H, W] in [-1, 1] or uint8 [N, H, W, C]) as one PNG grid."""
    return save_image(tile(upscale(to_pixels(images), scale), columns), path)


def save_gif(images: np.ndarray, path: str | Path, frame_ms: int, scale: int = 1) -> Path:
    """Write generator output [N, ...] as an animated GIF of N frames, `frame_ms` milliseconds each, looping."""
    pixels = upscale(to_pixels(images), scale)
    frames = [Image.fromarray(frame[:, :, 0] if frame.shape[2] == 1 else frame) for frame in pixels]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path


def save_scatter(points: np.ndarray, path: str | Path, centers: np.ndarray | None = None,
                 size: int = 512, extent: float | None = None) -> Path:
    """Plot 2D points [N, 2] as dots on a white square, with optional mode centres [K, 2] as red crosses.

    The view spans [-extent, extent] on both axes; by default it fits the points and centres.
    """
    points = np.asarray(points, dtype=np.float64)
    if extent is None:
        reference = points if centers is None else np.concatenate([points, centers])
        finite = reference[np.isfinite(reference).all(axis=1)]
        extent = 1.15 * float(np.abs(finite).max()) if len(finite) else 1.0
        extent = max(extent, 1e-6)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)

    def to_pixels(xy: np.ndarray) -> np.ndarray:
        return (xy * np.array([1.0, -1.0]) / extent + 1.0) * (size / 2)

    draw.line([(size / 2, 0), (size / 2, size)], fill=(220, 220, 220))
    draw.line([(0, size / 2), (size, size / 2)], fill=(220, 220, 220))
    for x, y in to_pixels(points[np.isfinite(points).all(axis=1)]):
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(30, 90, 200))
    if centers is not None:
        for x, y in to_pixels(np.asarray(centers, dtype=np.float64)):
            draw.line([(x - 5, y - 5), (x + 5, y + 5)], fill=(220, 30, 30), width=2)
            draw.line([(x - 5, y + 5), (x + 5, y - 5)], fill=(220, 30, 30), width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
