"""Generators to evaluate: a trained run (PyTorch) or an exported ONNX file (onnxruntime).

Both give numpy arrays for the same numpy latents, so a run and its export
can be evaluated on the same samples and their metrics compared directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distgan.errors import EvaluationError


@dataclass
class GeneratorInfo:
    """The facts about a generator that evaluation uses, from its record or ONNX metadata."""

    kind: str  # "image" or "points"
    data: str  # the data set it was trained on: mnist, ring8, grid25 or a folder name
    z_dim: int
    sample_shape: list[int]
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    step: int = 0
    weights: str = ""  # G_ema, G or the ONNX file name
    data_path: str | None = None  # the training data as config.toml names it, where known


class Sampler(Protocol):
    info: GeneratorInfo

    def generate(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray: ...


def _read_data_path(run_dir: Path) -> str | None:
    config = run_dir / "config.toml"
    if not config.is_file():
        return None
    from distgan.config import load_toml

    return str(load_toml(config).get("data") or "") or None


class TorchSampler:
    """The generator of a run directory, its generator/ folder or a checkpoint, run by PyTorch.

    `raw` picks the trained G of the latest checkpoint instead of G_ema.
    """

    def __init__(self, source: Path, raw: bool = False, device: str = "cpu") -> None:
        import torch

        from distgan.checkpoint import read_json
        from distgan.export import load_generator

        self.torch = torch
        self.device = torch.device(device)
        self.module, record = load_generator(source, raw=raw)
        self.module.to(self.device)
        run_dir = source.parent.parent if (source / "trainer.json").is_file() else source
        if run_dir.name == "generator":
            run_dir = run_dir.parent
        weights = str(record.get("weights", ""))
        if weights == "generator":  # the run's generator/ folder, whose record names the model it contains
            weights = str(read_json(run_dir / "generator" / "generator.json").get("weights", "G_ema"))
        self.info = GeneratorInfo(
            kind=record["kind"], data=str(record.get("data", "")), z_dim=int(record["z_dim"]),
            sample_shape=list(record["sample_shape"]), num_classes=int(record.get("num_classes", 0)),
            class_names=list(record.get("class_names", [])), step=int(record.get("step", 0)),
            weights=weights, data_path=_read_data_path(run_dir),
        )
        self.output_dir = run_dir

    def generate(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            inputs = [torch.from_numpy(z).to(self.device)]
            if labels is not None:
                inputs.append(torch.from_numpy(labels).to(self.device))
            return self.module(*inputs).float().cpu().numpy()


class OnnxSampler:
    """An exported generator run by onnxruntime, without torch."""

    def __init__(self, path: Path, providers: str = "auto") -> None:
        from distgan.runtime import OnnxGenerator

        self.generator = OnnxGenerator(path, providers=providers)
        metadata: dict[str, Any] = self.generator.metadata
        self.input_names = [entry.name for entry in self.generator.session.get_inputs()]
        self.output_name = self.generator.session.get_outputs()[0].name
        self.info = GeneratorInfo(
            kind=str(metadata.get("kind", "image")), data=str(metadata.get("data", "")),
            z_dim=int(metadata["z_dim"]), sample_shape=[int(size) for size in json.loads(metadata["sample_shape"])],
            num_classes=int(metadata.get("num_classes", 0)),
            class_names=list(json.loads(metadata.get("class_names", "[]"))), step=int(metadata.get("step", 0)),
            weights=path.name,
        )
        if self.info.num_classes and "label" not in self.input_names:
            raise EvaluationError(f"{path} records {self.info.num_classes} classes but has no 'label' input "
                                  f"(inputs: {', '.join(self.input_names)}); export it again")
        self.output_dir = path.parent

    def generate(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        feed: dict[str, np.ndarray] = {"z": z}
        if labels is not None:
            feed["label"] = labels
        return self.generator.session.run([self.output_name], feed)[0]


def open_sampler(source: Path, raw: bool = False, providers: str = "auto") -> TorchSampler | OnnxSampler:
    """Open a run directory, generator/ folder, checkpoint or .onnx file for evaluation.

    Raises EvaluationError for a missing source or --no-ema on an ONNX file,
    and CheckpointError or InputError for an unreadable one.
    """
    if not source.exists():
        raise EvaluationError(f"not found: {source}; pass a run directory or an ONNX file written by distgan export")
    if source.is_file():
        if source.suffix != ".onnx":
            raise EvaluationError(f"{source} is neither a run directory nor an .onnx file")
        if raw:
            raise EvaluationError("--no-ema applies to run directories; an ONNX file contains one generator already")
        return OnnxSampler(source, providers)
    return TorchSampler(source, raw)


def latents(count: int, z_dim: int, seed: int) -> np.ndarray:
    """Draw standard normal latents float32 [count, z_dim] from numpy's generator seeded with `seed`."""
    return np.random.default_rng(seed).standard_normal((count, z_dim), dtype=np.float32)


def balanced_labels(count: int, num_classes: int) -> np.ndarray | None:
    """Return labels 0, 1, ..., K-1, 0, 1, ... int64 [count] for a conditional generator, None otherwise."""
    return (np.arange(count) % num_classes).astype(np.int64) if num_classes else None


def generate(sampler: Sampler, rows: range, z: np.ndarray, labels: np.ndarray | None,
             batch_size: int) -> np.ndarray:
    """Generate the samples of `rows` of the latents z [N, z_dim] (and labels [N]) in batches."""
    parts = []
    for start in range(rows.start, rows.stop, batch_size):
        stop = min(start + batch_size, rows.stop)
        parts.append(sampler.generate(z[start:stop], None if labels is None else labels[start:stop]))
    if not parts:
        return np.zeros((0, *sampler.info.sample_shape), dtype=np.float32)
    return np.concatenate(parts)
