"""Validation of an exported file against the PyTorch generator, on onnxruntime's CPU provider.

Every check runs on the file as written. The checks are onnx.checker, no
random ops, the graph's inputs and outputs, PyTorch parity at several batch
sizes (so the batch axis is exercised, not only declared), finite outputs,
and batch independence: sample i of a batch equals the same inputs run alone.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from distgan.errors import ExportError
from distgan.export.convert import ExportModule
from distgan.export.metadata import LABEL_INPUT, Z_INPUT

PARITY_BATCH_SIZES = (1, 3, 8, 64)
PARITY_SEED = 1234  # seed of the random latents and labels compared between PyTorch and onnxruntime
INDEPENDENCE_SAMPLES = 4  # rows of the batch-8 run that are compared with the same inputs run alone
SPEED_REPEATS = 10  # timed runs after two warm-up runs; the median is reported
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
UINT8_SCALE = 127.5  # uint8 levels per unit of the float output range [-1, 1]


@dataclass
class ParityResult:
    """Differences between onnxruntime and PyTorch at one batch size, in output units."""

    batch_size: int
    max_abs_diff: float
    tolerance: float  # accepted max_abs_diff
    mean_abs_diff: float = 0.0
    mean_tolerance: float | None = None  # accepted mean_abs_diff; None checks the maximum only

    @property
    def passed(self) -> bool:
        within_max = bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance
        return within_max and (self.mean_tolerance is None or self.mean_abs_diff <= self.mean_tolerance)


@dataclass
class Speed:
    """Median onnxruntime CPU latency of one batch and the throughput it implies."""

    batch_size: int
    median_ms: float

    @property
    def images_per_second(self) -> float:
        return self.batch_size / (self.median_ms / 1000.0)


class Reference:
    """PyTorch outputs of the exported module for fixed random inputs at each parity batch size."""

    def __init__(self, module: ExportModule, z_dim: int, classes: int,
                 batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES) -> None:
        rng = np.random.default_rng(PARITY_SEED)
        self.classes = classes
        self.feeds: dict[int, dict[str, np.ndarray]] = {}
        self.expected: dict[int, np.ndarray] = {}
        for batch_size in batch_sizes:
            feed = {Z_INPUT: rng.standard_normal((batch_size, z_dim), dtype=np.float32)}
            if classes:
                feed[LABEL_INPUT] = rng.integers(0, classes, batch_size, dtype=np.int64)
            with torch.no_grad():
                inputs = [torch.from_numpy(array) for array in feed.values()]
                self.expected[batch_size] = module(*inputs).numpy()
            self.feeds[batch_size] = feed


def output_tolerance(atol: float, dtype: np.dtype) -> float:
    """Return the accepted difference in the output's units: `atol` for floats, levels for uint8.

    A uint8 output may differ by one level where the float value lies near a
    rounding boundary, on top of the float tolerance scaled to levels.
    """
    return atol if np.issubdtype(dtype, np.floating) else math.floor(atol * UINT8_SCALE) + 1


def cpu_session(path: Path) -> ort.InferenceSession:
    """Open `path` on onnxruntime's CPU provider; raise ExportError when onnxruntime rejects the file."""
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented)
        raise ExportError(f"onnxruntime cannot load the exported graph: {error}") from None


def check_graph(path: Path, input_names: list[str], output_name: str, *, full_check: bool = True) -> None:
    """Run onnx.checker and check the graph's inputs, output and ops; raise ExportError on the first failure."""
    try:
        onnx.checker.check_model(str(path), full_check=full_check)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"onnx.checker rejected the exported graph: {error}") from None
    model = onnx.load(str(path))
    random_nodes = [f"{node.op_type} ({node.name})" for node in model.graph.node if node.op_type in RANDOM_OPS]
    if random_nodes:
        raise ExportError(f"the exported graph draws random numbers ({', '.join(random_nodes)}), so the same z "
                          "gives different images; take all randomness from the inputs")
    names = [entry.name for entry in model.graph.input]
    if names != input_names:
        raise ExportError(f"the exported graph has inputs {names}, expected {input_names}")
    for entry in [*model.graph.input, *model.graph.output]:
        batch_axis = entry.type.tensor_type.shape.dim[0]
        if batch_axis.HasField("dim_value"):
            raise ExportError(f"the batch axis of '{entry.name}' is fixed at {batch_axis.dim_value}; a reshape "
                              "with a constant or int(z.shape[0]) in forward() bakes the batch size into the graph. "
                              "Reshape with -1 or z.shape[0].")
    outputs = [entry.name for entry in model.graph.output]
    if outputs != [output_name]:
        raise ExportError(f"the exported graph has outputs {outputs}, expected ['{output_name}']")


