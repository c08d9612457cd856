"""Image decoding shared by the data sets: orientation, bit depth, transparency, resize, center crop."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

PIL_MODES = {1: "L", 3: "RGB"}
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
BACKGROUND = (255, 255, 255)  # what transparent pixels become: white, as image viewers show them


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit grayscale image to 8 bits; PIL's own convert("L") clips every value above 255."""
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite an image with transparency over a white background."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def fit_image(image: Image.Image, channels: int, resolution: int) -> np.ndarray:
    """Convert to `channels`, resize the shorter side to `resolution`, center crop to a square.

    The EXIF orientation is applied first, so photos are not trained sideways.
    16-bit grayscale is scaled to 8 bits, and transparent pixels become white.
    Returns uint8 [channels, resolution, resolution].
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        image = _to_eight_bit(image)
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
    image = image.convert(PIL_MODES[channels])
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    left = (new_size[0] - resolution) // 2
    top = (new_size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))
