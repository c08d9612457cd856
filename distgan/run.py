"""Set up a training run: combine the configuration, open the data and check the run directory.

Everything here runs before the process group exists, so a bad option or a
missing folder fails on every rank with the same clear message.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distgan.checkpoint import CHECKPOINTS, latest_checkpoint, list_checkpoints
from distgan.config import (CONFIG_HEADER, MAX_DEPTH, MIN_DEPTH, TrainConfig, build_config, load_saved, load_toml,
                            option, resumed_config)
from distgan.data import DataSet, open_data
from distgan.data.mixtures import MIXTURES
from distgan.errors import CheckpointError, ConfigError
from distgan.losses import default_r1_gamma
from distgan.models import DEFAULT_WIDTH, default_architecture, default_depth, default_model

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
LOCK_FILE = ".lock"
_held_locks: dict[Path, int] = {}  # run directory -> open file descriptor of its lock
DEFAULT_Z_DIM = {"image": 64, "points": 2}
RESUME_MODES = ("auto", "latest", "never")
# Options left unset take these values per data kind (BENCHMARKS.md has the measurements). The 2D
# mixtures need more steps, larger batches and a decaying learning rate to cover their modes and leave
# few samples between them. Decay from 30 % of the steps kept ring8 from losing a mode at the full rate,
# which decay from 50 % did not in a measured run. With R1 on, images learn several times faster per step
# with Adam betas (0, 0.99) than with DCGAN's (0.5, 0.999), but those betas make the mixtures find fewer modes in the
# same number of steps. With the default dcgan pair, batch 128 and learning rates 5e-4 keep improving
# the digits to the last step, where batch 64 or 1e-3 get worse again after 2,500 to 3,000 steps.
# NOTE: the image settings were measured on 28-pixel MNIST digits only. Larger images use them untested.
KIND_DEFAULTS: dict[str, dict[str, int | float]] = {
    "image": {"batch_size": 128, "steps": 3500, "lr_g": 5e-4, "lr_d": 5e-4, "lr_decay_start": 1.0,
              "beta1": 0.0, "beta2": 0.99},
    "points": {"batch_size": 256, "steps": 60000, "lr_g": 5e-4, "lr_d": 5e-4, "lr_decay_start": 0.3,
               "beta1": 0.5, "beta2": 0.999},
}


@dataclass
class RunPlan:
    """A resolved configuration, its data set, and the checkpoint to resume from (None for a new run)."""

    config: TrainConfig
    data: DataSet
    resume_from: Path | None
    created_root: Path | None = None  # the outermost folder that plan_run made for the run directory, if any


def default_name(data: str) -> str:
    """Return the run name that `data` gives when --name is not set."""
    if data == "mnist" or data in MIXTURES:
        return data
    return Path(data).resolve().name or "images"


def _absolute_data(data: str) -> str:
    """Return a data path as an absolute path, so a run resumes from any working directory."""
    return data if data == "mnist" or data in MIXTURES else str(Path(data).resolve())


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
    if config.depth is not None and config.depth < MIN_DEPTH[model]:
        raise ConfigError(f"{option('depth')} is the number of hidden layers of the {model} model, so it must be "
                          f"between {MIN_DEPTH[model]} and {MAX_DEPTH}, got {config.depth}")
    depth = default_depth(model, data.kind) if config.depth is None else config.depth
    image = data.kind == "image"
    name = config.name or data.name
    return config.replace(
        data=_absolute_data(config.data),
        name=name,
        out=config.out or str(Path("runs") / name),
        model=model,
        resolution=data.sample_shape[1] if image else None,
        channels=data.sample_shape[0] if image else None,
        z_dim=config.z_dim or DEFAULT_Z_DIM[data.kind],
        width=config.width or DEFAULT_WIDTH[model],
        depth=depth,
        r1_gamma=default_r1_gamma(config.loss, data.kind) if config.r1_gamma is None else config.r1_gamma,
        **{key: value for key, value in KIND_DEFAULTS[data.kind].items() if getattr(config, key) is None},
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
    elif run_dir.is_dir():
        check_not_foreign(run_dir)
    data = open_data(config.data, config.resolution, config.channels)
    # Everything that can reject the options comes before the run directory is made.
    resolved = resolve_config(config.replace(out=str(run_dir)), data)
    default_architecture(resolved.model, data.kind, data.sample_shape, resolved.z_dim, resolved.width,
                         depth=resolved.depth)  # a ConfigError for a shape the model cannot produce
    created = _outermost_missing(run_dir)
    check_writable(run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        lock_run_dir(run_dir)
    return RunPlan(resolved, data, checkpoint, created)


def _outermost_missing(path: Path) -> Path | None:
    """Return the outermost folder of `path` (itself or an ancestor) that does not exist yet, or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def discard_empty_run_dir(plan: RunPlan) -> None:
    """Undo what plan_run() wrote when a failed run wrote nothing else into the run directory.

    The lock file goes, and so do the run directory and its parents up to the
    outermost folder that plan_run() made. Folders that existed before stay.
    """
    run_dir = Path(plan.config.out)
    if not run_dir.is_dir() or any(path.name != LOCK_FILE for path in run_dir.iterdir()):
        return
    release_run_dir(run_dir)
    try:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        if plan.created_root is None:
            return
        for folder in (run_dir, *run_dir.parents):
            folder.rmdir()  # raises OSError when another process wrote into it in the meantime
            if folder == plan.created_root:
                break
    except OSError:
        pass