def check_parity(session: ort.InferenceSession, reference: Reference, atol: float,
                 mean_atol: float | None = None) -> list[ParityResult]:
    """Run onnxruntime on the reference inputs and compare with PyTorch at every batch size.

    `atol` bounds the largest difference and `mean_atol`, where given, the
    mean difference (both in float output units, scaled for uint8 outputs).

    Raises ExportError when the output shape differs from PyTorch's (the batch
    axis is not dynamic) or when the output contains NaN or Inf. Differences beyond
    the tolerance are returned as failed results for the caller to report.
    """
    results = []
    for batch_size, feed in reference.feeds.items():
        expected = reference.expected[batch_size]
        try:
            actual = session.run(None, feed)[0]
        except Exception as error:  # onnxruntime raises its own types, for example on a baked reshape
            raise ExportError(f"onnxruntime failed at batch {batch_size}: {str(error).splitlines()[0][:400]}; a "
                              "reshape with a constant or int(z.shape[0]) in forward() bakes the batch size into "
                              "the graph. Reshape with -1 or z.shape[0].") from None
        if actual.shape != expected.shape:
            raise ExportError(f"onnxruntime returned shape {list(actual.shape)} at batch {batch_size}, PyTorch "
                              f"{list(expected.shape)}; the batch axis is not dynamic")
        if actual.dtype != expected.dtype:
            raise ExportError(f"onnxruntime returned {actual.dtype}, PyTorch {expected.dtype}")
        if np.issubdtype(actual.dtype, np.floating) and not np.isfinite(actual).all():
            count = int((~np.isfinite(actual)).sum())
            raise ExportError(f"the output at batch {batch_size} contains {count} NaN or Inf values")
        difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        max_abs_diff = float(difference.max()) if difference.size else 0.0
        mean_abs_diff = float(difference.mean()) if difference.size else 0.0
        mean_tolerance = None if mean_atol is None else output_tolerance(mean_atol, actual.dtype)
        results.append(ParityResult(batch_size, max_abs_diff, output_tolerance(atol, actual.dtype), mean_abs_diff,
                                    mean_tolerance))
    return results


def check_batch_independence(session: ort.InferenceSession, reference: Reference, atol: float) -> float:
    """Compare rows of the batch-8 run with the same inputs run one at a time; return the max difference.

    Raises ExportError when a row differs by more than the tolerance.
    """
    batch_size = max(size for size in reference.feeds if size <= 8)
    feed = reference.feeds[batch_size]
    together = session.run(None, feed)[0]
    tolerance = output_tolerance(atol, together.dtype)
    worst = 0.0
    for row in range(min(INDEPENDENCE_SAMPLES, batch_size)):
        alone = session.run(None, {name: array[row : row + 1] for name, array in feed.items()})[0]
        difference = float(np.abs(alone[0].astype(np.float64) - together[row].astype(np.float64)).max())
        if not difference <= tolerance:
            raise ExportError(f"in onnxruntime, sample {row} of a batch of {batch_size} differs from the same z run "
                              f"alone by {difference:.3g} (tolerance {tolerance:g}): the graph mixes samples of "
                              "the batch")
        worst = max(worst, difference)
    return worst


def measure_speed(session: ort.InferenceSession, reference: Reference, batch_size: int,
                  repeats: int = SPEED_REPEATS) -> Speed:
    """Time `repeats` runs of the reference batch of `batch_size` after two warm-up runs; return the median."""
    feed = reference.feeds[batch_size]
    for _ in range(2):
        session.run(None, feed)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - started) * 1000.0)
    return Speed(batch_size, statistics.median(timings))
