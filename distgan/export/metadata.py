"""The description of an exported generator: ONNX metadata_props and the generator.json beside the file.

Applications read everything they need from these keys, so the names and
meanings are a contract. The keys are z_dim, num_classes, class_names,
sample_shape (one output sample, in the order `layout` names), value_range,
layout, dtype (of the output), postprocess, variant, the distgan version and
the training step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx

from distgan import __version__

Z_INPUT = "z"
LABEL_INPUT = "label"
POSTPROCESS_CHOICES = ("none", "uint8")
UINT8_RANGE = [0, 255]


def num_classes(record: dict[str, Any]) -> int:
    """Return the number of classes of a conditional generator's record, 0 for an unconditional one."""
    return int(record.get("num_classes") or 0)


def output_name(record: dict[str, Any]) -> str:
    return "image" if record["kind"] == "image" else "points"


def onnx_metadata(record: dict[str, Any], postprocess: str = "none", variant: str = "float32") -> dict[str, str]:
    """Return the metadata_props that describe the model to an application reading the ONNX file.

    `postprocess` "uint8" describes a graph whose output is uint8 [batch, H, W, C]
    in [0, 255]; "none" the float32 output that training produces.
    """
    image = record["kind"] == "image"
    classes = num_classes(record)
    sample_shape = list(record["sample_shape"])
    value_range = record.get("value_range")
    layout = record.get("layout", "NCHW" if image else "N2")
    dtype = "float32"
    if postprocess == "uint8":
        channels, height, width = sample_shape
        sample_shape, value_range, layout, dtype = [height, width, channels], UINT8_RANGE, "NHWC", "uint8"
    inputs = [Z_INPUT, LABEL_INPUT] if classes else [Z_INPUT]
    return {
        "distgan_version": __version__,
        "kind": record["kind"],
        "input": Z_INPUT,
        "inputs": json.dumps(inputs),
        "output": output_name(record),
        "z_dim": str(record["z_dim"]),
        "num_classes": str(classes),
        "class_names": json.dumps(list(record.get("class_names") or [])),
        "sample_shape": json.dumps(sample_shape),
        "value_range": json.dumps(value_range),
        "layout": layout,
        "dtype": dtype,
        "postprocess": postprocess,
        "variant": variant,
        "step": str(record.get("step", 0)),
        "weights": record.get("weights", ""),
        "data": str(record.get("data", "")),
    }


def attach_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the metadata_props of the ONNX file at `path` with `metadata`."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "distgan"
    model.producer_version = __version__
    onnx.save(model, str(path))


def sidecar_path(onnx_path: Path) -> Path:
    """Return the generator.json path beside an ONNX file: the same name with the suffix .json."""
    return onnx_path.with_suffix(".json")


def write_sidecar(onnx_path: Path, record: dict[str, Any], metadata: dict[str, str], exporter: str,
                  opset: int) -> Path:
    """Write the JSON description beside `onnx_path` for runtimes whose API cannot read ONNX metadata.

    The file contains the training record plus an "onnx" object with the file
    name, opset, exporter and the same metadata strings as the ONNX file.
    """
    sidecar = {**record, "onnx": {"file": onnx_path.name, "opset": opset, "exporter": exporter,
                                  "metadata": metadata}}
    path = sidecar_path(onnx_path)
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)  # a reader sees the old description or the new one, never half of one
    return path
