"""Crash-safe checkpoints and the generator record that export reads.

A checkpoint is a directory `checkpoints/step-NNNNNNN/` holding

    G.safetensors, D.safetensors       the trained generator and discriminator
    G_ema.safetensors                  the generator's moving average, when EMA is on
    generator.json                     the generator's architecture record (see distgan.models)
    optimizer_G.pt, optimizer_D.pt     optimizer state dicts (tensors and numbers only)
    scaler.pt                          the GradScaler state, with fp16 only
    trainer.json                       step, format, and the size and SHA-256 of every file above

The run's `generator/` directory contains the weights that export uses by
default (G_ema, or G without EMA) as generator.safetensors + generator.json.

A checkpoint is written into a temporary `.tmp-*` directory, synced to disk
and renamed into place, so a directory named step-NNNNNNN is complete: a
process killed mid-save leaves only a `.tmp-*` directory or file, which the
next start removes. A save that fails (a full disk, for example) removes its
temporary directory before it raises.

Loading reads weights from safetensors and optimizer state with
`torch.load(weights_only=True)`, after checking each file's size and SHA-256
against trainer.json. Nothing here unpickles arbitrary objects, and no RNG
state is stored: every random draw follows from (seed, step).
"""

from __future__ import annotations

import errno
import hashlib
import io
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
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from distgan.errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
GENERATOR = "generator"
GENERATOR_WEIGHTS = "generator.safetensors"
GENERATOR_RECORD = "generator.json"
TRAINER_STATE = "trainer.json"
CHECKPOINT_FORMAT = "distgan-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
GENERATOR_FORMAT = "distgan-generator"
GENERATOR_FORMAT_VERSION = 1
SAMPLE_KINDS = ("image", "points")
STEP_PATTERN = re.compile(r"^step-(\d{7,})$")
TEMP_PREFIX = ".tmp-"
MODEL_STEMS = ("G", "D", "G_ema")
OPTIMIZER_STEMS = ("optimizer_G", "optimizer_D", "scaler")
REQUIRED_FILES = ("G.safetensors", "D.safetensors", "optimizer_G.pt", "optimizer_D.pt")
HASH_BLOCK_BYTES = 16 << 20  # bytes read at a time while hashing a file


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def _write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a new file and flush it to disk; a full disk raises OSError with errno ENOSPC."""
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _discard(path: Path) -> None:
    """Delete the temporary file of a failed write, ignoring errors so that the write's own error is raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def safetensors_bytes(state_dict: dict[str, torch.Tensor], step: int) -> bytes:
    """Serialize a state dict as safetensors, with the training step in the metadata."""
    return save_safetensors_bytes(_plain_state(state_dict), metadata={"distgan.step": str(step)})


