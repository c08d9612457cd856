"""Image decoding shared by the data sets: channels conversion, resize, center crop."""

from __future__ import annotations

import numpy as np
from PIL import Image

PIL_MODES = {1: "L", 3: "RGB"}


def fit_image(image: Image.Image, channels: int, resolution: int) -> np.ndarray:
    """Convert to `channels`, resize the shorter side to `resolution`, center crop to a square.

    Returns uint8 [channels, resolution, resolution].
    """
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
