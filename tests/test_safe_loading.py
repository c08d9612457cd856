"""Malicious and damaged files where resume, export, sampling and training read their inputs.

The malicious file is a pickle that creates a marker file when it is
unpickled. Each reader must reject it with a clear error, and the marker must
never appear.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_user_error, run_distgan
from distgan.checkpoint import TRAINER_STATE, check_checkpoint, load_checkpoint, read_generator_record
from distgan.data.packed import open_packed
from distgan.errors import CheckpointError, DataError, InputError
from distgan.export import load_generator
from distgan.runtime import OnnxGenerator


class CreatesMarker:
    """Unpickling an instance calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def payload(marker: Path, kind: str) -> bytes:
    """The pickle as a plain pickle stream ("pickle") or inside torch.save's zip container ("torch")."""
    if kind == "pickle":
        return pickle.dumps(CreatesMarker(marker))
    path = marker.with_name("payload.pt")
    torch.save({"state": CreatesMarker(marker)}, path)
    return path.read_bytes()


def replace_in_checkpoint(checkpoint: Path, name: str, data: bytes) -> None:
    """Swap a file and update trainer.json to match, as someone who edits both would."""
    (checkpoint / name).write_bytes(data)
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    state["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / TRAINER_STATE).write_text(json.dumps(state))


@pytest.fixture
def run_copy(mnist_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    return run


# torch warns that the plain pickle uses protocol 4; rejecting it is the point of the test.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["pickle", "torch"])
@pytest.mark.parametrize("name", ["optimizer_G.pt", "G.safetensors"])
def test_resume_rejects_pickle_payload(run_copy: Path, tmp_path: Path, kind: str, name: str):
    marker = tmp_path / "marker"
    checkpoint = run_copy / "checkpoints" / "step-0000006"
    replace_in_checkpoint(checkpoint, name, payload(marker, kind))
    expected = "Only optimizer state written by distgan" if name.endswith(".pt") else "not a safetensors file"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_resume_command_rejects_pickle_payload(run_copy: Path, tmp_path: Path):
    marker = tmp_path / "marker"
    replace_in_checkpoint(run_copy / "checkpoints" / "step-0000006", "optimizer_D.pt", payload(marker, "torch"))
    result = run_distgan("train", "--out", str(run_copy), "--steps", "8", cwd=tmp_path)
    assert_user_error(result, "cannot read", "optimizer_D.pt", "Only optimizer state written by distgan")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["generator.safetensors", "generator.json"])
def test_export_rejects_pickle_payload(run_copy: Path, tmp_path: Path, name: str):
    marker = tmp_path / "marker"
    (run_copy / "generator" / name).write_bytes(payload(marker, "pickle"))
    with pytest.raises(CheckpointError, match="not a safetensors file|not valid JSON"):
        load_generator(run_copy)
    assert not marker.exists()


def test_sample_rejects_pickle_payload(exported_onnx: Path, tmp_path: Path):
    marker = tmp_path / "marker"
    fake_model = tmp_path / "generator.onnx"
    fake_model.write_bytes(payload(marker, "pickle"))
    with pytest.raises(InputError, match="onnxruntime cannot load"):
        OnnxGenerator(fake_model, providers="cpu")
    np.save(tmp_path / "objects.npy", np.array([CreatesMarker(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "plain.npy").write_bytes(payload(marker, "pickle"))
    for latents in ("objects.npy", "plain.npy"):
        result = run_distgan("sample", str(exported_onnx), "--latents", latents, cwd=tmp_path)
        assert_user_error(result, f"cannot read latents from {latents}", "pickle")
    assert not marker.exists()


def test_packed_data_rejects_pickle_payload(tmp_path: Path):
    marker = tmp_path / "marker"
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "index.json").write_text(json.dumps({
        "format": "distgan-packed", "format_version": 1, "count": 1, "sample_shape": [1, 4, 4],
        "class_names": [], "sha256": "0" * 64}))
    evil = np.array([CreatesMarker(marker)], dtype=object)
    np.save(packed / "pixels.npy", np.zeros((1, 1, 4, 4), dtype=np.uint8))
    np.save(packed / "labels.npy", evil, allow_pickle=True)
    with pytest.raises(DataError, match="cannot read the packed data set .*allow_pickle=False"):
        open_packed(packed)
    np.save(packed / "pixels.npy", evil, allow_pickle=True)  # memory-mapped, so numpy rejects objects anyway
    with pytest.raises(DataError, match="cannot read the packed data set .*Python objects"):
        open_packed(packed)
    assert not marker.exists()


def test_truncated_safetensors_rejected(run_copy: Path):
    weights = run_copy / "generator" / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="generator.safetensors.*damaged or not a safetensors file"):
        load_generator(run_copy)
    checkpoint = run_copy / "checkpoints" / "step-0000006"
    replace_in_checkpoint(checkpoint, "G_ema.safetensors", (checkpoint / "G_ema.safetensors").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="G_ema.safetensors.*damaged or not a safetensors file"):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize(("change", "message"), [
    ({"files": ["G.safetensors"]}, "has no 'files' table"),
    ({"step": "6"}, "records step '6', which does not match the directory name"),
    ({"step": 7}, "records step 7, which does not match the directory name"),
    ({"files": {"../../config.toml": 10}}, "invalid file name '../../config.toml'"),
    ({"files": {"G.safetensors": {"size": "big"}}}, "invalid entry for G.safetensors"),
    ({"format": "another-tool"}, "was not written by distgan"),
])
def test_trainer_record_with_wrong_types(run_copy: Path, change: dict, message: str):
    checkpoint = run_copy / "checkpoints" / "step-0000006"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    (checkpoint / TRAINER_STATE).write_text(json.dumps({**state, **change}))
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_checkpoint(checkpoint)


@pytest.mark.parametrize(("change", "message"), [
    ({"z_dim": "sixty-four"}, "'z_dim' must be a positive integer, got 'sixty-four'"),
    ({"sample_shape": [1, -28, 28]}, "'sample_shape' must be a list of positive integers"),
    ({"kind": "audio"}, "'kind' must be one of image, points"),
    ({"architecture": "dcgan"}, "'architecture' must be an object with a 'model' name"),
    ({"value_range": ["-1", "1"]}, "'value_range' must be null or a list of two numbers"),
    ({"format": None}, "is not a distgan generator record"),
    ({"format_version": 9}, "has format_version 9"),
])
def test_generator_record_with_wrong_types(run_copy: Path, change: dict, message: str):
    path = run_copy / "generator" / "generator.json"
    assert read_generator_record(path)["z_dim"] == 64
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_generator_record(path)


def test_checkpoint_from_another_tool_is_skipped(run_copy: Path, tmp_path: Path):
    shutil.rmtree(run_copy / "checkpoints")
    foreign = run_copy / "checkpoints" / "step-0000500"
    foreign.mkdir(parents=True)
    # What Accelerate's save_state writes: pickled RNG states among them.
    torch.save({"weight": torch.zeros(2)}, foreign / "pytorch_model.bin")
    (foreign / "random_states_0.pkl").write_bytes(payload(tmp_path / "marker", "pickle"))
    result = run_distgan("train", "--out", str(run_copy), "--steps", "8", cwd=tmp_path)
    assert_user_error(result, "no complete checkpoint in", "remove the damaged step-NNNNNNN directories")
    assert "trainer.json is missing" in result.stderr
    assert not (tmp_path / "marker").exists()
