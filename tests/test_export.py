"""`distgan export` and `distgan sample` on a real trained run, with real onnxruntime sessions."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from conftest import assert_ok, assert_user_error, run_distgan
from distgan.export import load_generator
from distgan.imaging import to_uint8_nhwc
from distgan.runtime import OnnxGenerator, slerp


def test_export_reports_parity_at_four_batch_sizes(mnist_run: Path, tmp_path: Path):
    result = run_distgan("export", str(mnist_run), "--out", "g.onnx", cwd=tmp_path)
    assert_ok(result)
    differences = re.findall(r"batch +(\d+): max \|onnxruntime - PyTorch\| = (\S+) \(tolerance 1e-04\) passed",
                             result.stdout)
    assert [int(batch) for batch, _ in differences] == [1, 3, 8, 64]
    assert all(float(value) < 1e-4 for _, value in differences)
    assert "dynamo exporter" in result.stdout
    assert "onnx.checker: passed" in result.stdout
    assert "batch independence: max |alone - in batch| = " in result.stdout


def test_exported_file_contract(exported_onnx: Path, mnist_run: Path):
    model = onnx.load(str(exported_onnx))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata["z_dim"] == "64"
    assert json.loads(metadata["sample_shape"]) == [1, 28, 28]
    assert json.loads(metadata["value_range"]) == [-1.0, 1.0]
    assert metadata["layout"] == "NCHW"
    assert metadata["step"] == "6"
    assert metadata["weights"] == "G_ema"  # the run's generator/ folder contains G_ema by default
    assert metadata["distgan_version"].startswith("0.")

    session = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    (z_input,), (image_output,) = session.get_inputs(), session.get_outputs()
    assert (z_input.name, z_input.type) == ("z", "tensor(float)")
    assert isinstance(z_input.shape[0], str) and z_input.shape[1] == 64  # symbolic batch axis
    assert image_output.name == "image"

    # An independent check at a batch size the export did not try.
    generator, _ = load_generator(mnist_run)
    z = np.random.default_rng(7).standard_normal((5, 64), dtype=np.float32)
    with torch.no_grad():
        expected = generator(torch.from_numpy(z)).numpy()
    actual = session.run(None, {"z": z})[0]
    assert actual.shape == (5, 1, 28, 28)
    assert np.abs(actual - expected).max() < 1e-4
    assert actual.min() >= -1.0 and actual.max() <= 1.0

    sidecar = json.loads(exported_onnx.with_suffix(".json").read_text())
    assert sidecar["onnx"]["metadata"] == metadata


def test_export_raw_generator_and_checkpoint(mnist_run: Path, tmp_path: Path):
    assert_ok(run_distgan("export", str(mnist_run), "--no-ema", "--out", "raw.onnx", cwd=tmp_path))
    checkpoint = mnist_run / "checkpoints" / "step-0000003"
    assert_ok(run_distgan("export", str(checkpoint), "--out", "step3.onnx", cwd=tmp_path))
    raw = {e.key: e.value for e in onnx.load(str(tmp_path / "raw.onnx")).metadata_props}
    step3 = {e.key: e.value for e in onnx.load(str(tmp_path / "step3.onnx")).metadata_props}
    assert (raw["weights"], raw["step"]) == ("G", "6")
    assert (step3["weights"], step3["step"]) == ("G_ema", "3")
    z = np.ones((1, 64), np.float32)
    outputs = [ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
               for name in ("raw.onnx", "step3.onnx")]
    assert not np.allclose(outputs[0], outputs[1])


def test_export_beyond_tolerance_fails_and_writes_nothing(mnist_run: Path, tmp_path: Path):
    result = run_distgan("export", str(mnist_run), "--out", "strict.onnx", "--atol", "1e-12", cwd=tmp_path)
    assert_user_error(result, "disagree beyond the tolerance 1e-12", "Raise --atol only if this difference is acceptable",
                      "strict.onnx was not written")
    assert list(tmp_path.iterdir()) == []


def test_sample_writes_reproducible_grid(exported_onnx: Path, tmp_path: Path):
    for name, seed in (("a.png", "0"), ("b.png", "0"), ("c.png", "1")):
        result = run_distgan("sample", str(exported_onnx), "--n", "16", "--seed", seed, "--out", name, cwd=tmp_path)
        assert_ok(result)
        assert "16 samples of shape [1, 28, 28], CPUExecutionProvider" in result.stdout
    pixels = {name: np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png", "c.png")}
    assert pixels["a.png"].shape == (4 * 30 + 2, 4 * 30 + 2)
    assert np.array_equal(pixels["a.png"], pixels["b.png"])
    assert not np.array_equal(pixels["a.png"], pixels["c.png"])


def test_sample_uses_given_latents(exported_onnx: Path, tmp_path: Path):
    z = np.random.default_rng(0).standard_normal((3, 64), dtype=np.float32)
    np.save(tmp_path / "z.npy", z)
    assert_ok(run_distgan("sample", str(exported_onnx), "--latents", "z.npy", "--columns", "3", "--out", "z.png",
                          cwd=tmp_path))
    assert Image.open(tmp_path / "z.png").size == (3 * 30 + 2, 30 + 2)


def test_runtime_imports_no_torch(exported_onnx: Path):
    code = (
        "import sys\n"
        "from distgan.runtime import OnnxGenerator\n"
        f"generator = OnnxGenerator({str(exported_onnx)!r}, providers='cpu')\n"
        "images = generator.sample(4, seed=0)\n"
        "assert images.shape == (4, 1, 28, 28), images.shape\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_sample_command_imports_no_torch(exported_onnx: Path, tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "distgan", "sample", str(exported_onnx), "--n", "2", "--out", "x.png"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported
    assert "torch" not in imported and "accelerate" not in imported


def test_runtime_cuda_request_without_cuda_session_fails(exported_onnx: Path, tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so a CUDA session may succeed")
    result = run_distgan("sample", str(exported_onnx), "--providers", "cuda", "--out", "x.png", cwd=tmp_path)
    line = assert_user_error(result, "providers='cuda' requested")
    assert not (tmp_path / "x.png").exists()
    assert "CPUExecutionProvider" in line or "no CUDA provider" in line


def test_export_variants_and_uint8_through_cli(mnist_run: Path, tmp_path: Path):
    result = run_distgan("export", str(mnist_run), "--out", "g.onnx", "--postprocess", "uint8", "--optimize", "--fp16",
                         "--int8", cwd=tmp_path)
    assert_ok(result)
    rows = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[0].endswith(".onnx"):
            rows[fields[1]] = fields
    assert list(rows) == ["float32", "optimized", "fp16", "int8"]
    for variant, (name, _, size_mb, max_diff, tolerance, mean_diff, ms, images_per_second) in rows.items():
        assert (tmp_path / name).stat().st_size == pytest.approx(float(size_mb) * 1e6, abs=0.01e6)
        assert float(max_diff) <= float(tolerance)
        assert float(mean_diff) <= float(max_diff)
        assert float(ms) > 0
        assert float(images_per_second) > 0
    assert "dtype=uint8" in result.stdout
    assert "layout=NHWC" in result.stdout
    # The projection of z becomes a matrix product and the 64 -> 32 channel layer four Conv phases, which one
    # DepthToSpace interleaves for the 3x3 convolution of --depth 1 after it. The 32 -> 1 channel layer
    # becomes a MatMul and Col2Im.
    assert "the optimized variant has 3 ConvTranspose rewrite(s)" in result.stdout
    optimized_ops = [node.op_type for node in onnx.load(str(tmp_path / "g.optimized.onnx")).graph.node]
    assert "Gemm" in optimized_ops  # onnxruntime fuses MatMul + Add into Gemm
    # The four phases and the two 3x3 convolutions, into which onnxruntime folds their BatchNorm and
    # fuses the Relu after them (FusedConv).
    assert optimized_ops.count("Conv") + optimized_ops.count("FusedConv") == 6
    assert "BatchNormalization" not in optimized_ops
    assert optimized_ops.count("Col2Im") == 1
    assert "ConvTranspose" not in optimized_ops
    assert optimized_ops.count("DepthToSpace") == 1

    # The uint8 graph draws the same pixels as the float32 file converted in Python, within one level.
    z = np.random.default_rng(0).standard_normal((4, 64), dtype=np.float32)
    pixels = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    assert pixels.dtype == np.uint8
    assert pixels.shape == (4, 28, 28, 1)
    generator, _ = load_generator(mnist_run)
    with torch.no_grad():
        images = generator(torch.from_numpy(z)).numpy()
    assert np.abs(pixels.astype(int) - to_uint8_nhwc(images).astype(int)).max() <= 1

    assert_ok(run_distgan("sample", "g.int8.onnx", "--n", "4", "--out", "int8.png", cwd=tmp_path))
    assert_ok(run_distgan("sample", "g.onnx", "--n", "4", "--out", "uint8.png", cwd=tmp_path))
    assert Image.open(tmp_path / "uint8.png").size == (2 * 30 + 2, 2 * 30 + 2)


def test_sample_interpolation_strip_and_gif(exported_onnx: Path, tmp_path: Path):
    result = run_distgan("sample", str(exported_onnx), "--interpolate", "6", "--seed", "3", "--out", "strip.png",
                         cwd=tmp_path)
    assert_ok(result)
    assert "6 interpolation steps of shape [1, 28, 28]" in result.stdout
    strip = np.asarray(Image.open(tmp_path / "strip.png"))
    assert strip.shape == (30 + 2, 6 * 30 + 2)

    generator = OnnxGenerator(exported_onnx, providers="cpu")
    endpoints = generator.latents(2, seed=3)
    expected = to_uint8_nhwc(generator.generate(endpoints))[..., 0]
    assert np.array_equal(strip[2:30, 2:30], expected[0])  # the strip starts and ends at the seed's two latents
    assert np.array_equal(strip[2:30, 5 * 30 + 2 : 5 * 30 + 30], expected[1])

    assert_ok(run_distgan("sample", str(exported_onnx), "--interpolate", "5", "--seed", "3", "--out", "walk.gif",
                          "--scale", "2", "--frame-ms", "40", cwd=tmp_path))
    gif = Image.open(tmp_path / "walk.gif")
    assert (gif.n_frames, gif.size, gif.info["duration"]) == (5, (56, 56), 40)
    gif.seek(4)
    last = np.asarray(gif.convert("L"))
    assert np.array_equal(last[::2, ::2], expected[1])


def test_slerp_keeps_endpoints_and_norm():
    rng = np.random.default_rng(0)
    start, end = rng.standard_normal((2, 256)).astype(np.float32)
    path = slerp(start, end, 9)
    assert path.shape == (9, 256)
    assert path.dtype == np.float32
    assert np.allclose(path[0], start, atol=1e-5)
    assert np.allclose(path[-1], end, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    # Between two latents of similar norm the spherical path keeps that norm; a straight line dips by ~30%.
    assert norms.min() > 0.9 * min(norms[0], norms[-1])
    assert np.allclose(slerp(start, start, 3), start, atol=1e-5)


def test_exported_images_stay_within_value_range(exported_onnx: Path):
    session = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(3).standard_normal((512, 64), dtype=np.float32) * 3  # large latents push tanh to +-1
    images = session.run(None, {"z": z})[0]
    assert images.min() >= -1.0 and images.max() <= 1.0
