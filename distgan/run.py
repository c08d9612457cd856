"""Set up a training run: combine the configuration, open the data and check the run directory.

Everything here runs before the process group exists, so a bad option or a
missing folder fails on every rank with the same clear message.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distgan.checkpoint import CHECKPOINTS, latest_checkpoint, list_checkpoints
from distgan.config import TrainConfig, build_config, load_saved, load_toml, resumed_config
from distgan.data import DataSet, open_data
from distgan.data.mixtures import MIXTURES
from distgan.errors import CheckpointError, ConfigError
from distgan.models import DEFAULT_WIDTH, default_model

CONFIG_FILE = "config.toml"
DEFAULT_Z_DIM = {"image": 64, "points": 8}
RESUME_MODES = ("auto", "latest", "never")


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


def resolve_config(config: TrainConfig, data: DataSet) -> TrainConfig:
    """Fill every option left as None from the data set and the model defaults."""
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
    )


def plan_run(config_file: str | Path | None, overrides: dict[str, Any], resume: str = "auto") -> RunPlan:
    """Combine defaults, config file and CLI options, then open the data and check the run directory.

    `resume` is one of RESUME_MODES. "auto" continues the run in the run
    directory from its latest complete checkpoint when it has checkpoints and
    starts a new run otherwise, so the same command restarts a run that was
    interrupted. "latest" continues and fails when there is nothing to
    continue. "never" starts a new run and fails when the run directory
    already contains checkpoints, so that no earlier run is overwritten. A
    continued run takes its saved config.toml as the base. Raises ConfigError
    or CheckpointError naming the directory and what to do.
    """
    if resume not in RESUME_MODES:
        raise ConfigError(f"invalid --resume '{resume}'; choose one of {', '.join(RESUME_MODES)}")
    config = build_config(config_file, overrides)
    run_dir = Path(config.out or Path("runs") / (config.name or default_name(config.data)))
    existing = list_checkpoints(run_dir)
    checkpoint = None
    if resume == "never" and existing:
        raise CheckpointError(
            f"{run_dir} already contains a run with checkpoints up to step {existing[-1][0]}; "
            "pass --resume auto to continue it, or choose another --out"
        )
    if resume == "latest" or (resume == "auto" and existing):
        config, checkpoint = _continued_run(run_dir, config_file, overrides, resume)
    data = open_data(config.data, config.resolution, config.channels)
    check_writable(run_dir)
    return RunPlan(resolve_config(config.replace(out=str(run_dir)), data), data, checkpoint)


def check_writable(run_dir: Path) -> None:
    """Create `run_dir` if needed and write a probe file into it; raise ConfigError when that fails.

    A probe also catches read-only mounts and holds for root, where permission
    bits alone mislead. It writes no data, so it does not detect a full disk.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write to the run directory {run_dir}: {error.strerror or error}; "
                          "choose another --out") from None


def _continued_run(run_dir: Path, config_file: str | Path | None, overrides: dict[str, Any], resume: str
                   ) -> tuple[TrainConfig, Path]:
    """Return the saved configuration of the run in `run_dir` with the allowed overrides, and its latest checkpoint."""
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        hint = "start without --resume latest" if resume == "latest" else "choose another --out"
        raise CheckpointError(f"nothing to resume in {run_dir}: {CONFIG_FILE} not found; {hint}")
    explicit = dict(load_toml(config_file)) if config_file else {}
    explicit.update({key: value for key, value in overrides.items() if value is not None})
    explicit.pop("out", None)
    config = resumed_config(load_saved(saved_path), explicit)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(
            f"no complete checkpoint in {run_dir / CHECKPOINTS} to resume from (the warnings above name what is "
            "wrong with each); remove the damaged step-NNNNNNN directories to start the run over, or choose "
            "another --out"
        )
    return config, checkpoint
