"""Export a generator to ONNX and prove that every written file computes what PyTorch computes.

`export_generator()` runs in stages: reject generators that are not a pure
per-sample function of their inputs, convert (the dynamo exporter with the
TorchScript exporter as a fallback), attach metadata, validate, then build
and validate each requested variant. All files are written into a temporary
folder beside the destination and moved into place only after every check
passed: a failed export leaves nothing at the destination and raises
ExportError with the figures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from distgan.errors import ExportError
from distgan.export.convert import DEFAULT_OPSET, EXPORTERS, MIN_OPSET, convert, wrap_generator
from distgan.export.loading import load_generator
from distgan.export.metadata import (
    LABEL_INPUT,
    POSTPROCESS_CHOICES,
    Z_INPUT,
    attach_metadata,
    num_classes,
    onnx_metadata,
    output_name,
    write_sidecar,
)
from distgan.export.preflight import check_generator
from distgan.export.validate import (
    PARITY_BATCH_SIZES,
    ParityResult,
    Reference,
    Speed,
    check_batch_independence,
    check_graph,
    check_parity,
    cpu_session,
    measure_speed,
)
from distgan.export.variants import (
    FP16_ATOL,
    INT8_ATOL,
    INT8_MEAN_ATOL,
    VARIANTS,
    build_fp16,
    build_int8,
    build_optimized,
    check_fp16_range,
    variant_path,
)

DEFAULT_ATOL = 1e-4
TOLERANCE_OPTIONS = {"float32": "--atol", "optimized": "--atol", "fp16": "--fp16-atol", "int8": "--int8-atol"}


@dataclass
class ExportOptions:
    """Choices of one export; the defaults write the float32 file only, at opset DEFAULT_OPSET."""

    opset: int = DEFAULT_OPSET
    atol: float = DEFAULT_ATOL  # accepted |onnxruntime - PyTorch| of the float32 and optimized files
    exporter: str = "auto"  # "auto" (dynamo, then TorchScript), "dynamo" or "torchscript"
    postprocess: str = "none"  # "uint8": the graph ends in uint8 [batch, H, W, C] pixels
    variants: tuple[str, ...] = ()  # any of "optimized", "fp16", "int8"
    fp16_atol: float = FP16_ATOL
    int8_atol: float = INT8_ATOL
    batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES

    def tolerance(self, variant: str) -> float:
        """Return the accepted float difference from PyTorch for the file of `variant`."""
        return {"fp16": self.fp16_atol, "int8": self.int8_atol}.get(variant, self.atol)


@dataclass
class FileReport:
    """Validation figures of one written file: the float32 export or a variant."""

    path: Path
    variant: str  # "float32", "optimized", "fp16" or "int8"
    file_size: int  # bytes
    parity: list[ParityResult]
    batch_independence: float  # max |sample alone - same sample in a batch|, in output units
    speed: Speed
    metadata: dict[str, str]

    @property
    def max_abs_diff(self) -> float:
        return max(result.max_abs_diff for result in self.parity)

    @property
    def mean_abs_diff(self) -> float:
        """Mean |onnxruntime - PyTorch| at the largest parity batch."""
        return self.parity[-1].mean_abs_diff


@dataclass
class ExportReport:
    """Outcome of an export: the float32 file, the exporter used, the validation results and the variants."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    file_size: int
    parity: list[ParityResult] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)  # the float32 file first, then each variant

    @property
    def variants(self) -> list[FileReport]:
        return self.files[1:]


def _check_options(options: ExportOptions, record: dict[str, Any]) -> None:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= options.opset <= newest:
        raise ExportError(f"invalid opset {options.opset}; choose {MIN_OPSET} to {newest} (default {DEFAULT_OPSET})")
    if options.exporter not in ("auto", *EXPORTERS):
        raise ExportError(f"invalid exporter '{options.exporter}'; choose one of auto, {', '.join(EXPORTERS)}")
    if options.postprocess not in POSTPROCESS_CHOICES:
        raise ExportError(f"invalid postprocess '{options.postprocess}'; choose one of "
                          f"{', '.join(POSTPROCESS_CHOICES)}")
    if options.postprocess == "uint8" and (record["kind"] != "image" or len(record["sample_shape"]) != 3):
        raise ExportError(f"postprocess 'uint8' needs an image generator with samples [C, H, W]; this one "
                          f"generates {record['kind']} of shape {record['sample_shape']}")
    unknown = [variant for variant in options.variants if variant not in VARIANTS]
    if unknown:
        raise ExportError(f"unknown variant '{unknown[0]}'; choose from {', '.join(VARIANTS)}")
    for name in ("atol", "fp16_atol", "int8_atol"):
        if not getattr(options, name) > 0:
            raise ExportError(f"{name} must be positive, got {getattr(options, name)}")


