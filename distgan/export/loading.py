"""Rebuild a trained generator from safetensors weights and its JSON record, without unpickling anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from distgan.checkpoint import (
    GENERATOR,
    GENERATOR_RECORD,
    GENERATOR_WEIGHTS,
    check_checkpoint,
    latest_checkpoint,
    read_generator_record,
    read_safetensors,
)
from distgan.errors import CheckpointError
from distgan.models import ARCHITECTURES, build_generator


def _resolve_weights(source: Path, raw: bool) -> tuple[Path, Path]:
    """Find (weights file, architecture record) for a run directory, generator/ folder or checkpoint."""
    if not source.exists():
        raise CheckpointError(f"not found: {source}; pass a run directory, its generator/ folder or a checkpoint")
    if source.is_file():
        raise CheckpointError(f"{source} is a file; pass the run directory that contains generator/ instead")
    if (source / "trainer.json").is_file():  # a checkpoint directory
        check_checkpoint(source)
        checkpoint = source
    elif raw:
        checkpoint = latest_checkpoint(source)
        if checkpoint is None:
            raise CheckpointError(f"no complete checkpoint under {source}; the raw generator lives in checkpoints")
    else:
        folder = source / GENERATOR if (source / GENERATOR).is_dir() else source
        if not (folder / GENERATOR_RECORD).is_file():
            raise CheckpointError(
                f"no generator weights in {source}: expected {GENERATOR}/{GENERATOR_RECORD}; "
                "train first, or pass a run directory or checkpoint"
            )
        return folder / GENERATOR_WEIGHTS, folder / GENERATOR_RECORD
    weights = checkpoint / ("G.safetensors" if raw or not (checkpoint / "G_ema.safetensors").exists()
                            else "G_ema.safetensors")
    return weights, checkpoint / GENERATOR_RECORD


def load_generator(source: str | Path, raw: bool = False, module: nn.Module | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained generator from safetensors weights and its JSON architecture record.

    `source` is a run directory, its generator/ folder or one checkpoint
    directory. `raw` picks the trained G instead of its moving average G_ema.
    `module` supplies the generator of a custom architecture, which cannot be
    rebuilt from JSON. Returns the module in eval mode and the record, with
    "weights" set to the file that was read. Raises CheckpointError.
    """
    weights, record_path = _resolve_weights(Path(source), raw)
    record = read_generator_record(record_path)
    architecture = record["architecture"]
    if module is None:
        if architecture["model"] not in ARCHITECTURES:
            raise CheckpointError(
                f"the generator in {record_path} is a custom module ({architecture.get('class', 'unknown class')}) "
                "and cannot be rebuilt from JSON; pass the module: load_generator(source, module=MyGenerator(...))"
            )
        try:
            module = build_generator(architecture)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"the architecture in {record_path} is invalid: {error}") from None
    state = read_safetensors(weights)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {weights} do not fit the generator: {error}") from None
    # The run's generator/ folder holds one file; which weights it is (G or G_ema) is in the record.
    name = record.get("weights", weights.stem) if weights.name == GENERATOR_WEIGHTS else weights.stem
    record = {**record, "weights": name}
    return module.eval(), record
