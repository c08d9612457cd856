"""Derived ONNX files built from a validated float32 export with onnxruntime's own tools.

- optimized: distgan's exact rewrites of transposed convolutions (see
  distgan.export.rewrite), then onnxruntime's offline graph optimization
  (constant folding, redundant node removal, op fusions) at the "extended"
  level, saved to a file. The "all" level adds layout transformations tied to
  the CPU that ran them, and onnxruntime's documentation advises against
  saving those. onnxruntime applies them again when it loads the file.
- fp16: float16 weights and compute, with float32 inputs and outputs so that
  callers feed and read the same arrays as the float32 file.
- int8: static QDQ quantization, int8 weights per output channel and uint8
  activations, calibrated on random latents (and labels).

Each variant is validated by the caller exactly like the float32 file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from distgan.errors import ExportError
from distgan.export.metadata import LABEL_INPUT, Z_INPUT
from distgan.export.rewrite import rewrite_conv_transpose

VARIANTS = ("optimized", "fp16", "int8")
FP16_ATOL = 2e-2  # accepted |fp16 - PyTorch float32| in output units: about 2.5 gray levels of 255
# int8 activations carry 8 bits over their calibrated range, so a few pixels move by up to about 30 of 255
# gray levels (measured on the MNIST DCGAN generator) while the mean moves by under one level. The mean
# bound catches a broken quantization, the max bound a localized one.
INT8_ATOL = 0.5  # accepted max |int8 - PyTorch float32| in output units
INT8_MEAN_ATOL = 0.02  # accepted mean |int8 - PyTorch float32|: 2.5 gray levels of 255
FP16_MAX = 65504.0  # largest finite float16 value
CALIBRATION_SEED = 2024  # seed of the calibration latents, distinct from the parity seed
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_SIZE = 32


def variant_path(base: Path, variant: str) -> Path:
    """Return the file name of a variant beside the float32 file: generator.onnx -> generator.fp16.onnx."""
    return base.with_name(f"{base.stem}.{variant}{base.suffix}")


def build_optimized(source: Path, destination: Path) -> int:
    """Rewrite the transposed convolutions of `source`, then save onnxruntime's "extended" optimization of it.

    Returns the number of ConvTranspose nodes rewritten (see distgan.export.rewrite).
    """
    rewritten_model, rewritten = rewrite_conv_transpose(onnx.load(str(source)))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(destination)
    try:
        ort.InferenceSession(rewritten_model.SerializeToString(), sess_options=options,
                             providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime's graph optimization failed: {error}") from None
    return rewritten


def build_fp16(source: Path, destination: Path) -> None:
    """Convert weights and compute of `source` to float16, keeping float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # The converter appends the input and output casts at the end of the node list; ONNX requires
    # nodes in topological order.
    wrapper = OnnxModel(model)
    wrapper.topological_sort()
    onnx.save(wrapper.model, str(destination))


def check_fp16_range(source: Path, feed: dict[str, np.ndarray]) -> None:
    """Raise ExportError when a float32 tensor of `source` leaves float16's finite range on `feed`.

    onnxruntime's CPU provider runs float16 nodes that it has no float16
    kernel for in float32 (it inserts casts around them), so running the fp16
    file on the CPU can hide an overflow that a GPU would produce. Every
    intermediate float tensor of the float32 graph is therefore checked against
    float16's largest finite value.
    """
    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    float_values = [info for info in model.graph.value_info
                    if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    producers = {output: node for node in model.graph.node for output in node.output}
    del model.graph.output[:]
    model.graph.output.extend(float_values)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for info, value in zip(float_values, session.run(None, feed)):
        largest = float(np.abs(value).max()) if value.size else 0.0
        if not largest <= FP16_MAX:
            node = producers[info.name]
            raise ExportError(f"the intermediate tensor '{info.name}' (output of {node.op_type} node '{node.name}') "
                              f"reaches {largest:.3g}, beyond float16's largest finite value {FP16_MAX:g}: float16 "
                              "compute gives Inf or NaN there. Keep this generator in float32.")


class _RandomCalibration:
    """Calibration batches of standard normal latents (and uniform labels) for onnxruntime's quantizer."""

    def __init__(self, z_dim: int, classes: int) -> None:
        rng = np.random.default_rng(CALIBRATION_SEED)
        batches = []
        for _ in range(CALIBRATION_BATCHES):
            feed = {Z_INPUT: rng.standard_normal((CALIBRATION_BATCH_SIZE, z_dim), dtype=np.float32)}
            if classes:
                feed[LABEL_INPUT] = rng.integers(0, classes, CALIBRATION_BATCH_SIZE, dtype=np.int64)
            batches.append(feed)
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def build_int8(source: Path, destination: Path, z_dim: int, classes: int) -> None:
    """Quantize `source` statically to int8 weights and uint8 activations in QDQ form."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(_RandomCalibration, CalibrationDataReader):
        pass

    # The quantizer logs a suggestion to run its pre-processing script on the root logger; the graph
    # is already shape-inferred and folded by the exporter.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(source), str(destination), Calibration(z_dim, classes), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as error:  # the quantizer raises many types from onnx and onnxruntime
        raise ExportError(f"int8 quantization failed: {type(error).__name__}: {error}") from None
    finally:
        root.setLevel(level)
