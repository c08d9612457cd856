"""Smoke runs of the benchmark scripts and `distgan bench` at tiny sizes: they run and report sane values.

The figures of a --quick run mean nothing, so nothing here checks speed.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import LAUNCH_TIMEOUT, assert_ok, assert_user_error, run_distgan

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str, cwd: Path) -> dict:
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", "out.json", *args],
                            cwd=cwd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert_ok(result)
    assert "| " in result.stdout  # the printed table
    report = json.loads((cwd / "out.json").read_text())
    assert report["machine"]["torch"]
    assert report["machine"]["cpu_cores"] >= 1
    return report


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_overhead_script(tmp_path: Path):
    report = run_script("overhead", cwd=tmp_path)
    assert [row["pair"] for row in report["rows"]] == ["dense", "dcgan"]
    for row in report["rows"]:
        assert positive(row["distgan img/s"])
        assert positive(row["minimal img/s"])
        assert math.isclose(row["ratio"], row["distgan img/s"] / row["minimal img/s"])
        assert row["meets target"] == (row["ratio"] >= 0.95)
    assert len(report["samples"]["dense"]["distgan"]) == 2  # --quick runs 2 blocks per side


def test_overhead_trainer_has_no_extra_work(tmp_path: Path):
    from distgan.bench import load_script

    overhead = load_script(BENCHMARKS / "overhead.py")
    args = overhead.build_parser().parse_args(["--quick"])
    overhead.apply_quick(args)
    trainer = overhead.make_trainer(args, "dense", tmp_path / "run")
    try:
        # The minimal loop runs no penalty and no EMA, so distgan's side must not either.
        assert trainer.config.r1_gamma == 0.0
        assert trainer.config.ema is False
    finally:
        trainer.close()


def test_data_script(tmp_path: Path):
    report = run_script("data", cwd=tmp_path)
    loaders = [row["loader"] for row in report["rows"]]
    assert loaders[:3] == ["mnist (in memory)", "image folder (PNG decode)", "packed (memory-mapped)"]
    assert report["rows"][0]["image shape"] == "1x28x28"
    assert report["rows"][2]["image shape"] == "3x16x16"
    training = report["rows"][3]
    assert training["x training"] == 1.0
    for row in report["rows"]:
        assert positive(row["img/s (median)"])
        assert math.isclose(row["x training"], row["img/s (median)"] / training["img/s (median)"])
    assert report["target"]["measured"] == report["rows"][2]["x training"]


def test_scaling_script(tmp_path: Path):
    report = run_script("scaling", cwd=tmp_path)
    one, two = report["rows"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["global batch"] == 2 * one["global batch"]
    assert positive(one["img/s (median)"])
    assert positive(two["img/s (median)"])
    assert math.isclose(two["efficiency"], two["img/s (median)"] / (2 * one["img/s (median)"]))


def test_profile_script(tmp_path: Path):
    report = run_script("profile_step", cwd=tmp_path)
    groups = {row["where"]: row["ms per step"] for row in report["rows"]}
    assert groups["convolution"] > 0
    assert groups["Adam update (optimizer.step)"] > 0
    # The groups split the measured step time, so they add up to it.
    assert math.isclose(sum(groups.values()), report["step_ms"], rel_tol=1e-6)
    assert report["tables"][0]["rows"][0]["self ms per step"] > 0


def test_inference_script(tmp_path: Path):
    report = run_script("inference", "--device", "cpu", cwd=tmp_path)
    assert report["model"]["mflops_per_image"] == 14.04928  # the MNIST DCGAN generator's three layers
    runtimes = {(row["batch"], row["runtime"]) for row in report["rows"]}
    for batch_size in (1, 64):
        assert (batch_size, "PyTorch eager") in runtimes
        assert (batch_size, "PyTorch eager, 1 thread") in runtimes
        assert (batch_size, "onnxruntime, generator.optimized.onnx, default") in runtimes
    assert all(positive(row["images/s"]) for row in report["rows"])
    assert positive(report["matmul_gflops"]["peak"])
    assert positive(report["peak_fraction_at_64"])
    assert [row["met"] in ("yes", "no") for row in report["tables"][0]["rows"]] == [True, True, True]
    assert report["model"]["max_abs_diff_from_pytorch"]["generator.optimized.onnx"] < 1e-4


def test_gpu_check_cpu_mode_without_training(tmp_path: Path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--cpu", "--skip", "train",
                             "--out", "check.json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    assert_ok(result)
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["passed"]
    assert set(report["sections"]) == {"sync", "overflow", "overhead", "inference"}
    assert report["sections"]["overflow"]["skipped"] == "fp16 with a GradScaler needs a CUDA device"
    assert [row["pair"] for row in report["sections"]["overhead"]["rows"]] == ["dcgan"]


INFERENCE_SCRIPT = '''
import argparse


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    return parser


def run(args):
    return {"title": "Inference", "rows": [{"runtime": "onnxruntime", "quick": args.quick, "img/s": 1234.5}]}
'''


def test_bench_runs_inference_script_when_present(tmp_path: Path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "inference.py").write_text(INFERENCE_SCRIPT)
    result = run_distgan("bench", "--only", "inference", "--quick", "--scripts", str(scripts), "--out", "b.json",
                         cwd=tmp_path)
    assert_ok(result)
    assert "| onnxruntime | True  | 1,234 |" in result.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["sections"]["inference"]["rows"] == [{"runtime": "onnxruntime", "quick": True, "img/s": 1234.5}]
    assert report["quick"] is True


def test_bench_skips_missing_inference_script(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    result = run_distgan("bench", "--only", "inference", "--scripts", "scripts", "--out", "b.json", cwd=tmp_path)
    assert_ok(result)
    assert "skipped: scripts/inference.py not found" in result.stdout
    assert json.loads((tmp_path / "b.json").read_text())["sections"]["inference"]["skipped"]


def test_bench_errors(tmp_path: Path):
    assert_user_error(run_distgan("bench", "--only", "speed", cwd=tmp_path),
                      "invalid benchmark section speed; choose from overhead, data, scaling, inference")
    assert_user_error(run_distgan("bench", "--scripts", "absent", cwd=tmp_path),
                      "benchmark scripts not found in absent")


def test_reliability_script(tmp_path: Path):
    report = run_script("reliability", cwd=tmp_path)  # --quick measures the save section only
    row = report["rows"][0]
    assert positive(row["checkpoint (MB)"])
    assert positive(row["save (s)"])
    assert 0 < row["of which SHA-256 (s)"] < row["save (s)"]
    assert positive(row["load (s)"])


def test_quality_script(tmp_path: Path):
    report = run_script("quality", "--keep", "kept", cwd=tmp_path)  # a relative --keep is the working directory's
    assert (tmp_path / "kept" / "grid25-seed0" / "evaluation" / "G_ema.json").is_file()
    (row,) = report["rows"]
    assert row["data"] == "grid25"
    assert row["steps"] == 20
    assert positive(row["steps/s"])
    assert row["modes"].endswith("/25")
    assert 0.0 <= row["high quality %"] <= 100.0
    assert row["meets target"] is False  # 20 steps cover no mode well


def test_mixture_sweep_script(tmp_path: Path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "mixture_sweep.py"), "--data", "ring8", "--steps", "20",
                             "--eval-every", "10", "--width", "8"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert_ok(result)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["step"] for line in lines] == [10, 20]
    for line in lines:
        assert 0 <= line["G_ema"]["modes"] <= 8
        assert 0.0 <= line["G"]["high quality %"] <= 100.0


def test_mixture_sweep_options_and_points(tmp_path: Path):
    points = tmp_path / "points.npy"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "mixture_sweep.py"), "--steps", "4", "--eval-every", "4",
                             "--width", "8", "--depth", "2", "--d-steps", "2", "--top-k", "0.5",
                             "--save-points", str(points)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert_ok(result)
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["step"] == 4
    assert 0 <= line["G_ema"]["modes"] <= 25
    saved = np.load(points)
    assert saved.shape == (10_000, 2)
    assert np.isfinite(saved).all()
