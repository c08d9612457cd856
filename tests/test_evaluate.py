"""`distgan evaluate` through the CLI: run directories and ONNX files, 1 and 2 processes, and its errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import assert_ok, assert_user_error, launch_distgan, run_distgan


def read_result(folder: Path, tag: str) -> dict:
    return json.loads((folder / "evaluation" / f"{tag}.json").read_text())


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-step dense run on grid25, exported to ONNX."""
    root = tmp_path_factory.mktemp("grid_eval")
    assert_ok(run_distgan("train", "--cpu", "--data", "grid25", "--steps", "40", "--batch-size", "64", "--width", "32",
                          "--sample-every", "0", "--log-every", "20", "--out", "run", cwd=root))
    assert_ok(run_distgan("export", "run", cwd=root))
    return root / "run"


def test_mixture_evaluation_of_run_and_onnx_agree(grid_run: Path):
    result = run_distgan("evaluate", str(grid_run), "--n", "3000", cwd=grid_run.parent)
    assert_ok(result)
    assert "modes covered" in result.stdout
    assert "high-quality samples" in result.stdout
    torch_result = read_result(grid_run, "G_ema")
    assert torch_result["step"] == 40
    assert torch_result["samples"] == 3000
    assert torch_result["data"] == "grid25"
    mixture = torch_result["metrics"]["mixture"]
    assert mixture["modes_total"] == 25
    assert 0 <= mixture["modes_covered"] <= 25
    assert sum(mixture["mode_counts"]) == pytest.approx(mixture["high_quality_percent"] * 30, abs=1e-6)
    with Image.open(grid_run / "evaluation" / "G_ema-scatter.png") as scatter:
        assert scatter.size == (512, 512)

    assert_ok(run_distgan("evaluate", str(grid_run / "generator.onnx"), "--n", "3000", "--providers", "cpu",
                          cwd=grid_run.parent))
    onnx_mixture = read_result(grid_run, "generator")["metrics"]["mixture"]
    # The same latents through onnxruntime: the same points up to float rounding.
    assert onnx_mixture["modes_covered"] == mixture["modes_covered"]
    assert onnx_mixture["high_quality_percent"] == pytest.approx(mixture["high_quality_percent"], abs=0.1)
    assert onnx_mixture["reverse_kl"] == pytest.approx(mixture["reverse_kl"], abs=1e-3)


def test_raw_generator_evaluation(grid_run: Path):
    assert_ok(run_distgan("evaluate", str(grid_run), "--no-ema", "--n", "1000", "--seed", "3", cwd=grid_run.parent))
    raw = read_result(grid_run, "G")
    assert raw["weights"] == "G"
    assert raw["seed"] == 3
    assert (grid_run / "evaluation" / "G-scatter.png").is_file()


def test_digit_evaluation_of_run_and_onnx_agree(mnist_run: Path, exported_onnx: Path, tmp_path: Path):
    result = run_distgan("evaluate", str(mnist_run), "--n", "2500", "--out", "from_run", cwd=tmp_path)
    assert_ok(result)
    assert "classifier Frechet distance" in result.stdout
    assert "real-vs-real floor" in result.stdout
    digits = json.loads((tmp_path / "from_run" / "G_ema.json").read_text())["metrics"]["digits"]
    assert digits["classes_total"] == 10
    assert 0.0 <= digits["class_kl"] <= 2.31  # log 10 at most
    assert 1.0 < digits["frechet_floor"] < 10.0
    assert digits["frechet_distance"] > digits["frechet_floor"]  # 6 steps of training are far from real digits
    assert "held-out accuracy" in digits["classifier"]
    with Image.open(tmp_path / "from_run" / "G_ema-samples.png") as grid:
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2)

    assert_ok(run_distgan("evaluate", str(exported_onnx), "--n", "2500", "--out", "from_onnx", cwd=tmp_path))
    onnx_digits = json.loads((tmp_path / "from_onnx" / "generator.json").read_text())["metrics"]["digits"]
    assert onnx_digits["frechet_floor"] == digits["frechet_floor"]
    assert onnx_digits["frechet_distance"] == pytest.approx(digits["frechet_distance"], rel=1e-3)
    assert onnx_digits["class_kl"] == pytest.approx(digits["class_kl"], abs=1e-3)


