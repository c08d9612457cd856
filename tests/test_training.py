"""Training through the real CLI: two CPU processes under accelerate launch, resume, and run directories."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import assert_ok, assert_user_error, launch_distgan, run_distgan


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_process_run_writes_run_directory(mnist_run: Path):
    assert sorted(p.name for p in (mnist_run / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    checkpoint = mnist_run / "checkpoints" / "step-0000006"
    assert {p.name for p in checkpoint.iterdir()} == {
        "G.safetensors", "D.safetensors", "G_ema.safetensors", "generator.json",
        "optimizer_G.pt", "optimizer_D.pt", "trainer.json",
    }
    state = json.loads((checkpoint / "trainer.json").read_text())
    assert state["step"] == 6
    assert state["world_size"] == 2
    assert _metric_steps(mnist_run) == [3, 6]  # one row per log step, written by the main process only
    row = json.loads((mnist_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(row) >= {"Loss/D", "Loss/G", "images_per_second"}
    assert row["images_per_second"] > 0
    config = (mnist_run / "config.toml").read_text()
    assert 'model = "dcgan"' in config and "batch_size = 16" in config
    with Image.open(mnist_run / "samples" / "step-0000006.png") as grid:
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2)  # 64 digits of 28 px with 2 px padding
    record = json.loads((mnist_run / "generator" / "generator.json").read_text())
    assert record["step"] == 6 and record["weights"] == "G_ema"
    assert record["sample_shape"] == [1, 28, 28] and record["z_dim"] == 64


def test_resume_continues_step_count(mnist_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    result = launch_distgan("train", "--cpu", "--steps", "9", "--batch-size", "16", "--log-every", "3",
                            "--checkpoint-every", "3", "--out", str(run), "--resume", "latest", cwd=tmp_path)
    assert_ok(result)
    assert "resumed from" in result.stderr and "at step 6" in result.stderr
    assert _metric_steps(run) == [3, 6, 9]
    assert (run / "checkpoints" / "step-0000009").is_dir()
    assert "steps = 9" in (run / "config.toml").read_text()


def test_resume_is_exact_on_one_process(tmp_path: Path):
    common = ["train", "--cpu", "--batch-size", "8", "--width", "8", "--log-every", "2", "--checkpoint-every", "2",
              "--sample-every", "0"]
    assert_ok(run_distgan(*common, "--steps", "4", "--out", "straight", cwd=tmp_path))
    assert_ok(run_distgan(*common, "--steps", "2", "--out", "split", cwd=tmp_path))
    # The same command with more steps continues the run: --resume auto is the default.
    assert_ok(run_distgan(*common, "--steps", "4", "--out", "split", cwd=tmp_path))
    for name in ("G", "D", "G_ema"):
        straight = load_file(tmp_path / "straight" / "checkpoints" / "step-0000004" / f"{name}.safetensors")
        split = load_file(tmp_path / "split" / "checkpoints" / "step-0000004" / f"{name}.safetensors")
        assert straight.keys() == split.keys()
        for key in straight:
            assert (straight[key] == split[key]).all(), f"{name}.{key} differs after resume"


@pytest.mark.parametrize(("data", "legacy_depth"), [("mnist", 0), ("ring8", 3)])
def test_resume_run_saved_without_depth(tmp_path: Path, data: str, legacy_depth: int):
    common = ["train", "--cpu", "--data", data, "--batch-size", "8", "--width", "8", "--log-every", "2",
              "--checkpoint-every", "2", "--sample-every", "0", "--out", "run"]
    assert_ok(run_distgan(*common, "--steps", "2", "--depth", str(legacy_depth), cwd=tmp_path))
    config = tmp_path / "run" / "config.toml"
    # A run written before depth was a key has no such line. Its checkpoints contain the plain dcgan pair
    # or the dense pair with three hidden layers.
    config.write_text("".join(line for line in config.read_text().splitlines(True) if not line.startswith("depth")))
    assert_ok(run_distgan(*common, "--steps", "4", cwd=tmp_path))
    assert (tmp_path / "run" / "checkpoints" / "step-0000004").is_dir()
    assert f"depth = {legacy_depth}" in config.read_text()


def test_resume_names_the_architecture_difference(tmp_path: Path):
    common = ["train", "--cpu", "--data", "ring8", "--batch-size", "8", "--width", "8", "--log-every", "2",
              "--checkpoint-every", "2", "--sample-every", "0", "--out", "run"]
    assert_ok(run_distgan(*common, "--steps", "2", "--depth", "4", cwd=tmp_path))
    config = tmp_path / "run" / "config.toml"
    saved = "".join(line for line in config.read_text().splitlines(True) if not line.startswith("depth"))
    config.write_text(saved)  # read as the three layers of a run saved before depth was a key
    result = run_distgan(*common, "--steps", "4", cwd=tmp_path)
    assert_user_error(result, "hidden is [8, 8, 8, 8] in the checkpoint and [8, 8, 8] in this run",
                      "make the run's config.toml describe it")
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000002"]
    assert config.read_text() == saved


def test_resume_never_refuses_existing_checkpoints(mnist_run: Path, tmp_path: Path):
    result = run_distgan("train", "--steps", "2", "--out", str(mnist_run), "--resume", "never", cwd=tmp_path)
    assert_user_error(result, "already contains a run with checkpoints up to step 6", "--resume auto")


def test_resume_auto_rejects_other_architecture(mnist_run: Path, tmp_path: Path):
    result = run_distgan("train", "--steps", "8", "--width", "16", "--out", str(mnist_run), cwd=tmp_path)
    assert_user_error(result, "cannot change 'width' from 32 to 16 when resuming", "another --out")
    result = run_distgan("train", "--steps", "8", "--depth", "0", "--out", str(mnist_run), cwd=tmp_path)
    assert_user_error(result, "cannot change 'depth' from 1 to 0 when resuming", "another --out")


def test_accelerate_cpu_launcher_single_process_is_rejected(tmp_path: Path):
    result = run_distgan("train", "--steps", "2", "--out", "run", cwd=tmp_path,
                         env={"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    assert_user_error(result, "started a single process", "--multi_gpu --num_processes N")


def test_compile_and_channels_last_match_plain_run(tmp_path: Path):
    common = ["train", "--cpu", "--steps", "2", "--batch-size", "8", "--width", "8", "--resolution", "16",
              "--lr-g", "2e-4", "--lr-d", "2e-4", "--log-every", "1", "--sample-every", "0"]
    assert_ok(run_distgan(*common, "--out", "plain", cwd=tmp_path))
    assert_ok(run_distgan(*common, "--out", "fast", "--compile", "--channels-last", cwd=tmp_path))
    config = (tmp_path / "fast" / "config.toml").read_text()
    assert "compile = true" in config
    assert "channels_last = true" in config

    plain_rows = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    fast_rows = [json.loads(line) for line in (tmp_path / "fast" / "metrics.jsonl").read_text().splitlines()]
    for plain, fast in zip(plain_rows, fast_rows, strict=True):
        for key in ("Loss/D", "Loss/G", "Logits/real", "Logits/fake"):
            assert abs(plain[key] - fast[key]) < 1e-4, f"step {plain['step']} {key}: {plain[key]} vs {fast[key]}"

    for name in ("G", "D", "G_ema"):
        plain = load_file(tmp_path / "plain" / "checkpoints" / "step-0000002" / f"{name}.safetensors")
        fast = load_file(tmp_path / "fast" / "checkpoints" / "step-0000002" / f"{name}.safetensors")
        assert plain.keys() == fast.keys(), name  # compiling in place keeps the state_dict keys
        for key in plain:
            # Two Adam steps of lr 2e-4 move a weight by at most 4e-4, whatever the kernels' rounding.
            assert (plain[key].float() - fast[key].float()).abs().max() < 5e-4, f"{name}.{key}"
