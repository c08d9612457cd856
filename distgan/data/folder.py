"""A folder of PNG and JPEG images, nested folders allowed.

When every image lies in a subfolder, the top-level subfolder names are the
class names. Every file's header is read once when the folder is opened, so a
file that is not an image fails at start-up with its name; a file whose pixel
data is damaged fails with its name when a batch reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from distgan.data.images import fit_image
from distgan.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ImageFolder:
    """The image files under `root` in sorted order, with class labels where subfolders give them."""

    root: Path
    files: list[Path]
    labels: np.ndarray
    class_names: list[str]


def scan_folder(root: str | Path) -> ImageFolder:
    """List and check the images under `root`.

    Raises DataError when the folder is missing, holds no PNG or JPEG file, or
    holds a file that PIL cannot identify as an image.
    """
    folder = list_images(root)
    for path in folder.files:
        _check_header(path)
    return folder


def list_images(root: str | Path) -> ImageFolder:
    """List the images under `root` with their labels, without opening any file.

    Raises DataError when the folder is missing or contains no PNG or JPEG file.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path {root} is a file; pass a folder of PNG or JPEG images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no PNG or JPEG images found under {root} (searched nested folders too)")

    top_levels = [p.relative_to(root).parts for p in files]
    if all(len(parts) > 1 for parts in top_levels):
        class_names = sorted({parts[0] for parts in top_levels})
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index[parts[0]] for parts in top_levels], dtype=np.int64)
    else:
        class_names = []
        labels = np.zeros(len(files), dtype=np.int64)
    return ImageFolder(root, files, labels, class_names)


def _check_header(path: Path) -> None:
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the size parses the header
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}. Remove or replace the file.") from None


def decode_file(path: Path, channels: int, resolution: int) -> np.ndarray:
    """Decode one image to uint8 [channels, resolution, resolution]; raises DataError naming the file."""
    try:
        with Image.open(path) as image:
            return fit_image(image, channels, resolution)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot decode image {path}: {error}. Remove or replace the file.") from None


class FolderDataset(torch.utils.data.Dataset):
    """Decoded images of an ImageFolder for a DataLoader.

    An item is (uint8 image, label, error text). A file that fails to decode
    yields a zero image and its error text instead of raising inside a worker
    process, so the training loop raises one clean DataError.
    """

    def __init__(self, folder: ImageFolder, channels: int, resolution: int) -> None:
        self.folder = folder
        self.channels = channels
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.folder.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            pixels = decode_file(self.folder.files[index], self.channels, self.resolution)
            error = ""
        except DataError as failure:
            pixels = np.zeros((self.channels, self.resolution, self.resolution), dtype=np.uint8)
            error = str(failure)
        return torch.from_numpy(pixels), int(self.folder.labels[index]), error
