"""Non-finite values in the data and in saved weights, under two real processes: every rank reacts alike."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import assert_ok, launch_script


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_nan_samples_on_main_rank_skip_step_everywhere(tmp_path: Path):
    # NaN in rank 0's real samples at step indices 2 and 3, that is steps 3 and 4.
    assert_ok(launch_script("nonfinite_data.py", str(tmp_path), "data", "0", "2", "2", cwd=tmp_path))
    run = tmp_path / "run"
    assert [row["Train/skipped_steps"] for row in rows(run)] == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    for name in ("G", "D"):
        rank0, rank1 = load_file(tmp_path / f"{name}_rank0.safetensors"), load_file(tmp_path / f"{name}_rank1.safetensors")
        for key in rank0:
            assert torch.isfinite(rank0[key]).all(), f"{name}.{key} is not finite"
            assert torch.equal(rank0[key], rank1[key]), f"{name}.{key} differs between ranks"
        # The skipped steps 3 and 4 changed nothing: the checkpoints of steps 2 and 4 are equal.
        step2 = load_file(run / "checkpoints" / "step-0000002" / f"{name}.safetensors")
        step4 = load_file(run / "checkpoints" / "step-0000004" / f"{name}.safetensors")
        for key in step2:
            assert torch.equal(step2[key], step4[key]), f"{name}.{key} changed during skipped steps"


def test_nonfinite_weights_stop_every_rank_at_save(tmp_path: Path):
    # A buffer of G turns NaN during step 3; with no log line before it, the save of step 4 must refuse it.
    result = launch_script("nonfinite_data.py", str(tmp_path), "buffer", "2", "10", cwd=tmp_path)
    assert result.returncode != 0
    assert "error: rank 0: refusing to save step 4: G has non-finite values in calls" in result.stderr
    assert "error: rank 1: the main process could not save the checkpoint of step 4" in result.stderr
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000002"]
    saved = load_file(tmp_path / "run" / "checkpoints" / "step-0000002" / "G.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in saved.values())


def test_nonfinite_buffer_stops_every_rank_at_log_line(tmp_path: Path):
    # The same NaN buffer, with a log line after every step: the log line of step 3 stops every rank.
    result = launch_script("nonfinite_data.py", str(tmp_path), "buffer", "2", "1", cwd=tmp_path)
    assert result.returncode != 0
    for rank in (0, 1):
        assert (f"error: rank {rank}: training stopped at step 3: the weights or buffers of G turned NaN or Inf "
                "after step 2") in result.stderr
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000002"]


def test_inf_gradient_finite_loss_stops_run(tmp_path: Path):
    # G's gradients turn Inf in step 5 while every loss stays finite. The update is applied (the skip
    # decision reads the losses), so the log line of step 5 stops both ranks before the save of step 6.
    result = launch_script("nonfinite_data.py", str(tmp_path), "gradient", "4", cwd=tmp_path)
    assert result.returncode != 0
    for rank in (0, 1):
        assert (f"error: rank {rank}: training stopped at step 5: the weights or buffers of G turned NaN or Inf "
                "after step 4") in result.stderr
    run = tmp_path / "run"
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert [row["Train/skipped_steps"] for row in rows(run)] == [0, 0, 0, 0]
    for name in ("G", "D"):
        saved = load_file(run / "checkpoints" / "step-0000004" / f"{name}.safetensors")
        assert all(torch.isfinite(tensor).all() for tensor in saved.values())


def test_nan_generator_phase_keeps_d_update():
    from accelerate import Accelerator

    from distgan.losses import get_loss
    from distgan.models import build_discriminator, build_generator, default_architecture
    from distgan.step import D_COUNT, GOOD_COUNT, SKIPPED, AdversarialStep, MicroBatch, Penalties

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    record = default_architecture("dense", "points", [2], 4, 16)
    G, D = build_generator(record), build_discriminator(record)
    opt_G, opt_D = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    G, D, opt_G, opt_D = accelerator.prepare(G, D, opt_G, opt_D)
    runner = AdversarialStep(accelerator, G, D, opt_G, opt_D, get_loss("logistic"), Penalties())
    before_G = [p.detach().clone() for p in G.parameters()]
    before_D = [p.detach().clone() for p in D.parameters()]
    # The G phase draws its own latents: NaN there leaves the D phase finite.
    batch = MicroBatch(real=torch.randn(8, 2), labels=torch.zeros(8, dtype=torch.long), z_D=torch.randn(8, 4),
                       z_G=torch.full((8, 4), float("nan")))
    stats = runner.run(0, [batch])
    assert all(torch.equal(a, b) for a, b in zip(before_G, G.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before_D, D.parameters()))
    assert all(torch.isfinite(p).all() for p in D.parameters())
    assert stats[GOOD_COUNT].item() == 0.0
    assert stats[D_COUNT].item() == 1.0
    assert stats[SKIPPED].item() == 1.0
    assert torch.isfinite(stats).all()
    assert stats[0].item() > 0  # Loss/D of the applied D phase is kept
    accelerator.free_memory()
