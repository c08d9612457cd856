"""FSDP (--fsdp and launch/fsdp.yaml) under two real CPU processes: same training as DDP, exact resume."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import BIN, LAUNCH_TIMEOUT, assert_ok, assert_user_error, free_port, launch_distgan, run_distgan
from test_distributed import max_relative_difference, weights

LAUNCH = Path(__file__).parent.parent / "launch"
# Width 256 (the default): each hidden layer has 65,536 weights and becomes a sharding unit of its own,
# so the runs cover units inside the root module. R1 every 2 steps runs the penalty's double backward.
GRID = ["train", "--cpu", "--data", "grid25", "--batch-size", "32", "--log-every", "2", "--sample-every", "3",
        "--lr-decay-start", "1", "--r1-every", "2"]


def assert_same_weights(fsdp: Path, ddp: Path, step: int) -> None:
    """Check that the FSDP run's G, D and G_ema at `step` match the DDP run's within 1e-5 (relative)."""
    for name in ("G", "D", "G_ema"):
        difference = max_relative_difference(weights(fsdp, step, name), weights(ddp, step, name))
        assert difference < 1e-5, f"{name}: relative difference {difference:.2e} between FSDP and DDP"


def train_both_ways(common: list[str], cwd: Path) -> None:
    """Train `common` with DDP into cwd/ddp and with FSDP into cwd/fsdp."""
    assert_ok(launch_distgan(*common, "--out", "ddp", cwd=cwd))
    assert_ok(launch_distgan(*common, "--fsdp", "--out", "fsdp", cwd=cwd))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 6-step run with DDP (ddp) and with FSDP (fsdp), checkpointed at steps 3 and 6."""
    root = tmp_path_factory.mktemp("fsdp")
    train_both_ways([*GRID, "--steps", "6", "--checkpoint-every", "3"], root)
    return root


def test_fsdp_matches_ddp(runs: Path):
    assert_same_weights(runs / "fsdp", runs / "ddp", 6)
    # The runs really trained: the weights moved away from step 3.
    assert max_relative_difference(weights(runs / "fsdp", 6, "G"), weights(runs / "fsdp", 3, "G")) > 1e-3


def test_fsdp_run_records_sharding(runs: Path):
    assert "fsdp = true" in (runs / "fsdp" / "config.toml").read_text()
    state = json.loads((runs / "fsdp" / "checkpoints" / "step-0000006" / "trainer.json").read_text())
    assert state["fsdp"] is True
    assert state["world_size"] == 2
    # Sample grids come from G_ema's forward pass, which every process runs together.
    assert (runs / "fsdp" / "samples" / "step-0000006.png").stat().st_size > 0


def test_fsdp_optimizer_state_is_full(runs: Path):
    # Gathered by parameter name: every Adam moment has the full shape of its parameter.
    state = torch.load(runs / "fsdp" / "checkpoints" / "step-0000006" / "optimizer_D.pt", weights_only=True)
    D = weights(runs / "fsdp", 6, "D")
    assert set(state["state"]) == set(D)
    for name, moments in state["state"].items():
        assert moments["exp_avg"].shape == D[name].shape, name
        assert moments["exp_avg_sq"].shape == D[name].shape, name


def test_fsdp_exact_resume(runs: Path):
    common = [*GRID, "--fsdp", "--checkpoint-every", "3", "--out", "split"]
    assert_ok(launch_distgan(*common, "--steps", "3", cwd=runs))
    assert_ok(launch_distgan(*common, "--steps", "6", "--resume", "latest", cwd=runs))
    for name in ("G", "D", "G_ema"):
        straight, resumed = weights(runs / "fsdp", 6, name), weights(runs / "split", 6, name)
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), f"{name}.{key} differs after resume"
    for name in ("optimizer_G", "optimizer_D"):
        straight = torch.load(runs / "fsdp" / "checkpoints" / "step-0000006" / f"{name}.pt", weights_only=True)
        resumed = torch.load(runs / "split" / "checkpoints" / "step-0000006" / f"{name}.pt", weights_only=True)
        for parameter, moments in straight["state"].items():
            for key, value in moments.items():
                assert torch.equal(value, resumed["state"][parameter][key]), f"{name} {parameter}.{key} differs"


def test_fsdp_run_exports(runs: Path):
    result = run_distgan("export", str(runs / "fsdp"), "--out", str(runs / "fsdp.onnx"), cwd=runs)
    assert_ok(result)
    assert (runs / "fsdp.onnx").stat().st_size > 0


def test_fsdp_wgan_gp_accumulation_matches_ddp(tmp_path: Path):
    common = ["train", "--cpu", "--data", "grid25", "--batch-size", "32", "--grad-accum", "2", "--loss", "wgan-gp",
              "--steps", "4", "--log-every", "2", "--sample-every", "0", "--lr-decay-start", "1"]
    train_both_ways(common, tmp_path)
    assert_same_weights(tmp_path / "fsdp", tmp_path / "ddp", 4)


def test_fsdp_dcgan_sync_bn_matches_ddp(tmp_path: Path):
    # Width 32: the larger convolutions (131,072 weights) are units of their own. G_ema averages BatchNorm
    # buffers, which stay plain tensors beside the sharded parameters.
    common = ["train", "--cpu", "--model", "dcgan", "--width", "32", "--sync-bn", "--batch-size", "16", "--steps", "4",
              "--log-every", "2", "--sample-every", "0"]
    train_both_ways(common, tmp_path)
    assert_same_weights(tmp_path / "fsdp", tmp_path / "ddp", 4)


def test_fsdp_config_file_turns_sharding_on(tmp_path: Path):
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(LAUNCH / "fsdp.yaml"), "--num_processes", "2",
               "--main_process_port", str(free_port()), "-m", "distgan", "train", "--cpu", "--data", "ring8",
               "--steps", "4", "--batch-size", "16", "--log-every", "2", "--sample-every", "0", "--out", "run"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert_ok(result)
    assert "fsdp = true" in (tmp_path / "run" / "config.toml").read_text()
    assert "returned a view tensor" not in result.stderr


@pytest.mark.parametrize(("option", "message"), [
    ("--compile", "--fsdp and --compile together are not supported"),
    ("--spectral-norm", "--fsdp and --spectral-norm together are not supported"),
    ("--no-ema", "this run has one process"),
])
def test_fsdp_rejects_unsupported_runs(tmp_path: Path, option: str, message: str):
    result = run_distgan("train", "--cpu", "--data", "ring8", "--steps", "2", "--fsdp", option, "--out", "run",
                         cwd=tmp_path)
    assert_user_error(result, message)
