"""Convert a trained generator to ONNX and prove that the file computes what PyTorch computes.

`export_generator()` writes the file in three stages: convert (the dynamo
exporter of torch.onnx, with the TorchScript exporter as a fallback), attach
metadata, then validate (onnx.checker, then onnxruntime against PyTorch at
several batch sizes). The file appears at its destination only after every
check passed; a failed export leaves nothing there and raises ExportError
with the figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from distgan import __version__
from distgan.checkpoint import (
    GENERATOR,
    GENERATOR_RECORD,
    GENERATOR_WEIGHTS,
    latest_checkpoint,
    read_json,
    read_safetensors,
)
from distgan.errors import CheckpointError, ExportError
from distgan.models import ARCHITECTURES, build_generator

DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
PARITY_BATCH_SIZES = (1, 3, 8)
PARITY_SEED = 1234  # seed of the random latents compared between PyTorch and onnxruntime


@dataclass
class ParityResult:
    """Largest absolute difference between onnxruntime and PyTorch at one batch size."""

    batch_size: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


@dataclass
class ExportReport:
    """Outcome of an export: the file, the exporter used and the validation results."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    file_size: int
    parity: list[ParityResult] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _resolve_weights(source: Path, raw: bool) -> tuple[Path, Path]:
    """Find (weights file, architecture record) for a run directory, generator/ folder or checkpoint."""
    if not source.exists():
        raise CheckpointError(f"not found: {source}; pass a run directory, its generator/ folder or a checkpoint")
    if source.is_file():
        raise CheckpointError(f"{source} is a file; pass the run directory that contains generator/ instead")
    if (source / "trainer.json").is_file():  # a checkpoint directory
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
    record = read_json(record_path)
    architecture = record.get("architecture", {})
    if module is None:
        if architecture.get("model") not in ARCHITECTURES:
            raise CheckpointError(
                f"the generator in {record_path} is a custom module ({architecture.get('class', 'unknown class')}) "
                "and cannot be rebuilt from JSON; pass the module: load_generator(source, module=MyGenerator(...))"
            )
        module = build_generator(architecture)
    state = read_safetensors(weights)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {weights} do not fit the generator: {error}") from None
    record = {**record, "weights": weights.stem}
    return module.eval(), record


def onnx_metadata(record: dict[str, Any]) -> dict[str, str]:
    """Return the metadata_props that describe the model to an application reading the ONNX file."""
    image = record["kind"] == "image"
    return {
        "distgan_version": __version__,
        "kind": record["kind"],
        "input": "z",
        "output": "image" if image else "points",
        "z_dim": str(record["z_dim"]),
        "sample_shape": json.dumps(record["sample_shape"]),
        "value_range": json.dumps(record.get("value_range")),
        "layout": record.get("layout", "NCHW" if image else "N2"),
        "dtype": "float32",
        "class_names": json.dumps(record.get("class_names", [])),
        "num_classes": "0",  # labels as a model input come with conditional models
        "step": str(record.get("step", 0)),
        "weights": record.get("weights", ""),
        "data": str(record.get("data", "")),
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the progress lines and registration warnings that torch.onnx prints."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # torch.export emits deprecation warnings about its own internals (torch 2.13).
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        onnx_logger.setLevel(level)


def _convert(generator: nn.Module, z_dim: int, output_name: str, path: Path, opset: int) -> tuple[str, list[str]]:
    """Write the raw ONNX graph; return the exporter that produced it and notes on any fallback."""
    example = (torch.randn(3, z_dim),)
    notes: list[str] = []
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                generator, example, dynamo=True, input_names=["z"], output_names=[output_name],
                dynamic_shapes={"z": {0: torch.export.Dim("batch")}}, opset_version=opset, verbose=False,
            )
            program.save(str(path))
        return "dynamo", notes
    except Exception as error:  # the dynamo exporter raises many types; the fallback decides
        notes.append(f"the dynamo exporter failed ({type(error).__name__}: {str(error).splitlines()[0][:300]}); "
                     "used the TorchScript exporter")
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                generator, example, str(path), dynamo=False, input_names=["z"], output_names=[output_name],
                dynamic_axes={"z": {0: "batch"}, output_name: {0: "batch"}}, opset_version=opset,
            )
    except Exception as error:
        raise ExportError(f"both ONNX exporters failed; {notes[0]}, then the TorchScript exporter failed: "
                          f"{type(error).__name__}: {error}") from None
    return "torchscript", notes


