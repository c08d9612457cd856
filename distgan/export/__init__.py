"""torch -> ONNX export of trained generators, with validation, metadata and optimized variants.

    from distgan.export import export_run, ExportOptions
    report = export_run("runs/mnist", options=ExportOptions(variants=("fp16",)))

Modules: loading (weights and record -> nn.Module), preflight (checks on the
PyTorch module), convert (torch.onnx exporters), metadata (metadata_props and
generator.json), validate (checks on the written file), variants (optimized,
fp16, int8) and pipeline (the stages in order).
"""

from distgan.export.convert import DEFAULT_OPSET, MIN_OPSET
from distgan.export.loading import load_generator
from distgan.export.metadata import onnx_metadata
from distgan.export.pipeline import DEFAULT_ATOL, ExportOptions, ExportReport, FileReport, export_generator, export_run
from distgan.export.validate import PARITY_BATCH_SIZES, ParityResult, Speed
from distgan.export.variants import VARIANTS

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "PARITY_BATCH_SIZES",
    "VARIANTS",
    "ExportOptions",
    "ExportReport",
    "FileReport",
    "ParityResult",
    "Speed",
    "export_generator",
    "export_run",
    "load_generator",
    "onnx_metadata",
]