def check_not_foreign(run_dir: Path) -> None:
    """Raise ConfigError when a new run would write into a non-empty folder that is not a distgan run."""
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE and not p.name.startswith(".write-test-"))
    if not entries:
        return
    config_path = run_dir / CONFIG_FILE
    try:
        written_by_distgan = config_path.read_text(encoding="utf-8").startswith(CONFIG_HEADER)
    except (OSError, UnicodeDecodeError):
        written_by_distgan = False
    if not written_by_distgan:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(f"--out {run_dir} is an existing folder that is not a distgan run (it contains {shown}); "
                          "choose a new or empty folder so that none of its files is overwritten")


def lock_run_dir(run_dir: Path) -> None:
    """Take an exclusive lock on the run directory for this process, or raise ConfigError if another has it.

    The lock is a flock on run_dir/.lock, so the kernel releases it when the
    process ends, even after SIGKILL. release_run_dir() releases it earlier.
    """
    key = run_dir.resolve()
    if key in _held_locks:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ConfigError(f"{run_dir} is in use by another distgan training (process {owner}); wait for it to "
                          "finish, or choose another --out") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode(), 0)
    _held_locks[key] = descriptor


def release_run_dir(run_dir: Path) -> None:
    """Release the lock that lock_run_dir() took on `run_dir`, if this process holds it."""
    descriptor = _held_locks.pop(run_dir.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


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
    saved = load_saved(saved_path)
    if "data" in explicit:
        explicit["data"] = _absolute_data(explicit["data"])
        if explicit["data"] != saved.data and saved.data != _absolute_data(saved.data):
            saved = saved.replace(data=_absolute_data(saved.data))  # a run saved with a relative path
        if explicit["data"] != saved.data and not Path(saved.data).exists():
            logger.warning("the data of this run moved from %s to %s", saved.data, explicit["data"])
            saved = saved.replace(data=explicit["data"])
    config = resumed_config(saved, explicit)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(
            f"no complete checkpoint in {run_dir / CHECKPOINTS} to resume from (the warnings above name what is "
            "wrong with each); remove the damaged step-NNNNNNN directories to start the run over, or choose "
            "another --out"
        )
    reached = int(checkpoint.name.removeprefix("step-"))
    if config.steps < reached:
        raise ConfigError(f"the run in {run_dir} is already at step {reached}, beyond --steps {config.steps}; "
                          f"pass a --steps above {reached} to train further, or choose another --out")
    return config, checkpoint
