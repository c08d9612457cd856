"""torch -> ONNX conversion: the dynamo exporter of torch.onnx first, the TorchScript exporter as a fallback.

The generator is wrapped so that the graph has the input names of the
contract (z, and label for conditional generators) and, on request, ends in
the conversion to uint8 pixels in NHWC order.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterator

import onnx
import torch
from torch import nn

from distgan.errors import ExportError
from distgan.export.metadata import LABEL_INPUT, Z_INPUT
from distgan.export.preflight import example_inputs

DEFAULT_OPSET = 18  # the opset the dynamo exporter of torch 2.6 to 2.13 writes natively
MIN_OPSET = 13  # the oldest opset accepted; the tests export at 13 through the TorchScript fallback
EXAMPLE_BATCH = 3  # traced batch size; 0 and 1 would be specialized by torch.export
EXPORTERS = ("dynamo", "torchscript")


def to_uint8_nhwc(images: torch.Tensor) -> torch.Tensor:
    """Map float images [B, C, H, W] in [-1, 1] to uint8 [B, H, W, C], rounding half to even like numpy."""
    pixels = ((images + 1.0) * 127.5).round().clamp(0.0, 255.0)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1)


class ExportModule(nn.Module):
    """The module that is exported: G(z), clipped to its value range, then the optional uint8 NHWC conversion.

    The clip keeps the contract exact: a tanh computed by onnxruntime can land
    a rounding error outside [-1, 1] (-1.0000002 was seen with onnxruntime 1.31).
    """

    def __init__(self, generator: nn.Module, postprocess: str = "none",
                 value_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.generator = generator
        self.postprocess = postprocess
        self.value_range = tuple(value_range) if value_range is not None else None

    def finish(self, samples: torch.Tensor) -> torch.Tensor:
        if samples.dtype != torch.float32:  # checked here, so float32 graphs get no Cast node
            samples = samples.float()
        if self.value_range is not None:
            samples = samples.clamp(self.value_range[0], self.value_range[1])
        return to_uint8_nhwc(samples) if self.postprocess == "uint8" else samples

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.finish(self.generator(z))


class ConditionalExportModule(ExportModule):
    """The exported module of a conditional generator: G(z, label) with label int64 [B]."""

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.finish(self.generator(z, label))


def wrap_generator(generator: nn.Module, classes: int, postprocess: str,
                   value_range: tuple[float, float] | None = None) -> ExportModule:
    """Return the eval-mode module whose forward() has the inputs and output of the ONNX contract."""
    wrapper = ConditionalExportModule if classes else ExportModule
    return wrapper(generator, postprocess, value_range).eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the progress lines and registration warnings that torch.onnx prints."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # torch.export emits deprecation warnings about its own internals (torch 2.13).
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def file_opset(path: Path) -> int:
    """Return the version of the default ONNX domain that the file at `path` imports."""
    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _export_dynamo(module: ExportModule, example: tuple[torch.Tensor, ...], names: list[str], output: str,
                   path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch")
    dynamic_shapes = {name: {0: batch} for name in names}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(module, example, dynamo=True, input_names=names, output_names=[output],
                                    dynamic_shapes=dynamic_shapes, opset_version=opset, verbose=False)
        program.save(str(path))


def _export_torchscript(module: ExportModule, example: tuple[torch.Tensor, ...], names: list[str], output: str,
                        path: Path, opset: int) -> None:
    dynamic_axes = {name: {0: "batch"} for name in [*names, output]}
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(module, example, str(path), dynamo=False, input_names=names, output_names=[output],
                          dynamic_axes=dynamic_axes, opset_version=opset)


def convert(module: ExportModule, z_dim: int, classes: int, output: str, path: Path, opset: int,
            exporter: str = "auto") -> tuple[str, list[str]]:
    """Write the ONNX graph of `module` to `path`; return the exporter that produced it and notes on fallbacks.

    `exporter` "auto" tries the dynamo exporter, then the TorchScript exporter
    when the first raises or writes another opset than `opset` (the dynamo
    exporter converts from its native opset and keeps that one when the
    conversion fails). Raises ExportError when no exporter succeeds.
    """
    example = example_inputs(z_dim, classes, EXAMPLE_BATCH)
    names = [Z_INPUT, LABEL_INPUT][: len(example)]
    attempts = EXPORTERS if exporter == "auto" else (exporter,)
    failures: list[str] = []
    for name in attempts:
        try:
            export = _export_dynamo if name == "dynamo" else _export_torchscript
            export(module, example, names, output, path, opset)
        except Exception as error:  # each exporter raises many types; the next exporter or the report decides
            failures.append(f"the {name} exporter failed ({_first_line(error)})")
            continue
        written = file_opset(path)
        if written != opset:
            failures.append(f"the {name} exporter wrote opset {written} instead of the requested {opset}")
            continue
        notes = [f"{failure}; used the {name} exporter" for failure in failures]
        return name, notes
    raise ExportError(f"no ONNX exporter succeeded at opset {opset}: {'; '.join(failures)}. "
                      f"Try --opset {DEFAULT_OPSET}, or check that forward() uses only traceable torch operations.")
