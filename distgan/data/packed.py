"""Packed data sets: an image folder decoded once into a uint8 array that training memory-maps.

`distgan prepare SRC DST` writes the directory DST with

    pixels.npy    uint8 [N, C, H, W], the decoded, resized and center-cropped images
    labels.npy    int64 [N], class indices (all 0 when the folder has no class subfolders)
    index.json    format, shape, class names, source file names and a SHA-256 of pixels and labels

Training opens pixels.npy with numpy's mmap_mode, so a batch is a gather of
rows from the page cache with no per-image decoding. Every image is decoded
once while packing; the bad ones are all reported together by name, and a
failed or interrupted pack leaves nothing at DST, because everything is
written into a temporary directory beside DST that is renamed into place only
when complete.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distgan import __version__
from distgan.data.folder import decode_file, list_images
from distgan.errors import DataError

PACKED_FORMAT = "distgan-packed"
PACKED_FORMAT_VERSION = 1
INDEX_FILE = "index.json"
PIXELS_FILE = "pixels.npy"
LABELS_FILE = "labels.npy"
DECODE_CHUNK = 32  # images handed to a worker process at a time
HASH_BLOCK_BYTES = 64 << 20  # pixels read into memory at a time while hashing


@dataclass
class PackedImages:
    """An opened packed data set: memory-mapped pixels, labels in memory and the index record."""

    path: Path
    pixels: np.ndarray  # uint8 [N, C, H, W], a read-only memory map
    labels: np.ndarray  # int64 [N]
    class_names: list[str]
    sha256: str

    @property
    def sample_shape(self) -> list[int]:
        return list(self.pixels.shape[1:])


@dataclass
class PackReport:
    """Summary of a packed data set written by `pack_folder`: directory, image count and shape, size and hash."""

    path: Path
    count: int
    sample_shape: list[int]
    class_names: list[str]
    size_bytes: int
    sha256: str


def is_packed(path: str | Path) -> bool:
    """Return whether `path` looks like a directory written by pack_folder: an index.json beside pixels.npy.

    A damaged index still counts, so that open_packed() reports the damage
    instead of the folder being searched for images.
    """
    return (Path(path) / INDEX_FILE).is_file() and (Path(path) / PIXELS_FILE).is_file()


def _decode_task(task: tuple[Path, int, int]) -> tuple[np.ndarray | None, str]:
    path, channels, resolution = task
    try:
        return decode_file(path, channels, resolution), ""
    except DataError as error:
        return None, str(error)


def _failure_message(source: Path, total: int, failures: list[tuple[Path, str]]) -> str:
    # decode_file's message ends in advice for one file; the combined message gives it once for all.
    lines = [f"{len(failures)} of {total} images under {source} cannot be decoded; remove or replace them "
             f"and run distgan prepare again:"]
    for path, error in failures:
        reason = error.removeprefix(f"cannot decode image {path}: ").removesuffix(" Remove or replace the file.")
        lines.append(f"  {path.relative_to(source)}: {reason}")
    return "\n".join(lines)


def _decoded_images(tasks: list[tuple[Path, int, int]], num_workers: int):
    if num_workers == 0:
        yield from map(_decode_task, tasks)
        return
    # The platform's default start method, as torch's DataLoader uses: the workers run only PIL and numpy.
    with multiprocessing.Pool(num_workers) as pool:
        yield from pool.imap(_decode_task, tasks, chunksize=DECODE_CHUNK)


def pack_folder(source: str | Path, destination: str | Path, channels: int, resolution: int, *,
                num_workers: int = 0, progress: Callable[[int], None] | None = None) -> PackReport:
    """Decode every image under `source` to uint8 [channels, resolution, resolution] and pack them at `destination`.

    Images are converted, resized and center-cropped as training on the
    folder would do, and labels come from top-level subfolders in the same way.
    `num_workers` processes decode in parallel (0 decodes in this process) and
    `progress` is called with the number of images decoded so far.

    Raises DataError when `destination` exists, when `source` is missing or
    has no images, and, listing every file, when some images cannot be decoded.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise DataError(f"{destination} already exists; remove it or choose another destination")
    folder = list_images(source)
    count = len(folder.files)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.parent / f".{destination.name}.tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        pixels = np.lib.format.open_memmap(temporary / PIXELS_FILE, mode="w+", dtype=np.uint8,
                                           shape=(count, channels, resolution, resolution))
        failures: list[tuple[Path, str]] = []
        tasks = [(path, channels, resolution) for path in folder.files]
        for i, (image, error) in enumerate(_decoded_images(tasks, num_workers)):
            if image is None:
                failures.append((folder.files[i], error))
            else:
                pixels[i] = image
            if progress is not None:
                progress(i + 1)
        if failures:
            raise DataError(_failure_message(source, count, failures))
        pixels.flush()
        del pixels

        labels = folder.labels.astype(np.int64)
        np.save(temporary / LABELS_FILE, labels)
        digest = _content_hash(temporary)
        record = {
            "format": PACKED_FORMAT,
            "format_version": PACKED_FORMAT_VERSION,
            "distgan_version": __version__,
            "count": count,
            "sample_shape": [channels, resolution, resolution],
            "class_names": folder.class_names,
            "sha256": digest,
            "source": str(source.resolve()),
            "files": [str(path.relative_to(source)) for path in folder.files],
        }
        (temporary / INDEX_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        for name in (PIXELS_FILE, LABELS_FILE, INDEX_FILE):
            _fsync(temporary / name)
        os.rename(temporary, destination)
    except BaseException:
        # Interrupts too: whatever stops the pack, nothing half-written stays behind.
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    size = sum(file.stat().st_size for file in destination.iterdir())
    return PackReport(destination, count, [channels, resolution, resolution], folder.class_names, size, digest)


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _content_hash(directory: Path) -> str:
    """SHA-256 of the pixel bytes followed by the label bytes, both in C order."""
    digest = hashlib.sha256()
    pixels = np.load(directory / PIXELS_FILE, mmap_mode="r")
    rows_per_block = max(1, HASH_BLOCK_BYTES // pixels[0].nbytes)
    for start in range(0, len(pixels), rows_per_block):
        digest.update(np.ascontiguousarray(pixels[start : start + rows_per_block]).data)
    digest.update(np.ascontiguousarray(np.load(directory / LABELS_FILE)).data)
    return digest.hexdigest()


def _read_index(path: Path) -> dict[str, Any]:
    try:
        record = json.loads((path / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read the index of the packed data set {path}: {error}; "
                        "run distgan prepare again") from None
    if not isinstance(record, dict) or record.get("format") != PACKED_FORMAT:
        raise DataError(f"{path / INDEX_FILE} is not the index of a packed data set; run distgan prepare again")
    version = record.get("format_version")
    if version != PACKED_FORMAT_VERSION:
        raise DataError(f"the packed data set {path} has format version {version}, but this distgan reads version "
                        f"{PACKED_FORMAT_VERSION}; run distgan prepare again")
    shape = record.get("sample_shape")
    valid = {
        "count": isinstance(record.get("count"), int) and record["count"] >= 1,
        "sample_shape": isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n >= 1 for n in shape),
        "class_names": isinstance(record.get("class_names"), list),
        "sha256": isinstance(record.get("sha256"), str),
    }
    broken = [name for name, ok in valid.items() if not ok]
    if broken:
        raise DataError(f"the index of the packed data set {path} has missing or invalid fields: {', '.join(broken)}; "
                        "run distgan prepare again")
    return record


def open_packed(path: str | Path) -> PackedImages:
    """Open a packed data set for training: memory-map its pixels and check them against the index.

    Raises DataError when a file is missing or damaged or does not match the index.
    """
    path = Path(path)
    record = _read_index(path)
    expected = (record["count"], *record["sample_shape"])
    try:
        pixels = np.load(path / PIXELS_FILE, mmap_mode="r", allow_pickle=False)
        labels = np.load(path / LABELS_FILE, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the packed data set {path}: {error}; run distgan prepare again") from None
    if pixels.dtype != np.uint8 or pixels.shape != expected:
        raise DataError(f"{path / PIXELS_FILE} contains {pixels.dtype} {list(pixels.shape)}, but the index expects "
                        f"uint8 {list(expected)}; the data set is damaged, run distgan prepare again")
    if labels.dtype != np.int64 or labels.shape != (record["count"],):
        raise DataError(f"{path / LABELS_FILE} contains {labels.dtype} {list(labels.shape)}, but the index expects "
                        f"int64 [{record['count']}]; the data set is damaged, run distgan prepare again")
    return PackedImages(path, pixels, labels, list(record["class_names"]), record["sha256"])


def verify_packed(path: str | Path) -> bool:
    """Return whether the pixels and labels at `path` still hash to the SHA-256 in its index.

    Reads every byte, so training does not call it; open_packed checks only shapes and types.
    """
    path = Path(path)
    return _content_hash(path) == _read_index(path)["sha256"]
