"""Run an exported generator with onnxruntime alone: no torch import, anywhere in this module.

    from distgan.runtime import OnnxGenerator
    generator = OnnxGenerator("generator.onnx", providers="auto")
    images = generator.sample(16, seed=0)  # float32 [16, C, H, W] in [-1, 1]

Everything the caller needs (z_dim, sample shape, value range) comes from the
file's metadata, or from the generator.json beside it for files that lack it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from distgan.errors import InputError

PROVIDER_CHOICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_DEFAULT_LOG_SEVERITY = 2  # warnings and above, onnxruntime's own default


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def create_session(path: str | Path, providers: str = "auto") -> ort.InferenceSession:
    """Open an onnxruntime session on the requested execution provider.

    "cpu" uses the CPU. "cuda" requires that the session really runs on CUDA
    and raises InputError when onnxruntime falls back to the CPU (a missing
    CUDA or cuDNN library, or no GPU). "auto" takes CUDA where the session gets
    it and the CPU otherwise. The check reads the providers the session
    reports, not the list of providers installed.
    """
    if providers not in PROVIDER_CHOICES:
        raise InputError(f"invalid providers '{providers}'; choose one of {', '.join(PROVIDER_CHOICES)}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {path}")
    wants_cuda = providers in ("auto", "cuda") and CUDA in ort.get_available_providers()
    if providers == "cuda" and not wants_cuda:
        raise InputError(
            f"providers='cuda' requested, but this onnxruntime build has no CUDA provider "
            f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use 'cpu'"
        )
    requested = [CUDA, CPU] if wants_cuda else [CPU]
    if providers == "auto" and wants_cuda:
        # A CPU-only machine with onnxruntime-gpu fails to load the CUDA libraries; in auto mode
        # that is expected, so hide onnxruntime's error lines while trying.
        ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(path), sess_options=_session_options(), providers=requested)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable models
        raise InputError(f"onnxruntime cannot load {path}: {error}") from None
    finally:
        if providers == "auto" and wants_cuda:
            ort.set_default_logger_severity(ORT_DEFAULT_LOG_SEVERITY)
    if providers == "cuda" and session.get_providers()[0] != CUDA:
        raise InputError(
            f"providers='cuda' requested, but the session runs on {session.get_providers()[0]}: onnxruntime could "
            "not initialize CUDA (see its log above for the missing library). Fix the CUDA and cuDNN install, "
            "or use providers='cpu'."
        )
    return session


def _read_metadata(session: ort.InferenceSession, path: Path) -> dict[str, Any]:
    raw = dict(session.get_modelmeta().custom_metadata_map)
    if "z_dim" not in raw:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise InputError(f"{path} carries no distgan metadata and {sidecar} is missing; "
                             "export the file with distgan export")
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        return record["onnx"]["metadata"] if "onnx" in record else record
    return raw


class OnnxGenerator:
    """An exported generator: validated inputs, seeded sampling and latent interpolation."""

    def __init__(self, path: str | Path, providers: str = "auto") -> None:
        self.path = Path(path)
        self.session = create_session(self.path, providers)
        metadata = _read_metadata(self.session, self.path)
        self.metadata = metadata
        self.kind = metadata.get("kind", "image")
        self.z_dim = int(metadata["z_dim"])
        self.sample_shape = [int(size) for size in json.loads(metadata["sample_shape"])]
        self.value_range = json.loads(metadata.get("value_range", "null"))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def provider(self) -> str:
        """The execution provider that the session really uses."""
        return self.session.get_providers()[0]

    def latents(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draw standard normal latents float32 [n, z_dim] from numpy's default generator."""
        if n < 1:
            raise InputError(f"the number of samples must be at least 1, got {n}")
        return np.random.default_rng(seed).standard_normal((n, self.z_dim), dtype=np.float32)

    def check_latents(self, z: Any) -> np.ndarray:
        """Return `z` if it is a float32 array [batch, z_dim] with batch >= 1; raise InputError otherwise."""
        if not isinstance(z, np.ndarray):
            raise InputError(f"z must be a numpy array, got {type(z).__name__}")
        if z.dtype != np.float32:
            raise InputError(f"z must be float32, got {z.dtype}; convert it with z.astype(np.float32)")
        if z.ndim != 2 or z.shape[1] != self.z_dim or z.shape[0] < 1:
            raise InputError(f"z must have shape [batch, {self.z_dim}] with batch >= 1, got {list(z.shape)}")
        return z

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Run the generator on latents z float32 [batch, z_dim]; return float32 [batch, *sample_shape]."""
        z = self.check_latents(z)
        return self.session.run([self.output_name], {self.input_name: z})[0]

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Generate n samples from latents drawn with `seed` (the same seed gives the same samples)."""
        return self.generate(self.latents(n, seed))
