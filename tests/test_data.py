from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.data import open_data
from distgan.data.folder import scan_folder
from distgan.data.images import fit_image
from distgan.data.mixtures import get_mixture
from distgan.data.schedule import IndexSchedule
from distgan.errors import ConfigError, DataError

CPU = torch.device("cpu")


def test_mnist_has_5000_labelled_digits():
    data = open_data("mnist", None, None)
    assert data.sample_shape == [1, 28, 28]
    assert data.pixels.shape == (5000, 1, 28, 28)
    assert data.pixels.dtype == np.uint8
    assert np.bincount(data.labels).tolist() == [500] * 10
    assert data.class_names == [str(d) for d in range(10)]
    # Real digits: dark background, bright strokes in the middle.
    assert data.pixels[:, :, 0, 0].max() == 0
    assert data.pixels[:, :, 10:18, 10:18].mean() > 60


def test_mnist_resized_to_rgb_32():
    data = open_data("mnist", 32, 3)
    assert data.pixels.shape == (5000, 3, 32, 32)
    assert np.array_equal(data.pixels[:, 0], data.pixels[:, 2])


def test_mnist_source_returns_rank_slices_in_range():
    data = open_data("mnist", None, None)
    halves = [data.source(seed=0, global_batch=8, rank=r, world_size=2, device=CPU, end_step=5, num_workers=0)
              for r in (0, 1)]
    whole = data.source(seed=0, global_batch=8, rank=0, world_size=1, device=CPU, end_step=5, num_workers=0)
    x0, y0 = halves[0].batch(3)
    x1, y1 = halves[1].batch(3)
    x, y = whole.batch(3)
    assert torch.equal(torch.cat([x0, x1]), x)
    assert torch.equal(torch.cat([y0, y1]), y)
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32


def test_schedule_visits_every_sample_once_per_epoch():
    schedule = IndexSchedule(size=10, global_batch=4, seed=3)
    first_epoch = torch.cat([schedule.global_indices(step) for step in range(5)])  # 20 positions = 2 epochs
    assert sorted(first_epoch[:10].tolist()) == list(range(10))
    assert sorted(first_epoch[10:].tolist()) == list(range(10))
    assert not torch.equal(first_epoch[:10], first_epoch[10:])  # a new order each epoch
    again = IndexSchedule(size=10, global_batch=4, seed=3)
    assert torch.equal(again.global_indices(4), schedule.global_indices(4))  # a function of (seed, step) only
    other = IndexSchedule(size=10, global_batch=4, seed=4)
    assert not torch.equal(other.global_indices(0), schedule.global_indices(0))


@pytest.mark.parametrize(("name", "modes", "std"), [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixture_modes_and_spread(name, modes, std):
    mixture = get_mixture(name)
    assert len(mixture.centers) == modes
    points, labels = mixture.sample(20000, torch.Generator().manual_seed(0), CPU)
    offsets = points - mixture.centers[labels]
    assert abs(offsets.std().item() - std) < 0.1 * std
    assert torch.bincount(labels, minlength=modes).min() > 20000 / modes * 0.8
    if name == "ring8":
        assert torch.allclose(mixture.centers.norm(dim=1), torch.full((8,), 2.0))
    else:
        assert sorted(set(mixture.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


def test_mixture_rejects_image_options():
    with pytest.raises(ConfigError, match="do not apply to the 2D data set 'ring8'"):
        open_data("ring8", 32, None)


def _write(path: Path, size=(20, 10), mode="RGB", color=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode != "L" else 128).save(path)
    return path


def test_fit_image_resizes_shorter_side_then_crops_center():
    image = Image.new("RGB", (30, 10))
    for x in range(30):
        for y in range(10):
            image.putpixel((x, y), (255, 0, 0) if x < 10 else (0, 255, 0) if x < 20 else (0, 0, 255))
    array = fit_image(image, 3, 10)
    assert array.shape == (3, 10, 10)
    assert array[1].min() == 255 and array[0].max() == 0  # only the green middle third is left
    small = fit_image(Image.new("L", (7, 14), 99), 1, 28)  # upscaled: 28 x 56, cropped to 28 x 28
    assert small.shape == (1, 28, 28) and int(small.mean()) == 99


def test_folder_with_nested_classes(tmp_path: Path):
    _write(tmp_path / "cats" / "a.png")
    _write(tmp_path / "cats" / "deep" / "b.JPG")
    _write(tmp_path / "dogs" / "c.jpeg", mode="L")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image suffix: ignored")
    folder = scan_folder(tmp_path)
    assert [p.name for p in folder.files] == ["a.png", "b.JPG", "c.jpeg"]
    assert folder.class_names == ["cats", "dogs"]
    assert folder.labels.tolist() == [0, 0, 1]
    data = open_data(str(tmp_path), 16, 3)
    source = data.source(seed=0, global_batch=3, rank=0, world_size=1, device=CPU, end_step=2, num_workers=0)
    x, y = source.batch(0)
    assert list(x.shape) == [3, 3, 16, 16]
    assert sorted(y.tolist()) == [0, 0, 1]


def test_folder_without_classes_at_top_level(tmp_path: Path):
    _write(tmp_path / "a.png")
    _write(tmp_path / "sub" / "b.png")
    folder = scan_folder(tmp_path)
    assert folder.class_names == []


def test_folder_errors(tmp_path: Path):
    with pytest.raises(DataError, match="data folder not found"):
        scan_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG or JPEG images found"):
        scan_folder(tmp_path / "empty")
    file = _write(tmp_path / "one.png")
    with pytest.raises(DataError, match="is a file"):
        scan_folder(file)
    bad = tmp_path / "bad"
    _write(bad / "good.png")
    (bad / "broken.png").write_bytes(b"this is not a PNG file")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        scan_folder(bad)


def test_damaged_pixels_fail_when_a_batch_reaches_them(tmp_path: Path):
    good = _write(tmp_path / "good.png", size=(64, 64))
    damaged = tmp_path / "damaged.png"
    data = good.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut short
    dataset = open_data(str(tmp_path), 16, 3)
    source = dataset.source(seed=0, global_batch=2, rank=0, world_size=1, device=CPU, end_step=1, num_workers=1)
    with pytest.raises(DataError, match="cannot decode image .*damaged.png"):
        source.batch(0)


def test_fit_image_scales_sixteen_bit_grayscale():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    array = fit_image(Image.fromarray(ramp), 1, 8)[0, 0]
    assert array[0] < 20 and array[-1] > 235  # a ramp, not white from clipping
    assert (np.diff(array.astype(int)) > 0).all()


def test_fit_image_applies_exif_orientation(tmp_path: Path):
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (0, 0, 20, 20))  # left half white
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the white half on top
    image.save(tmp_path / "photo.jpg", exif=exif)
    with Image.open(tmp_path / "photo.jpg") as photo:
        array = fit_image(photo, 1, 20)[0]
    assert array[0].mean() > 200 and array[-1].mean() < 50


def test_fit_image_puts_transparency_on_white():
    assert fit_image(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), 3, 4)[:, 0, 0].tolist() == [255, 255, 255]
    assert fit_image(Image.new("RGBA", (4, 4), (255, 0, 0, 255)), 3, 4)[:, 0, 0].tolist() == [255, 0, 0]