def torch_bytes(state: dict[str, Any]) -> bytes:
    """Serialize an optimizer or scaler state dict with torch.save (tensors and plain containers only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _plain_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors rejects tensors that share memory or are not contiguous; a copy on the CPU has neither.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}


def write_failure(action: str, path: Path, error: BaseException) -> CheckpointError:
    """Build the CheckpointError for a write that failed, saying when the disk is full and how much is free."""
    reason = str(error) or type(error).__name__
    full = getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in reason
    try:
        free = f"{shutil.disk_usage(path.parent if not path.exists() else path).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    cause = f"the disk is full ({free})" if full else f"{reason} ({free})"
    return CheckpointError(f"cannot {action} {path}: {cause}. Nothing of it was kept, and earlier checkpoints "
                           "are intact. Free disk space (or lower --keep-checkpoints) and run the same command again "
                           "to resume from the latest checkpoint.")


def write_generator(directory: Path, state_dict: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """Write generator.safetensors and generator.json into `directory`, each by an atomic replace.

    Both files are written to temporaries before either replaces the old one,
    so a failed write (a full disk) raises CheckpointError and leaves the old
    pair as it was. A process killed between the two renames leaves the new
    weights beside the old record; the checkpoint of that step is complete
    by then, and the next save rewrites both.
    """
    weights_temporary = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{GENERATOR_WEIGHTS}"
    record_temporary = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{GENERATOR_RECORD}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_bytes(weights_temporary, safetensors_bytes(state_dict, record["step"]))
        _write_bytes(record_temporary, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        os.replace(weights_temporary, directory / GENERATOR_WEIGHTS)
        os.replace(record_temporary, directory / GENERATOR_RECORD)
        _fsync_dir(directory)
    except OSError as error:
        _discard(weights_temporary)
        _discard(record_temporary)
        raise write_failure("write the generator weights in", directory, error) from None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        _write_bytes(temporary, (json.dumps(value, indent=2) + "\n").encode("utf-8"))
        os.replace(temporary, path)
    except BaseException:
        _discard(temporary)
        raise


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`. Raises CheckpointError when it is missing, not JSON, or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); the file is damaged") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must contain a JSON object, got {type(value).__name__}; the file is damaged")
    return value


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def read_generator_record(path: Path) -> dict[str, Any]:
    """Read a generator.json and check every field that rebuilding, exporting and sampling the generator use.

    Raises CheckpointError naming the field, its value and what it must be,
    so that a damaged or foreign file fails here instead of deep inside export.
    """
    record = read_json(path)
    if record.get("format") != GENERATOR_FORMAT:
        raise CheckpointError(f"{path} is not a distgan generator record: its format is {record.get('format')!r}, "
                              f"expected {GENERATOR_FORMAT!r}")
    version = record.get("format_version")
    if not _is_int(version, 1) or version > GENERATOR_FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {version!r}; this distgan reads version "
                              f"{GENERATOR_FORMAT_VERSION}. Upgrade distgan to read it.")
    value_range = record.get("value_range")
    checks = {
        "architecture": (isinstance(record.get("architecture"), dict)
                         and isinstance(record["architecture"].get("model"), str), "an object with a 'model' name"),
        "kind": (record.get("kind") in SAMPLE_KINDS, f"one of {', '.join(SAMPLE_KINDS)}"),
        "z_dim": (_is_int(record.get("z_dim"), 1), "a positive integer"),
        "sample_shape": (isinstance(record.get("sample_shape"), list) and bool(record["sample_shape"])
                         and all(_is_int(size, 1) for size in record["sample_shape"]), "a list of positive integers"),
        "step": (_is_int(record.get("step"), 0), "an integer of at least 0"),
        "class_names": (isinstance(record.get("class_names", []), list)
                        and all(isinstance(name, str) for name in record.get("class_names", [])), "a list of strings"),
        "value_range": (value_range is None or (isinstance(value_range, list) and len(value_range) == 2 and all(
            isinstance(bound, (int, float)) and not isinstance(bound, bool) for bound in value_range)),
            "null or a list of two numbers"),
        "layout": (isinstance(record.get("layout", ""), str), "a string"),
        "weights": (isinstance(record.get("weights", ""), str), "a string"),
    }
    for field, (valid, expected) in checks.items():
        if not valid:
            raise CheckpointError(f"{path}: '{field}' must be {expected}, got {record.get(field)!r}; the file is "
                                  "damaged or was not written by distgan")
    return record


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU. Raises CheckpointError when it is missing or damaged."""
    try:
        return _load_safetensors(path.read_bytes(), path)
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except OSError as error:
        raise CheckpointError(f"cannot read weights from {path}: {error}") from None


def _load_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"cannot read weights from {path}: {error}; the file is damaged or not a "
                              "safetensors file") from None


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

    Raises CheckpointError when a file cannot be written (a full disk, for
    example). The temporary directory is removed first, so nothing of this
    step is left and earlier checkpoints are untouched.
    """
    root = run_dir / CHECKPOINTS
    final = root / checkpoint_name(step)
    temporary = root / f"{TEMP_PREFIX}{checkpoint_name(step)}-{uuid.uuid4().hex[:8]}"
    # Everything is serialized in memory first, so a failed write is a plain OSError (ENOSPC on a full disk).
    contents = {f"{stem}.safetensors": safetensors_bytes(state, step) for stem, state in models.items()}
    contents.update({f"{stem}.pt": torch_bytes(state) for stem, state in optimizers.items()})
    contents[GENERATOR_RECORD] = (json.dumps(generator_record, indent=2) + "\n").encode("utf-8")
    files = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for name, data in sorted(contents.items())}
    state = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "step": step,
             "files": files, "export_model": export_model, **(extra_state or {})}
    try:
        root.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
        for name, data in contents.items():
            _write_bytes(temporary / name, data)
        _write_json(temporary / TRAINER_STATE, state)
        _fsync_dir(temporary)
        _publish(temporary, final)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise write_failure("write checkpoint", final, error) from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    write_generator(run_dir / GENERATOR, models[export_model], generator_record)
    return final


def _publish(temporary: Path, final: Path) -> None:
    """Rename a complete temporary checkpoint to its final name, replacing an older copy of the same step.

    A resumed run that reaches an already saved step (one whose checkpoint was
    damaged, for example) replaces it. The old copy is first renamed to a
    temporary name, so at no moment is a half-deleted step-NNNNNNN visible.
    """
    replaced = None
    if final.exists():
        replaced = final.with_name(f"{TEMP_PREFIX}replaced-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, replaced)
    os.rename(temporary, final)
    _fsync_dir(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the `.tmp-*` directories and files that an interrupted save left in `directory`.

    Call it only while no save is running, because a running save's temporary
    directory looks the same. Logs one warning per removed path and returns them.
    """
    removed = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.glob(f"{TEMP_PREFIX}*")):
        logger.warning("removing %s, left incomplete by an interrupted save", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _file_entries(path: Path, state: dict[str, Any]) -> dict[str, tuple[int, str | None]]:
    """Return {file name: (size, sha256 or None)} from trainer.json, checking every type on the way."""
    files = state.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path / TRAINER_STATE} has no 'files' table; it was not written by distgan")
    entries = {}
    for name, entry in files.items():
        # A name with a separator could point outside the checkpoint directory.
        if not isinstance(name, str) or name != Path(name).name or name.startswith("."):
            raise CheckpointError(f"{path / TRAINER_STATE} lists an invalid file name {name!r}; the file is damaged")
        if isinstance(entry, int) and not isinstance(entry, bool):
            entries[name] = (entry, None)  # checkpoints of distgan 0.1 record sizes only
        elif (isinstance(entry, dict) and isinstance(entry.get("size"), int)
              and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64):
            entries[name] = (entry["size"], entry["sha256"])
        else:
            raise CheckpointError(f"{path / TRAINER_STATE} has an invalid entry for {name}: {entry!r}; "
                                  "expected its size and SHA-256")
    return entries