def _validate_file(path: Path, variant: str, metadata: dict[str, str], reference: Reference, input_names: list[str],
                   output: str, tolerance: float, mean_tolerance: float | None = None) -> FileReport:
    """Run every check on one file and time it; raise ExportError naming the variant on any failure."""
    try:
        check_graph(path, input_names, output)
        session = cpu_session(path)
        parity = check_parity(session, reference, tolerance, mean_tolerance)
        failed = [result for result in parity if not result.passed]
        if failed:
            figures = ", ".join(f"batch {result.batch_size}: max {result.max_abs_diff:.3g}, mean "
                                f"{result.mean_abs_diff:.3g}" for result in failed)
            bound = f"{failed[0].tolerance:g}"
            if failed[0].mean_tolerance is not None:
                bound += f" (mean {failed[0].mean_tolerance:g})"
            raise ExportError(f"onnxruntime and PyTorch disagree beyond the tolerance {bound} ({figures}). Raise "
                              f"{TOLERANCE_OPTIONS[variant]} only if this difference is acceptable")
        independence = check_batch_independence(session, reference, tolerance)
        speed = measure_speed(session, reference, max(reference.feeds))
    except ExportError as error:
        prefix = "" if variant == "float32" else f"the {variant} variant failed: "
        raise ExportError(f"{prefix}{error}") from None
    return FileReport(path, variant, path.stat().st_size, parity, independence, speed, metadata)


def export_generator(generator: nn.Module, record: dict[str, Any], out: str | Path,
                     options: ExportOptions | None = None) -> ExportReport:
    """Export `generator` (eval mode is set here) to `out`, validate it, and build the requested variants.

    `record` is the generator record that training writes (z_dim, kind,
    sample_shape, value_range, num_classes and class_names for conditional
    generators, ...). A conditional generator (num_classes > 0) is called as
    G(z, labels) with labels int64 [B] and exports with a second input
    `label`. Writes `out`, one file per variant beside it (generator.fp16.onnx,
    ...) and a .json description beside each. Raises ExportError when the
    generator draws its own noise or mixes samples of a batch, when conversion
    fails, when a check rejects a file, or when onnxruntime differs from
    PyTorch beyond the tolerance at any batch size. The destination is then
    left untouched.
    """
    options = options or ExportOptions()
    _check_options(options, record)
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; pass the path of the ONNX file to write, "
                          f"such as {out / 'generator.onnx'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    generator = generator.eval().cpu()
    z_dim, classes = int(record["z_dim"]), num_classes(record)
    check_generator(generator, z_dim, classes, list(record["sample_shape"]))

    module = wrap_generator(generator, classes, options.postprocess, record.get("value_range"))
    reference = Reference(module, z_dim, classes, options.batch_sizes)
    output = output_name(record)
    input_names = [Z_INPUT, LABEL_INPUT] if classes else [Z_INPUT]
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out.parent))
    try:
        staged = staging / out.name
        exporter, notes = convert(module, z_dim, classes, output, staged, options.opset, options.exporter)
        metadata = onnx_metadata(record, options.postprocess)
        attach_metadata(staged, metadata)
        try:
            files = [_validate_file(staged, "float32", metadata, reference, input_names, output, options.atol)]
        except ExportError as error:
            raise ExportError(f"{error}; {out} was not written") from None

        def optimize(destination: Path) -> None:
            rewritten = build_optimized(staged, destination)
            notes.append(f"the optimized variant has {rewritten} ConvTranspose rewrite(s) "
                         "(see distgan.export.rewrite)")

        builders = {
            "optimized": optimize,
            "fp16": lambda destination: build_fp16(staged, destination),
            "int8": lambda destination: build_int8(staged, destination, z_dim, classes),
        }
        for variant in dict.fromkeys(options.variants):
            path = variant_path(staged, variant)
            try:
                if variant == "fp16":
                    check_fp16_range(staged, reference.feeds[max(reference.feeds)])
                builders[variant](path)
                variant_metadata = onnx_metadata(record, options.postprocess, variant)
                attach_metadata(path, variant_metadata)
                mean_tolerance = INT8_MEAN_ATOL if variant == "int8" else None
                files.append(_validate_file(path, variant, variant_metadata, reference, input_names, output,
                                            options.tolerance(variant), mean_tolerance))
            except ExportError as error:
                message = str(error)
                prefix = f"the {variant} variant failed: "
                raise ExportError(f"{'' if message.startswith(prefix) else prefix}{message}; nothing was written "
                                  f"to {out.parent}") from None

        for report in files:
            destination = out.parent / report.path.name
            os.replace(report.path, destination)
            report.path = destination
            write_sidecar(destination, record, report.metadata, exporter, options.opset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    base = files[0]
    return ExportReport(out, exporter, options.opset, base.file_size, base.parity, metadata, notes, files)


def export_run(source: str | Path, out: str | Path | None = None, *, raw: bool = False,
               module: nn.Module | None = None, options: ExportOptions | None = None) -> ExportReport:
    """Export the generator of a run directory or checkpoint; `out` defaults to <run>/generator.onnx.

    `raw` exports the trained G instead of G_ema; `module` supplies a custom
    architecture (see load_generator). Raises CheckpointError or ExportError.
    """
    started = time.perf_counter()
    generator, record = load_generator(source, raw=raw, module=module)
    if out is None:
        source = Path(source)
        run_dir = source.parent.parent if (source / "trainer.json").is_file() else source
        out = run_dir / "generator.onnx"
    report = export_generator(generator, record, out, options)
    report.notes.append(f"exported in {time.perf_counter() - started:.1f} s")
    return report
