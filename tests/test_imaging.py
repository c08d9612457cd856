import numpy as np
from PIL import Image

from distgan.imaging import save_grid, save_scatter, tile, to_uint8_nhwc


def test_to_uint8_maps_value_range():
    images = np.array([-1.0, 0.0, 1.0, 2.0, -3.0], dtype=np.float32).reshape(1, 1, 1, 5)
    assert to_uint8_nhwc(images)[0, 0, :, 0].tolist() == [0, 128, 255, 255, 0]


def test_tile_places_images_in_rows():
    images = np.stack([np.full((2, 3, 1), value, np.uint8) for value in (10, 20, 30)])
    grid = tile(images, columns=2, padding=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert grid[1, 1, 0] == 10  # first row, first column
    assert grid[1, 5, 0] == 20  # first row, second column
    assert grid[4, 1, 0] == 30  # second row
    assert grid[0, 0, 0] == 0  # padding


def test_save_grid_writes_png(tmp_path):
    path = save_grid(np.zeros((4, 3, 8, 8), np.float32), tmp_path / "sub" / "grid.png")
    with Image.open(path) as image:
        assert image.mode == "RGB"
        assert image.size == (2 * 10 + 2, 2 * 10 + 2)


def test_save_scatter_marks_points(tmp_path):
    path = save_scatter(np.array([[1.0, 1.0]]), tmp_path / "points.png", size=100, extent=2.0)
    pixels = np.asarray(Image.open(path))
    # The point (1, 1) lands at x = 75, y = 25 in a 100-pixel view of [-2, 2].
    assert tuple(pixels[25, 75]) != (255, 255, 255)
    assert tuple(pixels[75, 25]) == (255, 255, 255)
