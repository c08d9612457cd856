"""Typed training configuration: defaults, TOML loading, validation and the resolved record.

A value comes from, in rising priority: the defaults below, a `--config` TOML
file, then options given on the command line. `resolve()` fills the values
left as None from the data set (resolution, channels) and the model, and the
resolved configuration is saved as config.toml in the run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from distgan.errors import ConfigError

BUILTIN_DATASETS = ("mnist", "ring8", "grid25")
MODEL_NAMES = ("auto", "dense", "dcgan")
LOSS_NAMES = ("logistic", "hinge", "lsgan", "wgan-gp")
MIXED_PRECISION = ("no", "bf16", "fp16")
SAVE_ERROR_POLICIES = ("stop", "continue")

CONFIG_HEADER = "# Resolved configuration of this run, written by distgan."
AUGMENT_TRANSFORMS = ("color", "translation", "cutout")  # the DiffAugment transforms of distgan.augment

MAX_DEPTH = 16  # a bound on --depth, so that a mistyped value fails at once instead of filling the memory
MIN_DEPTH = {"dcgan": 0, "dense": 1}  # the dcgan pair works without extra convolutions, the dense pair needs a layer
LEGACY_DEPTH = {"dcgan": 0, "dense": 3}  # the depth of each built-in pair before depth was a configuration key

# Options that may change when a run resumes; every other key must match the saved run.
RESUMABLE_KEYS = ("steps", "log_every", "sample_every", "checkpoint_every", "num_workers", "cpu",
                  "max_skipped_steps", "compile", "channels_last", "keep_checkpoints", "on_save_error",
                  "collective_timeout")


@dataclass
class TrainConfig:
    """Everything that determines a training run. Intervals count optimizer steps."""

    data: str = "mnist"
    name: str | None = None
    out: str | None = None
    model: str = "auto"
    resolution: int | None = None
    channels: int | None = None
    z_dim: int | None = None
    width: int | None = None
    depth: int | None = None  # dcgan: extra 3x3 convs per resolution; dense: hidden layers; None: models.DEFAULT_DEPTH
    batch_size: int | None = None  # None: the default of the data kind (see run.KIND_DEFAULTS)
    steps: int | None = None
    ema: bool = True
    ema_decay: float = 0.999
    grad_accum: int = 1
    sync_bn: bool = False
    fsdp: bool = False
    r1_gamma: float | None = None  # None: the default of the loss and data kind (see losses.default_r1_gamma)
    r1_every: int = 16
    gp_weight: float = 10.0
    spectral_norm: bool = False
    augment: str = ""  # comma-separated DiffAugment transforms: color, translation, cutout
    conditional: bool = False
    max_skipped_steps: int = 20
    lr_g: float | None = None
    lr_d: float | None = None
    lr_decay_start: float | None = None  # fraction of steps; None: the default of the data kind
    beta1: float | None = None  # None: the default of the data kind
    beta2: float | None = None
    loss: str = "logistic"
    seed: int = 0
    mixed_precision: str | None = None
    cpu: bool = False
    log_every: int = 50
    sample_every: int = 250
    checkpoint_every: int = 500
    keep_checkpoints: int = 0  # the newest N complete checkpoints stay; 0 keeps all
    on_save_error: str = "stop"
    collective_timeout: int = 600  # seconds a collective waits for the other processes before failing
    num_workers: int = 2
    compile: bool = False
    channels_last: bool = False

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def run_dir(self) -> Path:
        if self.out is None:
            raise ConfigError("the run directory is not resolved yet; call resolve() first")
        return Path(self.out)


def _field_types() -> dict[str, type]:
    """Map each key to the scalar type its values must have (str, int or float)."""
    types: dict[str, type] = {}
    for f in fields(TrainConfig):
        annotation = str(f.type).split(" ")[0]
        types[f.name] = {"int": int, "float": float, "bool": bool}.get(annotation, str)
    return types


FIELD_TYPES = _field_types()


def unknown_key_message(key: str, source: str) -> str:
    valid = TrainConfig.keys()
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{key}' in {source}{hint} Valid keys: {', '.join(valid)}."


def coerce_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check the keys and value types of a mapping of options and return it with ints widened to floats.

    Raises ConfigError naming the first unknown key or mistyped value.
    """
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise ConfigError(unknown_key_message(key, source))
        if value is None:
            checked[key] = None
            continue
        expected = FIELD_TYPES[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(
                f"config key '{key}' in {source} must be {expected.__name__}, got {value!r} ({type(value).__name__})"
            )
        checked[key] = value
    return checked


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML file of config keys. Raises ConfigError when it is missing or malformed."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a TOML file, such as a run's config.toml") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                          "save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    for key, value in values.items():
        if isinstance(value, dict):
            raise ConfigError(f"config file {path} has a table [{key}]; write every key at the top level")
    return coerce_values(values, str(path))


