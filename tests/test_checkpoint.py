"""Checkpoint files in one process: round trip, damage detection, failed writes and keep-last-N retention."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from distgan.checkpoint import (
    TRAINER_STATE,
    check_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from distgan.errors import CheckpointError
from distgan.retention import prune_checkpoints


def trained_state(seed: int) -> tuple[dict, dict]:
    """Return (models, optimizers) state dicts of a small G and D after one Adam step."""
    torch.manual_seed(seed)
    G, D = nn.Linear(4, 3), nn.Linear(3, 1)
    optimizers = {}
    for name, module in (("optimizer_G", G), ("optimizer_D", D)):
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        module(torch.randn(2, module.in_features)).sum().backward()
        optimizer.step()
        optimizers[name] = optimizer.state_dict()
    models = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()}
    return models, optimizers


def save(run: Path, step: int) -> Path:
    models, optimizers = trained_state(step)
    record = {"format": "distgan-generator", "format_version": 1, "step": step}
    return save_checkpoint(run, step, models, optimizers, record, "G_ema", {"world_size": 1})


def steps(run: Path) -> list[int]:
    return [step for step, _ in list_checkpoints(run)]


def test_round_trip_restores_every_tensor(tmp_path: Path):
    path = save(tmp_path, 3)
    models, optimizers, state = load_checkpoint(path)
    expected_models, expected_optimizers = trained_state(3)
    for stem, expected in expected_models.items():
        for key, tensor in expected.items():
            assert torch.equal(models[stem][key], tensor), f"{stem}.{key}"
    for stem, expected in expected_optimizers.items():
        for index, entry in expected["state"].items():
            for key, tensor in entry.items():
                assert torch.equal(optimizers[stem]["state"][index][key], tensor), f"{stem} {index}.{key}"
    assert state["step"] == 3
    assert state["format"] == "distgan-checkpoint"
    assert len(state["files"]["G.safetensors"]["sha256"]) == 64
    record = json.loads((tmp_path / "generator" / "generator.json").read_text())
    assert record["step"] == 3


def test_same_size_damage_falls_back_to_older(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    save(tmp_path, 2)
    newest = save(tmp_path, 4)
    weights = newest / "D.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last value, same size
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="distgan.checkpoint"):
        assert latest_checkpoint(tmp_path).name == "step-0000002"
    assert "SHA-256 of D.safetensors differs" in caplog.text
    with pytest.raises(CheckpointError, match="D.safetensors differs from the file recorded"):
        load_checkpoint(newest)


def test_failed_write_leaves_nothing(tmp_path: Path):
    save(tmp_path, 2)
    generator = tmp_path / "generator"
    shutil.rmtree(generator)
    generator.write_text("a file where the generator folder belongs")
    with pytest.raises(CheckpointError, match="cannot write the generator weights in"):
        save(tmp_path, 4)
    # The checkpoint itself was complete before generator/ failed, so it stays and is valid.
    check_checkpoint(tmp_path / "checkpoints" / "step-0000004")

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "checkpoints").write_text("a file where the checkpoints folder belongs")
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*step-0000002"):
        save(blocked, 2)
    assert sorted(path.name for path in blocked.iterdir()) == ["checkpoints"]


def test_same_step_replaces_damaged_copy(tmp_path: Path):
    path = save(tmp_path, 2)
    (path / "G.safetensors").write_bytes(b"damaged")
    save(tmp_path, 2)
    check_checkpoint(path)
    assert [entry.name for entry in (tmp_path / "checkpoints").iterdir()] == ["step-0000002"]


def test_stale_temporaries_removed_with_log(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-0000004-abcd1234").mkdir(parents=True)
    (root / ".tmp-step-0000004-abcd1234" / "G.safetensors").write_bytes(b"partial")
    (root / ".tmp-0123-trainer.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="distgan.checkpoint"):
        removed = remove_stale_temporaries(root)
    assert sorted(path.name for path in removed) == [".tmp-0123-trainer.json", ".tmp-step-0000004-abcd1234"]
    assert list(root.iterdir()) == []
    assert caplog.text.count("left incomplete by an interrupted save") == 2


def test_retention_keeps_newest_and_protected(tmp_path: Path):
    for step in (2, 4, 6, 8, 10):
        save(tmp_path, step)
    removed = prune_checkpoints(tmp_path, keep=2, protected=tmp_path / "checkpoints" / "step-0000004")
    assert sorted(path.name for path in removed) == ["step-0000002", "step-0000006"]
    assert steps(tmp_path) == [4, 8, 10]
    assert prune_checkpoints(tmp_path, keep=0) == []
    assert steps(tmp_path) == [4, 8, 10]


def test_retention_ignores_damaged_checkpoints(tmp_path: Path):
    for step in (2, 4, 6):
        save(tmp_path, step)
    (tmp_path / "checkpoints" / "step-0000006" / TRAINER_STATE).unlink()
    # Step 6 is incomplete: it neither counts as the newest nor gets removed, so step 4 stays.
    removed = prune_checkpoints(tmp_path, keep=1)
    assert [path.name for path in removed] == ["step-0000002"]
    assert steps(tmp_path) == [4, 6]
    assert latest_checkpoint(tmp_path).name == "step-0000004"
    assert [path.name for path in (tmp_path / "checkpoints").iterdir() if path.name.startswith(".")] == []
