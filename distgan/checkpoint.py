"""Crash-safe checkpoints and the generator record that export reads.

A checkpoint is a directory `checkpoints/step-NNNNNNN/` holding

    G.safetensors, D.safetensors       the trained generator and discriminator
    G_ema.safetensors                  the generator's moving average, when EMA is on
    generator.json                     the generator's architecture record (see distgan.models)
    optimizer_G.pt, optimizer_D.pt     optimizer state dicts (tensors and numbers only)
    scaler.pt                          the GradScaler state, with fp16 only
    trainer.json                       step, version and the size of every file above

The run's `generator/` directory contains the weights that export uses by
default (G_ema, or G without EMA) as generator.safetensors + generator.json.

It is written into a temporary directory and renamed into place, so a
directory named step-NNNNNNN is complete: a crash mid-save leaves only a
`.tmp-*` directory, which the next save removes. Weights are read back from
safetensors and optimizer state with `torch.load(weights_only=True)`; nothing
here unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from distgan.errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
GENERATOR = "generator"
GENERATOR_WEIGHTS = "generator.safetensors"
GENERATOR_RECORD = "generator.json"
TRAINER_STATE = "trainer.json"
STEP_PATTERN = re.compile(r"^step-(\d{7,})$")
TEMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _plain_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors rejects tensors that share memory or are not contiguous; a copy on the CPU has neither.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}


def write_generator(directory: Path, state_dict: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """Write generator.safetensors and generator.json into `directory`, each by an atomic replace."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / GENERATOR_WEIGHTS
    temporary = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{GENERATOR_WEIGHTS}"
    save_file(_plain_state(state_dict), temporary, metadata={"distgan.step": str(record["step"])})
    _fsync_file(temporary)
    os.replace(temporary, weights)
    _write_json(directory / GENERATOR_RECORD, record)
    _fsync_dir(directory)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    _fsync_file(temporary)
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); the file is damaged") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read weights from {path}: {error}") from None


def save_checkpoint(
    run_dir: Path,
    step: int,
    models: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, dict[str, Any]],
    generator_record: dict[str, Any],
    export_model: str,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of `step` atomically and refresh run_dir/generator. Call on the main process only.

    `models` maps file stems (G, D, G_ema) to state dicts and `optimizers` maps
    file stems (optimizer_G, optimizer_D, scaler) to state dicts. The weights
    of `models[export_model]` become run_dir/generator. Returns the final
    checkpoint directory.
    """
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    final = root / checkpoint_name(step)
    temporary = root / f"{TEMP_PREFIX}{checkpoint_name(step)}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()

    for stem, state in models.items():
        save_file(_plain_state(state), temporary / f"{stem}.safetensors", metadata={"distgan.step": str(step)})
    for stem, state in optimizers.items():
        torch.save(state, temporary / f"{stem}.pt")
    (temporary / GENERATOR_RECORD).write_text(json.dumps(generator_record, indent=2) + "\n", encoding="utf-8")
    files = {path.name: path.stat().st_size for path in sorted(temporary.iterdir())}
    for name in files:
        _fsync_file(temporary / name)
    state = {"step": step, "files": files, "export_model": export_model, **(extra_state or {})}
    _write_json(temporary / TRAINER_STATE, state)
    _fsync_dir(temporary)

    if final.exists():
        # A resumed run that reaches an already saved step replaces the old copy.
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync_dir(root)
    write_generator(run_dir / GENERATOR, models[export_model], generator_record)
    return final


def remove_stale_temporaries(root: Path) -> None:
    """Delete `.tmp-*` directories left by a save that crashed."""
    for path in root.glob(f"{TEMP_PREFIX}*"):
        if path.is_dir():
            logger.warning("removing incomplete checkpoint %s left by an interrupted save", path)
            shutil.rmtree(path, ignore_errors=True)


def check_checkpoint(path: Path) -> dict[str, Any]:
    """Return the trainer state of a checkpoint, or raise CheckpointError naming what is missing or damaged."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    state = read_json(path / TRAINER_STATE)
    for name, size in state.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {path} is damaged: {name} has {file.stat().st_size} bytes, expected {size}"
            )
    return state


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Return (step, path) of every step-NNNNNNN directory, oldest first, complete or not."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_PATTERN.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Return the newest complete checkpoint of a run, skipping (with a warning) any that fail the check."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            check_checkpoint(path)
        except CheckpointError as error:
            logger.warning("skipping checkpoint: %s", error)
            continue
        return path
    return None


def load_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint(): (model state dicts, optimizer state dicts, trainer state)."""
    state = check_checkpoint(path)
    models: dict[str, dict[str, torch.Tensor]] = {}
    optimizers: dict[str, dict[str, Any]] = {}
    for name in state["files"]:
        file = path / name
        if name.endswith(".safetensors"):
            models[name.removesuffix(".safetensors")] = read_safetensors(file)
        elif name.endswith(".pt"):
            try:
                optimizers[name.removesuffix(".pt")] = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError on a bad file
                raise CheckpointError(f"cannot read {file}: {error}") from None
    return models, optimizers, state
