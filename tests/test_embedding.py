"""The exported generator inside other apps: the web page in headless Chromium and the Node.js program.

Both must draw the pixels that the Python runtime computes for the same latents. The tests skip only
where Node.js, Chromium or the kits' npm packages are missing. Under CI (CI set) they fail instead,
because .ci/run installs all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.export import ExportOptions, export_generator
from distgan.imaging import tile, to_pixels
from distgan.models import DCGANGenerator
from distgan.runtime import OnnxGenerator

KIT = Path(__file__).resolve().parents[1] / "export"
CHROMIUM = Path("/usr/bin/chromium")
KIT_TIMEOUT = 180  # seconds for one node program or browser session; both take a few seconds on 2 cores


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    require(path is not None, "Node.js is not installed")
    return path


@pytest.fixture(scope="module")
def web_kit(node: str) -> Path:
    require(CHROMIUM.is_file(), f"Chromium is not installed at {CHROMIUM} (Debian package chromium)")
    for package in ("onnxruntime-web", "playwright-core"):
        require((KIT / "web" / "node_modules" / package).is_dir(), f"{package} is missing: run npm ci in export/web")
    return KIT / "web"


@pytest.fixture(scope="module")
def node_kit(node: str) -> Path:
    for package in ("onnxruntime-node", "pngjs"):
        require((KIT / "node" / "node_modules" / package).is_dir(), f"{package} is missing: run npm ci in export/node")
    return KIT / "node"


@pytest.fixture(scope="module")
def rgb_generator() -> DCGANGenerator:
    """An untrained RGB DCGAN generator whose last layer is scaled so that pixels span the whole range."""
    torch.manual_seed(0)
    generator = DCGANGenerator(z_dim=16, channels=3, resolution=8, width=8).eval()
    with torch.no_grad():
        generator.net[-2].weight.mul_(60.0)
    return generator


@pytest.fixture(scope="module")
def rgb_onnx(rgb_generator: DCGANGenerator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The RGB generator exported twice: float32 NCHW and uint8 NHWC."""
    record = {"kind": "image", "z_dim": 16, "sample_shape": [3, 8, 8], "value_range": [-1.0, 1.0], "layout": "NCHW"}
    folder = tmp_path_factory.mktemp("rgb")
    export_generator(rgb_generator, record, folder / "rgb.onnx")
    export_generator(rgb_generator, record, folder / "rgb_uint8.onnx", ExportOptions(postprocess="uint8"))
    return {"float32": folder / "rgb.onnx", "uint8": folder / "rgb_uint8.onnx"}


def python_grid(model: Path, z: np.ndarray, columns: int | None = None) -> np.ndarray:
    """The grid that distgan's Python runtime draws for latents z, as uint8 [H, W, C]."""
    generator = OnnxGenerator(model, providers="cpu")
    return tile(to_pixels(generator.generate(z)), columns)


def run_node(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["node", *args], cwd=cwd, capture_output=True, text=True, timeout=KIT_TIMEOUT)


def check_page(web_kit: Path, model: Path, z: np.ndarray, tmp_path: Path, screenshot: Path) -> tuple[dict, np.ndarray]:
    np.save(tmp_path / "z.npy", z)
    result = run_node(str(web_kit / "check.mjs"), str(model), "--chromium", str(CHROMIUM), "--latents", "z.npy",
                      "--canvas", "canvas.png", "--screenshot", str(screenshot), cwd=tmp_path)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    canvas = np.asarray(Image.open(tmp_path / "canvas.png").convert("RGBA"))
    return report, canvas


def test_web_page_draws_python_pixels(web_kit: Path, exported_onnx: Path, tmp_path: Path):
    z = np.random.default_rng(11).standard_normal((6, 64), dtype=np.float32)
    screenshot = tmp_path / "web-mnist.png"
    report, canvas = check_page(web_kit, exported_onnx, z, tmp_path, screenshot)
    assert report["consoleErrors"] == []
    assert report["url"].startswith("http://127.0.0.1:")
    assert report["status"] == "64 samples, interpolation 0.00"
    assert report["statusAfterSlider"] == "64 samples, interpolation 0.50"
    assert report["sliderChangedCanvas"] is True
    assert report["newSamplesChangedCanvas"] is True

    expected = python_grid(exported_onnx, z)
    assert canvas.shape == (expected.shape[0], expected.shape[1], 4)
    assert np.abs(canvas[:, :, 0].astype(int) - expected[:, :, 0]).max() <= 1
    assert np.array_equal(canvas[:, :, 0], canvas[:, :, 2])  # grayscale drawn into R, G and B
    assert Image.open(screenshot).size == (1100, 1000)


