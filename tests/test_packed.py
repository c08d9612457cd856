"""`distgan prepare` and training on a packed data set, through the real CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_ok, assert_user_error, run_distgan
from distgan.data import open_data
from distgan.data.folder import decode_file
from distgan.data.packed import open_packed, pack_folder, verify_packed
from distgan.errors import ConfigError, DataError

CPU = torch.device("cpu")


def _image_folder(root: Path) -> list[Path]:
    """Write 12 images of two classes with distinct sizes and colors; return them in sorted order."""
    rng = np.random.default_rng(0)
    paths = []
    for label, name in enumerate(["cats", "dogs"]):
        for i in range(6):
            path = root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(20 + 3 * i, 24, 3), dtype=np.uint8)
            pixels[..., label] = 255  # red cats, green dogs
            Image.fromarray(pixels).save(path)
            paths.append(path)
    return sorted(paths)


def test_prepare_round_trip(tmp_path: Path):
    files = _image_folder(tmp_path / "src")
    result = run_distgan("prepare", "src", "packed", "--resolution", "16", "--num-workers", "2", cwd=tmp_path)
    assert_ok(result)
    assert "12 images of shape [3, 16, 16], 2 classes" in result.stdout

    packed = open_packed(tmp_path / "packed")
    assert packed.pixels.shape == (12, 3, 16, 16)
    assert isinstance(packed.pixels, np.memmap)
    assert packed.class_names == ["cats", "dogs"]
    assert packed.labels.tolist() == [0] * 6 + [1] * 6
    for i, path in enumerate(files):
        assert np.array_equal(packed.pixels[i], decode_file(path, 3, 16)), path.name
    assert packed.sha256 in result.stdout
    assert verify_packed(tmp_path / "packed")
    index = json.loads((tmp_path / "packed" / "index.json").read_text())
    assert index["files"][0] == "cats/00.jpg"
    assert index["count"] == 12


def test_packed_batches_equal_folder_batches(tmp_path: Path):
    _image_folder(tmp_path / "src")
    pack_folder(tmp_path / "src", tmp_path / "packed", 3, 16)
    folder = open_data(str(tmp_path / "src"), 16, 3)
    packed = open_data(str(tmp_path / "packed"), None, None)
    assert packed.sample_shape == [3, 16, 16]
    assert packed.class_names == ["cats", "dogs"]
    assert packed.name == "packed"
    options = dict(seed=5, global_batch=8, world_size=1, rank=0, device=CPU, end_step=4, num_workers=0)
    folder_source = folder.source(**options)
    packed_source = packed.source(**options)
    for step in range(3):  # step 1 crosses into the second epoch of 12 images
        x_folder, y_folder = folder_source.batch(step)
        x_packed, y_packed = packed_source.batch(step)
        assert torch.equal(x_folder, x_packed), f"step {step}"
        assert torch.equal(y_folder, y_packed), f"step {step}"
    assert x_packed.dtype == torch.float32
    assert x_packed.min() >= -1
    assert x_packed.max() <= 1

    halves = [packed.source(**{**options, "world_size": 2, "rank": rank}).batch(2) for rank in (0, 1)]
    assert torch.equal(torch.cat([halves[0][0], halves[1][0]]), x_packed)
    assert torch.equal(torch.cat([halves[0][1], halves[1][1]]), y_packed)


def test_prepare_lists_every_bad_image(tmp_path: Path):
    files = _image_folder(tmp_path / "src")
    (tmp_path / "src" / "cats" / "text.png").write_bytes(b"not an image")
    data = files[1].read_bytes()
    (tmp_path / "src" / "dogs" / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut short
    result = run_distgan("prepare", "src", "out/packed", "--resolution", "16", "--num-workers", "0", cwd=tmp_path)
    assert_user_error(result, "2 of 14 images under src cannot be decoded")
    assert "cats/text.png: cannot identify image file" in result.stderr
    assert "dogs/cut.png: " in result.stderr
    assert not (tmp_path / "out" / "packed").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary directory is gone too


def test_prepare_errors(tmp_path: Path):
    _image_folder(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    assert_user_error(run_distgan("prepare", "src", "taken", cwd=tmp_path),
                      "taken already exists; remove it or choose another destination")
    assert_user_error(run_distgan("prepare", "absent", "packed", cwd=tmp_path), "data folder not found: absent")
    assert_user_error(run_distgan("prepare", "src", "packed", "--channels", "2", cwd=tmp_path),
                      "channels must be 1 or 3, got 2")
    assert not (tmp_path / "packed").exists()


def test_packed_option_mismatch_and_damage(tmp_path: Path):
    _image_folder(tmp_path / "src")
    pack_folder(tmp_path / "src", tmp_path / "packed", 1, 8)
    with pytest.raises(ConfigError, match="has resolution 8, but resolution 16 was requested"):
        open_data(str(tmp_path / "packed"), 16, None)
    with pytest.raises(ConfigError, match="has channels 1, but channels 3 was requested"):
        open_data(str(tmp_path / "packed"), 8, 3)
    assert open_data(str(tmp_path / "packed"), 8, 1).sample_shape == [1, 8, 8]

    pixels = tmp_path / "packed" / "pixels.npy"
    pixels.write_bytes(pixels.read_bytes()[:-64])
    with pytest.raises(DataError, match="cannot read the packed data set"):
        open_packed(tmp_path / "packed")


def test_hash_detects_changed_pixels(tmp_path: Path):
    _image_folder(tmp_path / "src")
    pack_folder(tmp_path / "src", tmp_path / "packed", 3, 8)
    pixels = np.load(tmp_path / "packed" / "pixels.npy", mmap_mode="r+")
    pixels[3, 0, 0, 0] ^= 1
    pixels.flush()
    del pixels
    assert not verify_packed(tmp_path / "packed")


def test_train_reads_packed_data(tmp_path: Path):
    _image_folder(tmp_path / "src")
    assert_ok(run_distgan("prepare", "src", "faces", "--resolution", "16", "--num-workers", "0", cwd=tmp_path))
    result = run_distgan("train", "--data", "faces", "--cpu", "--steps", "2", "--batch-size", "4", "--width", "8",
                         "--log-every", "1", "--sample-every", "0", cwd=tmp_path)
    assert_ok(result)
    run = tmp_path / "runs" / "faces"
    assert "resolution = 16" in (run / "config.toml").read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    record = json.loads((run / "generator" / "generator.json").read_text())
    assert record["sample_shape"] == [3, 16, 16]
    assert record["class_names"] == ["cats", "dogs"]
