"""Guarantees under distribution, checked with real processes launched through accelerate (gloo on CPU)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import BIN, LAUNCH_TIMEOUT, assert_ok, free_port, launch_distgan, launch_script, run_distgan

# Learning-rate decay off: the split run of test_exact_resume_two_processes ends its first part with
# --steps 10, and a decaying learning rate depends on --steps. The crash-recovery tests resume with decay on.
GRID = ["train", "--cpu", "--data", "grid25", "--batch-size", "32", "--width", "32", "--log-every", "5",
        "--sample-every", "0", "--lr-decay-start", "1"]


def weights(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:07d}" / f"{name}.safetensors")


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest ||a - b|| / ||b|| over the floating-point tensors of two state dicts."""
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        if a[key].is_floating_point():
            scale = b[key].norm().item() or 1.0
            worst = max(worst, (a[key] - b[key]).norm().item() / scale)
    return worst


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 20-step dense run on grid25, on 1 process and on 2 processes."""
    root = tmp_path_factory.mktemp("grid")
    assert_ok(run_distgan(*GRID, "--steps", "20", "--checkpoint-every", "10", "--out", "one", cwd=root))
    assert_ok(launch_distgan(*GRID, "--steps", "20", "--checkpoint-every", "10", "--out", "two", cwd=root))
    return {"one": root / "one", "two": root / "two", "root": root}


def test_world_size_invariance_dense(grid_runs):
    for name in ("G", "D", "G_ema"):
        difference = max_relative_difference(weights(grid_runs["two"], 20, name), weights(grid_runs["one"], 20, name))
        assert difference < 1e-5, f"{name}: relative difference {difference:.2e} between 1 and 2 processes"
    # The runs really trained: the weights moved away from step 10.
    assert max_relative_difference(weights(grid_runs["one"], 20, "G"), weights(grid_runs["one"], 10, "G")) > 1e-3


def test_world_size_invariance_dcgan_sync_bn(tmp_path: Path):
    common = ["train", "--cpu", "--batch-size", "16", "--width", "8", "--steps", "6", "--log-every", "3",
              "--sample-every", "0", "--sync-bn"]
    assert_ok(run_distgan(*common, "--out", "one", cwd=tmp_path))
    assert_ok(launch_distgan(*common, "--out", "two", cwd=tmp_path))
    for name in ("G", "D", "G_ema"):
        difference = max_relative_difference(weights(tmp_path / "two", 6, name), weights(tmp_path / "one", 6, name))
        assert difference < 1e-5, f"{name}: relative difference {difference:.2e} between 1 and 2 processes"
    # Without --sync-bn, BatchNorm statistics are per process and the runs differ.
    plain = [arg for arg in common if arg != "--sync-bn"]
    assert_ok(run_distgan(*plain, "--out", "one_plain", cwd=tmp_path))
    assert_ok(launch_distgan(*plain, "--out", "two_plain", cwd=tmp_path))
    assert max_relative_difference(weights(tmp_path / "two_plain", 6, "G"), weights(tmp_path / "one_plain", 6, "G")) > 1e-4


def test_world_size_invariance_with_augmentation(tmp_path: Path):
    # The dense pair has no BatchNorm, so 1 and 2 processes must agree with augmentation, labels and spectral norm.
    common = ["train", "--cpu", "--model", "dense", "--batch-size", "16", "--width", "8", "--steps", "4",
              "--log-every", "2", "--sample-every", "0", "--augment", "color,translation,cutout", "--conditional",
              "--spectral-norm", "--r1-gamma", "1", "--r1-every", "2"]
    assert_ok(run_distgan(*common, "--out", "one", cwd=tmp_path))
    assert_ok(launch_distgan(*common, "--out", "two", cwd=tmp_path))
    for name in ("G", "D", "G_ema"):
        difference = max_relative_difference(weights(tmp_path / "two", 4, name), weights(tmp_path / "one", 4, name))
        assert difference < 1e-5, f"{name}: relative difference {difference:.2e} between 1 and 2 processes"
    # The augmentation matters: the same run without it ends elsewhere.
    plain = common[: common.index("--augment")] + common[common.index("--augment") + 2 :]
    assert_ok(run_distgan(*plain, "--out", "plain", cwd=tmp_path))
    assert max_relative_difference(weights(tmp_path / "plain", 4, "D"), weights(tmp_path / "one", 4, "D")) > 1e-4


def test_exact_resume_two_processes(grid_runs):
    root = grid_runs["root"]
    assert_ok(launch_distgan(*GRID, "--steps", "10", "--checkpoint-every", "10", "--out", "split", cwd=root))
    assert_ok(launch_distgan(*GRID, "--steps", "20", "--checkpoint-every", "10", "--out", "split", "--resume", "latest",
                             cwd=root))
    for name in ("G", "D", "G_ema"):
        straight, resumed = weights(grid_runs["two"], 20, name), weights(root / "split", 20, name)
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), f"{name}.{key} differs after resume"
    for name in ("optimizer_G", "optimizer_D"):
        straight = torch.load(grid_runs["two"] / "checkpoints" / "step-0000020" / f"{name}.pt", weights_only=True)
        resumed = torch.load(root / "split" / "checkpoints" / "step-0000020" / f"{name}.pt", weights_only=True)
        for index, state in straight["state"].items():
            for key, value in state.items():
                assert torch.equal(value, resumed["state"][index][key]), f"{name} state {index}.{key} differs"


def test_gradient_accumulation_matches_larger_batch(tmp_path: Path):
    common = ["train", "--cpu", "--data", "grid25", "--width", "32", "--steps", "8", "--log-every", "4",
              "--sample-every", "0"]
    assert_ok(run_distgan(*common, "--batch-size", "64", "--out", "big", cwd=tmp_path))
    assert_ok(run_distgan(*common, "--batch-size", "16", "--grad-accum", "4", "--out", "accum", cwd=tmp_path))
    assert_ok(launch_distgan(*common, "--batch-size", "32", "--grad-accum", "2", "--out", "accum2", cwd=tmp_path))
    for name in ("G", "D"):
        big = weights(tmp_path / "big", 8, name)
        assert max_relative_difference(weights(tmp_path / "accum", 8, name), big) < 1e-5
        assert max_relative_difference(weights(tmp_path / "accum2", 8, name), big) < 1e-5
    # One optimizer step per step, not per micro-batch: Adam's step count equals the training steps.
    for name in ("optimizer_G", "optimizer_D"):
        state = torch.load(tmp_path / "accum" / "checkpoints" / "step-0000008" / f"{name}.pt", weights_only=True)
        assert {int(entry["step"]) for entry in state["state"].values()} == {8}


def test_phases_touch_only_their_model(tmp_path: Path):
    assert_ok(launch_script("phase_traffic.py", str(tmp_path), cwd=tmp_path))
    for rank in (0, 1):
        for step in json.loads((tmp_path / f"rank{rank}.json").read_text()):
            assert step["D_allreduce_in_D_phase"] >= 1
            assert step["G_allreduce_in_D_phase"] == 0
            assert step["D_allreduce_in_G_phase"] == 0
            assert step["G_allreduce_in_G_phase"] >= 1
            assert step["G_grads_after_D_phase"] == 0
            assert step["D_grads_after_G_phase"] == 0
            assert step["G_grads_after_G_phase"] == step["G_parameters"]


@pytest.mark.parametrize(("loss", "r1_gamma"), [("logistic", "10"), ("wgan-gp", "0")])
def test_penalty_keeps_ranks_identical(tmp_path: Path, loss: str, r1_gamma: str):
    assert_ok(launch_script("penalty_sync.py", str(tmp_path), loss, r1_gamma, cwd=tmp_path))
    rank0, rank1 = load_file(tmp_path / "D_rank0.safetensors"), load_file(tmp_path / "D_rank1.safetensors")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"D.{key} differs between ranks"
    # The parameter that only the penalty's double backward reaches has moved from its initial 0.5.
    assert abs(rank0["slope"].item() - 0.5) > 1e-6


def test_bf16_mixed_precision_trains_on_cpu(tmp_path: Path):
    result = launch_distgan(*GRID, "--steps", "6", "--mixed-precision", "bf16", "--out", "bf16", cwd=tmp_path)
    assert_ok(result)
    assert 'mixed_precision = "bf16"' in (tmp_path / "bf16" / "config.toml").read_text()
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["Loss/D"] is not None and row["Train/skipped_steps"] == 0 for row in rows)
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "bf16", 6, "G").values())


def test_nan_on_one_rank_skips_the_step_everywhere(tmp_path: Path):
    # NaN on rank 1 only, at step indices 3 and 4 (steps 4 and 5).
    result = launch_script("nan_injection.py", str(tmp_path), "1", "3", "2", "5", cwd=tmp_path)
    assert_ok(result)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["Train/skipped_steps"] for row in rows] == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert rows[3]["Loss/D"] is None  # a row of skipped steps only has no losses to average
    assert rows[2]["Loss/D"] > 0
    final = weights(tmp_path / "run", 10, "D")
    assert all(torch.isfinite(tensor).all() for tensor in final.values())


def test_persistent_nan_stops_with_clear_error(tmp_path: Path):
    # NaN on rank 1 from the fifth step on (index 4), at most 3 skipped steps in a row.
    result = launch_script("nan_injection.py", str(tmp_path), "1", "4", "0", "3", cwd=tmp_path)
    assert result.returncode != 0
    assert "error: training stopped at step 7: steps 5 to 7 (3 in a row) all had non-finite" in result.stderr
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000002", "step-0000004", "step-0000006"]
    # Steps 5 and 6 were skipped: the weights saved at step 6 equal those of step 4 and are finite.
    for name in ("G", "D", "G_ema"):
        step4, step6 = weights(tmp_path / "run", 4, name), weights(tmp_path / "run", 6, name)
        for key in step4:
            assert torch.isfinite(step6[key]).all()
            assert torch.equal(step4[key], step6[key]), f"{name}.{key} changed during skipped steps"


def test_evaluation_shards_cover_each_sample_once(tmp_path: Path):
    assert_ok(launch_script("shards.py", str(tmp_path), cwd=tmp_path))
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["local"] for r in results] == [51, 50]
    for result in results:
        assert result["gathered"] == list(range(101))


def test_two_machines_on_loopback_match_one_machine(grid_runs):
    root = grid_runs["root"]
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
             "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distgan",
             *GRID, "--steps", "20", "--checkpoint-every", "10", "--out", "nodes"],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
        assert process.returncode == 0, stderr[-3000:]
    for name in ("G", "D", "G_ema"):
        assert max_relative_difference(weights(root / "nodes", 20, name), weights(grid_runs["two"], 20, name)) < 1e-6
