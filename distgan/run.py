"""Set up a training run: combine the configuration, open the data and check the run directory.

Everything here runs before the process group exists, so a bad option or a
missing folder fails on every rank with the same clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distgan.checkpoint import latest_checkpoint, list_checkpoints
from distgan.config import TrainConfig, build_config, load_saved, load_toml, resumed_config
from distgan.data import DataSet, open_data
from distgan.data.mixtures import MIXTURES
from distgan.errors import CheckpointError, ConfigError
from distgan.losses import default_r1_gamma
from distgan.models import DEFAULT_WIDTH, default_model

CONFIG_FILE = "config.toml"
DEFAULT_Z_DIM = {"image": 64, "points": 8}
# Options left unset take these values per data kind. The 2D mixtures need more steps, larger batches
# and faster learning rates than images to cover their modes; BENCHMARKS.md has the measurements.
KIND_DEFAULTS: dict[str, dict[str, int | float]] = {
    "image": {"batch_size": 64, "steps": 3000, "lr_g": 2e-4, "lr_d": 2e-4},
    "points": {"batch_size": 256, "steps": 20000, "lr_g": 5e-4, "lr_d": 5e-4},
}


@dataclass
class RunPlan:
    """A resolved configuration, its data set, and the checkpoint to resume from (None for a new run)."""

    config: TrainConfig
    data: DataSet
    resume_from: Path | None


def default_name(data: str) -> str:
    """Return the run name that `data` gives when --name is not set."""
    if data == "mnist" or data in MIXTURES:
        return data
    return Path(data).resolve().name or "images"


def check_data_options(config: TrainConfig, data: DataSet) -> None:
    """Raise ConfigError for --augment on 2D points or --conditional on a data set without classes."""
    if config.augment and data.kind != "image":
        raise ConfigError(f"augment transforms apply to images, but '{data.name}' has 2D points; remove --augment")
    if config.conditional and len(data.class_names) < 2:
        raise ConfigError(
            f"--conditional needs labelled data with at least 2 classes, but '{data.name}' has "
            f"{len(data.class_names)}; use mnist, or an image folder (or packed data set) whose top-level "
            "subfolders name the classes"
        )


def resolve_config(config: TrainConfig, data: DataSet) -> TrainConfig:
    """Fill every option left as None from the data set, the model and the loss defaults.

    Raises ConfigError for options that do not apply to the data set.
    """
    check_data_options(config, data)
    model = default_model(data.kind) if config.model == "auto" else config.model
    image = data.kind == "image"
    name = config.name or data.name
    return config.replace(
        name=name,
        out=config.out or str(Path("runs") / name),
        model=model,
        resolution=data.sample_shape[1] if image else None,
        channels=data.sample_shape[0] if image else None,
        z_dim=config.z_dim or DEFAULT_Z_DIM[data.kind],
        width=config.width or DEFAULT_WIDTH[model],
        r1_gamma=default_r1_gamma(config.loss, data.kind) if config.r1_gamma is None else config.r1_gamma,
        **{key: value for key, value in KIND_DEFAULTS[data.kind].items() if getattr(config, key) is None},
    )


def plan_run(config_file: str | Path | None, overrides: dict[str, Any], resume: bool) -> RunPlan:
    """Combine defaults, config file and CLI options, then open the data and check the run directory.

    With `resume`, the saved config.toml of the run is the base and the latest
    complete checkpoint is the starting point. Without it, a run directory that
    already contains checkpoints is an error, so that no earlier run is overwritten.
    """
    config = build_config(config_file, overrides)
    run_dir = Path(config.out or Path("runs") / (config.name or default_name(config.data)))
    checkpoint = None
    if resume:
        saved_path = run_dir / CONFIG_FILE
        if not saved_path.is_file():
            raise CheckpointError(f"nothing to resume in {run_dir}: {CONFIG_FILE} not found; start without --resume")
        explicit = dict(load_toml(config_file)) if config_file else {}
        explicit.update({key: value for key, value in overrides.items() if value is not None})
        explicit.pop("out", None)
        config = resumed_config(load_saved(saved_path), explicit)
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise CheckpointError(
                f"no complete checkpoint in {run_dir / 'checkpoints'} to resume from; start without --resume"
            )
    else:
        existing = list_checkpoints(run_dir)
        if existing:
            raise CheckpointError(
                f"{run_dir} already contains a run with checkpoints up to step {existing[-1][0]}; "
                "pass --resume to continue it, or choose another --out"
            )
    data = open_data(config.data, config.resolution, config.channels)
    return RunPlan(resolve_config(config.replace(out=str(run_dir)), data), data, checkpoint)