def test_two_process_evaluation_matches_one(mnist_run: Path, tmp_path: Path):
    assert_ok(run_distgan("evaluate", str(mnist_run), "--n", "2501", "--out", "one", cwd=tmp_path))
    result = launch_distgan("evaluate", str(mnist_run), "--cpu", "--n", "2501", "--out", "two", cwd=tmp_path)
    assert_ok(result)
    assert result.stdout.count("classifier Frechet distance") == 1  # only the main process reports
    one = json.loads((tmp_path / "one" / "G_ema.json").read_text())
    two = json.loads((tmp_path / "two" / "G_ema.json").read_text())
    assert two["processes"] == 2
    assert one["processes"] == 1
    for key in ("frechet_distance", "frechet_floor", "class_kl", "confident_percent"):
        assert two["metrics"]["digits"][key] == pytest.approx(one["metrics"]["digits"][key], rel=1e-5), key
    assert two["metrics"]["digits"]["class_counts"] == one["metrics"]["digits"]["class_counts"]


def test_conditional_evaluation_reports_label_accuracy(tmp_path: Path):
    assert_ok(run_distgan("train", "--cpu", "--conditional", "--steps", "2", "--batch-size", "8", "--width", "8",
                          "--sample-every", "0", "--log-every", "1", "--out", "run", cwd=tmp_path))
    result = run_distgan("evaluate", "run", "--n", "2500", cwd=tmp_path)
    assert_ok(result)
    evaluation = read_result(tmp_path / "run", "G_ema")
    assert evaluation["num_classes"] == 10
    assert 0.0 <= evaluation["metrics"]["digits"]["label_accuracy"] <= 1.0
    assert "predicted class = requested label" in result.stdout
    with Image.open(tmp_path / "run" / "evaluation" / "G_ema-samples.png") as grid:
        assert grid.size == (10 * 30 + 2, 6 * 30 + 2)  # one column per class


def test_fid_without_weights_says_how_to_provide_them(mnist_run: Path, tmp_path: Path):
    result = run_distgan("evaluate", str(mnist_run), "--fid", "--n", "2500", cwd=tmp_path,
                         env={"TORCH_HOME": str(tmp_path / "torch"), "DISTGAN_INCEPTION_WEIGHTS": ""})
    line = assert_user_error(result, "Inception-v3 weights", "not found",
                             str(tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"),
                             "--inception-weights PATH", "DISTGAN_INCEPTION_WEIGHTS", "--no-fid")
    assert "download" in line
    missing = tmp_path / "nowhere.pth"
    result = run_distgan("evaluate", str(mnist_run), "--fid", "--inception-weights", str(missing), cwd=tmp_path)
    assert_user_error(result, f"the file from --inception-weights was not found: {missing}")


def test_evaluate_errors(grid_run: Path, mnist_run: Path, tmp_path: Path):
    assert_user_error(run_distgan("evaluate", str(tmp_path / "missing"), cwd=tmp_path), "not found")
    assert_user_error(run_distgan("evaluate", str(grid_run / "generator.onnx"), "--no-ema", cwd=tmp_path),
                      "--no-ema applies to run directories")
    assert_user_error(run_distgan("evaluate", str(grid_run), "--n", "1", cwd=tmp_path), "--n must be at least 2")
    assert_user_error(run_distgan("evaluate", str(mnist_run), "--n", "2000", "--out", "few", cwd=tmp_path),
                      "compares 2,500 generated digits with real ones", "pass --n 2500 or more (got 2000)")
    assert not (tmp_path / "few").exists()  # rejected before any sample or picture is written
    assert_user_error(run_distgan("evaluate", str(grid_run), "--fid", cwd=tmp_path), "FID and KID apply to images")
    config = grid_run / "config.toml"
    assert_user_error(run_distgan("evaluate", str(config), cwd=tmp_path), "neither a run directory nor an .onnx file")