def check_checkpoint(path: Path, verify_hashes: bool = True) -> dict[str, Any]:
    """Return the trainer state of a checkpoint, or raise CheckpointError naming what is missing or damaged.

    Checks that trainer.json is a distgan checkpoint record for the step in
    the directory's name, and that every file it lists exists with the
    recorded size and, with `verify_hashes`, the recorded SHA-256.
    """
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not (path / TRAINER_STATE).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete or not a distgan checkpoint: {TRAINER_STATE} is "
                              "missing")
    state = read_json(path / TRAINER_STATE)
    if state.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path / TRAINER_STATE} has format {state.get('format')!r}, not "
                              f"{CHECKPOINT_FORMAT!r}; the directory was not written by distgan")
    step = state.get("step")
    match = STEP_PATTERN.match(path.name)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0 or (match and int(match.group(1)) != step):
        raise CheckpointError(f"{path / TRAINER_STATE} records step {step!r}, which does not match the directory "
                              "name; the checkpoint is damaged")
    for name, (size, sha256) in _file_entries(path, state).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {path} is damaged: {name} has {file.stat().st_size} bytes, expected {size}"
            )
        if verify_hashes and sha256 is not None and file_sha256(file) != sha256:
            raise CheckpointError(f"checkpoint {path} is damaged: the SHA-256 of {name} differs from the one "
                                  "recorded when it was saved")
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


def _load_optimizer_state(data: bytes, file: Path) -> dict[str, Any]:
    try:
        # weights_only=True rebuilds tensors and plain containers only; any other object in the pickle fails.
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError on a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read {file}: {first_line}. Only optimizer state written by distgan "
                              "loads here; the file is damaged or was replaced") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} contains {type(value).__name__}, not a state dict; the file was replaced")
    return value


def load_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint(): (model state dicts, optimizer state dicts, trainer state).

    Each file is read once, checked against the size and SHA-256 in
    trainer.json, then parsed. Raises CheckpointError when a file is missing,
    damaged or of the wrong kind.
    """
    state = check_checkpoint(path, verify_hashes=False)
    entries = _file_entries(path, state)
    missing = [name for name in REQUIRED_FILES if name not in entries]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by distgan training")
    models: dict[str, dict[str, torch.Tensor]] = {}
    optimizers: dict[str, dict[str, Any]] = {}
    for name, (size, sha256) in entries.items():
        stem, suffix = name.rsplit(".", 1) if "." in name else (name, "")
        known = (suffix == "safetensors" and stem in MODEL_STEMS) or (suffix == "pt" and stem in OPTIMIZER_STEMS)
        if not known:
            continue
        file = path / name
        try:
            data = file.read_bytes()
        except OSError as error:
            raise CheckpointError(f"cannot read {file}: {error}") from None
        if len(data) != size or (sha256 is not None and hashlib.sha256(data).hexdigest() != sha256):
            raise CheckpointError(f"checkpoint {path} is damaged: {name} differs from the file recorded when it "
                                  "was saved")
        if suffix == "safetensors":
            models[stem] = _load_safetensors(data, file)
        else:
            optimizers[stem] = _load_optimizer_state(data, file)
    return models, optimizers, state