def test_web_page_draws_rgb_in_channel_order(web_kit: Path, rgb_onnx: dict[str, Path], tmp_path: Path):
    z = np.random.default_rng(12).standard_normal((5, 16), dtype=np.float32)
    expected = python_grid(rgb_onnx["float32"], z)
    assert expected.std() > 40  # the images span the range, so a channel or layout mix-up shows
    for variant, model in rgb_onnx.items():
        report, canvas = check_page(web_kit, model, z, tmp_path, tmp_path / f"web-{variant}.png")
        assert report["consoleErrors"] == []
        assert np.abs(canvas[:, :, :3].astype(int) - expected).max() <= 1, variant


def test_node_program_writes_python_grid(node_kit: Path, exported_onnx: Path, rgb_onnx: dict[str, Path],
                                         tmp_path: Path):
    z = np.random.default_rng(13).standard_normal((7, 64), dtype=np.float32)
    np.save(tmp_path / "z.npy", z)
    result = run_node(str(node_kit / "sample.mjs"), str(exported_onnx), "--latents", "z.npy", "--out", "grid.png",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote grid.png (7 samples, 92x92 pixels, onnxruntime-node" in result.stdout
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (92, 92)  # written as an 8-bit grayscale PNG
    assert np.abs(grid.astype(int) - python_grid(exported_onnx, z)[:, :, 0]).max() <= 1

    rgb_z = np.random.default_rng(14).standard_normal((4, 16), dtype=np.float32)
    np.save(tmp_path / "rgb_z.npy", rgb_z)
    expected = python_grid(rgb_onnx["float32"], rgb_z, columns=4)
    for variant, model in rgb_onnx.items():
        result = run_node(str(node_kit / "sample.mjs"), str(model), "--latents", "rgb_z.npy", "--columns", "4",
                          "--out", f"{variant}.png", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        rgb = np.asarray(Image.open(tmp_path / f"{variant}.png"))
        assert rgb.shape == (12, 42, 3)
        assert np.abs(rgb.astype(int) - expected).max() <= 1, variant


def test_node_program_seeded_and_errors(node_kit: Path, exported_onnx: Path, tmp_path: Path):
    for name in ("a.png", "b.png"):
        result = run_node(str(node_kit / "sample.mjs"), str(exported_onnx), "--n", "4", "--seed", "5", "--out", name,
                          cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))

    np.save(tmp_path / "wide.npy", np.zeros((2, 10), np.float32))
    result = run_node(str(node_kit / "sample.mjs"), str(exported_onnx), "--latents", "wide.npy", cwd=tmp_path)
    assert result.returncode == 1
    assert "error: latents must have shape [n, 64], got [2,10]" in result.stderr
    result = run_node(str(node_kit / "sample.mjs"), str(exported_onnx), "--label", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert "error: this generator is unconditional and takes no label" in result.stderr


class TwoClassGenerator(torch.nn.Module):
    """G(z, labels) with two classes: the label shifts the image's brightness."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.project = torch.nn.Linear(8, 16)
        self.shift = torch.nn.Embedding(2, 1)
        with torch.no_grad():
            self.shift.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.project(z) + self.shift(labels)).view(-1, 1, 4, 4)


def test_node_program_conditional_label(node_kit: Path, tmp_path: Path):
    record = {"kind": "image", "z_dim": 8, "sample_shape": [1, 4, 4], "value_range": [-1.0, 1.0], "layout": "NCHW",
              "num_classes": 2, "class_names": ["dark", "bright"]}
    export_generator(TwoClassGenerator(), record, tmp_path / "c.onnx")
    z = np.random.default_rng(15).standard_normal((3, 8), dtype=np.float32)
    np.save(tmp_path / "z.npy", z)
    generator = OnnxGenerator(tmp_path / "c.onnx", providers="cpu")
    for label in (0, 1):
        result = run_node(str(node_kit / "sample.mjs"), "c.onnx", "--latents", "z.npy", "--label", str(label),
                          "--columns", "3", "--out", f"class{label}.png", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        expected = tile(to_pixels(generator.generate(z, label)), 3)[:, :, 0]
        assert np.abs(np.asarray(Image.open(tmp_path / f"class{label}.png")).astype(int) - expected).max() <= 1
    dark, bright = (np.asarray(Image.open(tmp_path / f"class{label}.png"))[2:6, 2:6].mean() for label in (0, 1))
    assert bright > dark + 50

    result = run_node(str(node_kit / "sample.mjs"), "c.onnx", "--label", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "error: label 2 is out of range; use 0 to 1" in result.stderr