def _attach_metadata(path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "distgan"
    model.producer_version = __version__
    onnx.save(model, str(path))


def check_parity(generator: nn.Module, path: Path, z_dim: int, batch_sizes: tuple[int, ...],
                 atol: float) -> list[ParityResult]:
    """Run onnxruntime (CPU) and PyTorch on the same random latents and compare the outputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(PARITY_SEED)
    results = []
    for batch_size in batch_sizes:
        z = rng.standard_normal((batch_size, z_dim), dtype=np.float32)
        with torch.no_grad():
            expected = generator(torch.from_numpy(z)).float().numpy()
        actual = session.run(None, {"z": z})[0]
        if actual.shape != expected.shape:
            raise ExportError(f"onnxruntime returned shape {list(actual.shape)} at batch {batch_size}, "
                              f"PyTorch {list(expected.shape)}; the batch axis is not dynamic")
        difference = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
        results.append(ParityResult(batch_size, difference, atol))
    return results


def export_generator(generator: nn.Module, record: dict[str, Any], out: str | Path, *, opset: int = DEFAULT_OPSET,
                     atol: float = DEFAULT_ATOL, batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES) -> ExportReport:
    """Export `generator` (eval mode is set here) to `out` and validate it; write generator.json beside it.

    `record` is the generator record that training writes (z_dim, kind,
    sample_shape, ...). Raises ExportError when conversion fails, when the
    checker rejects the graph, or when onnxruntime differs from PyTorch by more
    than `atol` at any of `batch_sizes`. The destination is then left untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    generator = generator.eval().cpu()
    z_dim = int(record["z_dim"])
    metadata = onnx_metadata(record)
    temporary = out.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{out.name}")
    try:
        exporter, notes = _convert(generator, z_dim, metadata["output"], temporary, opset)
        _attach_metadata(temporary, metadata)
        try:
            onnx.checker.check_model(str(temporary), full_check=True)
        except onnx.checker.ValidationError as error:
            raise ExportError(f"onnx.checker rejected the exported graph: {error}") from None
        parity = check_parity(generator, temporary, z_dim, batch_sizes, atol)
        failed = [result for result in parity if not result.passed]
        if failed:
            figures = ", ".join(f"batch {r.batch_size}: {r.max_abs_diff:.3g}" for r in failed)
            raise ExportError(f"onnxruntime and PyTorch disagree beyond the tolerance {atol:g} ({figures}); "
                              f"{out} was not written. Raise --atol only if this difference is acceptable.")
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    sidecar = {**record, "onnx": {"file": out.name, "opset": opset, "exporter": exporter, "metadata": metadata}}
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return ExportReport(out, exporter, opset, out.stat().st_size, parity, metadata, notes)


def export_run(source: str | Path, out: str | Path | None = None, *, raw: bool = False,
               module: nn.Module | None = None, opset: int = DEFAULT_OPSET, atol: float = DEFAULT_ATOL
               ) -> ExportReport:
    """Export the generator of a run directory or checkpoint; `out` defaults to <run>/generator.onnx."""
    started = time.perf_counter()
    generator, record = load_generator(source, raw=raw, module=module)
    if out is None:
        source = Path(source)
        run_dir = source.parent.parent if (source / "trainer.json").is_file() else source
        out = run_dir / "generator.onnx"
    report = export_generator(generator, record, out, opset=opset, atol=atol)
    report.notes.append(f"exported in {time.perf_counter() - started:.1f} s")
    return report
