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
    # A buffer of G turns NaN during step 3; the save of step 4 must refuse it on the main process.
    result = launch_script("nonfinite_data.py", str(tmp_path), "buffer", "2", cwd=tmp_path)
    assert result.returncode != 0
    assert "error: rank 0: refusing to save step 4: G has non-finite values in calls" in result.stderr
    assert "error: rank 1: the main process could not save the checkpoint of step 4" in result.stderr
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000002"]
    saved = load_file(tmp_path / "run" / "checkpoints" / "step-0000002" / "G.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in saved.values())