def build_config(file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Combine the defaults, an optional TOML file and explicit overrides (None entries are ignored)."""
    values: dict[str, Any] = {}
    if file is not None:
        values.update(load_toml(file))
        if Path(file).read_text(encoding="utf-8").startswith(CONFIG_HEADER):
            _fill_legacy_depth(values)  # a run's config.toml describes that run's networks, also as a template
    explicit = {key: value for key, value in (overrides or {}).items() if value is not None}
    values.update(coerce_values(explicit, "the command line"))
    config = TrainConfig(**values)
    validate(config)
    return config


def parse_policy(text: str) -> tuple[str, ...]:
    """Split a comma-separated list of transforms ("" for none) and check every name.

    Raises ConfigError naming an unknown transform and the valid ones.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in AUGMENT_TRANSFORMS:
            raise ConfigError(f"invalid augment transform '{name}'; choose a comma-separated list of "
                              f"{', '.join(AUGMENT_TRANSFORMS)}, or an empty string for none")
    if len(set(names)) != len(names):
        raise ConfigError(f"augment lists a transform twice: {text!r}")
    return names


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def option(key: str) -> str:
    """Name a configuration key as both the config file and the command line spell it: "batch_size (--batch-size)"."""
    return f"{key} (--{key.replace('_', '-')})"


def validate(config: TrainConfig) -> None:
    """Raise ConfigError on the first value that is out of range, naming the option and what is valid."""
    _require(config.model in MODEL_NAMES, f"invalid {option('model')} '{config.model}'; choose one of {', '.join(MODEL_NAMES)}")
    _require(config.loss in LOSS_NAMES, f"invalid {option('loss')} '{config.loss}'; choose one of {', '.join(LOSS_NAMES)}")
    _require(
        config.mixed_precision is None or config.mixed_precision in MIXED_PRECISION,
        f"invalid {option('mixed_precision')} '{config.mixed_precision}'; choose one of {', '.join(MIXED_PRECISION)}",
    )
    _require(config.on_save_error in SAVE_ERROR_POLICIES,
             f"invalid {option('on_save_error')} '{config.on_save_error}'; choose one of {', '.join(SAVE_ERROR_POLICIES)}")
    for key in ("batch_size", "steps", "log_every", "grad_accum", "r1_every", "collective_timeout"):
        value = getattr(config, key)
        _require(value is None or value >= 1, f"{option(key)} must be at least 1, got {value}")
    for key in ("sample_every", "checkpoint_every", "num_workers", "max_skipped_steps", "keep_checkpoints"):
        _require(getattr(config, key) >= 0, f"{option(key)} must be 0 (off) or more, got {getattr(config, key)}")
    for key in ("resolution", "channels", "z_dim", "width"):
        value = getattr(config, key)
        _require(value is None or value >= 1, f"{option(key)} must be at least 1, got {value}")
    if config.depth is not None:
        if config.model in MIN_DEPTH:
            low = MIN_DEPTH[config.model]
            _require(low <= config.depth <= MAX_DEPTH,
                     f"{option('depth')} must be between {low} and {MAX_DEPTH} for the {config.model} model, "
                     f"got {config.depth}")
        else:  # --model auto: the data set picks the model later, and resolve_config checks its lower bound
            _require(0 <= config.depth <= MAX_DEPTH,
                     f"{option('depth')} must be between 0 and {MAX_DEPTH} for the dcgan model (images) and between "
                     f"1 and {MAX_DEPTH} for the dense model (2D data), got {config.depth}")
    _require(config.channels in (None, 1, 3), f"{option('channels')} must be 1 or 3, got {config.channels}")
    for key in ("r1_gamma", "gp_weight"):
        value = getattr(config, key)
        _require(value is None or (math.isfinite(value) and value >= 0),
                 f"{option(key)} must be 0 (off) or a positive weight, got {value}")
    parse_policy(config.augment)
    for key in ("lr_g", "lr_d"):
        value = getattr(config, key)
        _require(value is None or (math.isfinite(value) and value > 0),
                 f"{option(key)} must be a positive learning rate, got {value}")
    _require(config.lr_decay_start is None or 0.0 <= config.lr_decay_start <= 1.0,
             f"{option('lr_decay_start')} must be a fraction of the steps in [0, 1] (1 turns decay off), "
             f"got {config.lr_decay_start}")
    for key in ("beta1", "beta2", "ema_decay"):
        value = getattr(config, key)
        _require(value is None or 0.0 <= value < 1.0, f"{option(key)} must be in [0, 1), got {value}")
    _require(0 <= config.seed < 2**63, f"{option('seed')} must be in [0, 2**63), got {config.seed}")
    _require(bool(config.data), "data (--data) must name a built-in data set or a folder")
    if config.name is not None:
        _require(bool(config.name) and not any(part in config.name for part in ("/", "\\", "..")),
                 f"name {config.name!r} must be a plain, non-empty run name without '/', '\\' or '..'; "
                 "use --out to choose the directory")
    _require(config.out is None or bool(config.out.strip()), "out (--out) must not be empty; omit it for runs/<name>")


def resumed_config(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return the saved configuration of a run with the options that may change on resume applied.

    Raises ConfigError when an override would change a key that determines the training result.
    """
    explicit = coerce_values({k: v for k, v in overrides.items() if v is not None}, "the command line")
    changes: dict[str, Any] = {}
    for key, value in explicit.items():
        if key in RESUMABLE_KEYS:
            changes[key] = value
        elif getattr(saved, key) != value:
            raise ConfigError(
                f"cannot change '{key}' from {getattr(saved, key)!r} to {value!r} when resuming; "
                f"only {', '.join(RESUMABLE_KEYS)} may change. Start a new run with another --out instead."
            )
    config = saved.replace(**changes)
    validate(config)
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # A JSON string is a valid TOML basic string for the characters a config value contains.
    return json.dumps(str(value), ensure_ascii=False)


def save_toml(config: TrainConfig, path: str | Path) -> None:
    """Write the configuration as a flat TOML file; keys whose value is None are left out."""
    lines = [CONFIG_HEADER]
    for key, value in config.to_dict().items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_saved(path: str | Path) -> TrainConfig:
    """Read a config.toml written by save_toml().

    A run saved without a depth was written before the option existed, when
    the dcgan pair had no extra convolutions and the dense pair three hidden
    layers, so its depth is 0 or 3.
    """
    values = load_toml(path)
    _fill_legacy_depth(values)
    return TrainConfig(**values)


def _fill_legacy_depth(values: dict[str, Any]) -> None:
    if values.get("model") in LEGACY_DEPTH:
        values.setdefault("depth", LEGACY_DEPTH[values["model"]])
