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
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read the model description {sidecar}: {error}") from None
        if not isinstance(record, dict):
            raise InputError(f"{sidecar} is not a distgan model description (expected a JSON object)")
        described = record.get("onnx", {}).get("metadata", record) if isinstance(record.get("onnx"), dict) else record
        # Metadata values are strings in the ONNX file; the record keeps numbers and lists.
        return {key: value if isinstance(value, str) else json.dumps(value) for key, value in described.items()}
    return raw


def _parse_metadata(metadata: dict[str, Any], path: Path) -> dict[str, Any]:
    """Parse and check the fields that sampling needs; raise InputError naming a missing or invalid one."""
    def field(name: str, parse: Any, default: str | None = None) -> Any:
        text = metadata.get(name, default)
        if text is None:
            raise InputError(f"{path}: the metadata lacks '{name}'; export the file with distgan export")
        try:
            return parse(text)
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: the metadata field '{name}' = {text!r} is invalid ({error})") from None

    fields = {
        "z_dim": field("z_dim", int),
        "num_classes": field("num_classes", int, "0"),
        "class_names": field("class_names", json.loads, "[]"),
        "sample_shape": field("sample_shape", lambda text: [int(size) for size in json.loads(text)]),
        "value_range": field("value_range", json.loads, "null"),
    }
    if fields["z_dim"] < 1 or fields["num_classes"] < 0 or not fields["sample_shape"]:
        raise InputError(f"{path}: the metadata has z_dim {fields['z_dim']}, num_classes {fields['num_classes']} "
                         f"and sample_shape {fields['sample_shape']}, which no generator has")
    return fields


def slerp(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """Interpolate spherically from latent `start` to `end` [z_dim] in `steps` points; return float32 [steps, z_dim].

    Standard normal latents concentrate near a sphere, so spherical
    interpolation keeps every point at a typical norm where a straight line
    would pass through low-norm latents the generator rarely saw. Falls back to
    linear interpolation for (nearly) parallel latents.
    """
    if steps < 2:
        raise InputError(f"interpolation needs at least 2 steps, got {steps}")
    start, end = start.astype(np.float64), end.astype(np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    cosine = np.dot(start, end) / (np.linalg.norm(start) * np.linalg.norm(end))
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    if np.sin(angle) < 1e-6:
        path = (1.0 - t) * start + t * end
    else:
        path = (np.sin((1.0 - t) * angle) * start + np.sin(t * angle) * end) / np.sin(angle)
    return path.astype(np.float32)


class OnnxGenerator:
    """An exported generator: validated inputs, seeded sampling and latent interpolation.

    Reads z_dim, num_classes, the output shape and layout from the file's
    metadata (or the .json beside it). Raises InputError for a missing or
    unreadable file, a provider it cannot get, or metadata that contradicts
    the graph.
    """

    def __init__(self, path: str | Path, providers: str = "auto") -> None:
        self.path = Path(path)
        self.session = create_session(self.path, providers)
        metadata = _read_metadata(self.session, self.path)
        self.metadata = metadata
        self.kind = metadata.get("kind", "image")
        fields = _parse_metadata(metadata, self.path)
        self.z_dim = fields["z_dim"]
        self.num_classes = fields["num_classes"]
        self.class_names = fields["class_names"]
        self.sample_shape = fields["sample_shape"]
        self.value_range = fields["value_range"]
        self.layout = metadata.get("layout", "NCHW" if self.kind == "image" else "N2")
        self.dtype = metadata.get("dtype", "float32")
        self.input_names = [entry.name for entry in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self.output_name = self.session.get_outputs()[0].name
        self._check_graph()

    def _check_graph(self) -> None:
        z_input = self.session.get_inputs()[0]
        if z_input.shape[1] != self.z_dim:
            raise InputError(f"{self.path}: the metadata sets z_dim {self.z_dim} but the input '{z_input.name}' has "
                             f"shape {z_input.shape}; the file and its metadata do not belong together")
        output = self.session.get_outputs()[0]
        fixed = [size for size in output.shape[1:]]
        if len(fixed) != len(self.sample_shape) or any(
                isinstance(size, int) and size != expected for size, expected in zip(fixed, self.sample_shape)):
            raise InputError(f"{self.path}: the metadata sets sample_shape {self.sample_shape} but the output "
                             f"'{output.name}' has shape {output.shape}; the file and its metadata do not belong together")
        expected_inputs = 2 if self.num_classes else 1
        if len(self.input_names) != expected_inputs:
            raise InputError(f"{self.path}: the metadata sets num_classes {self.num_classes} but the graph has "
                             f"inputs {self.input_names}; a conditional generator has inputs z and label")

    @property
    def provider(self) -> str:
        """The execution provider that the session really uses."""
        return self.session.get_providers()[0]

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

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
        if not np.isfinite(z).all():
            raise InputError("z contains NaN or Inf values; draw finite latents")
        return z

    def check_labels(self, labels: Any, batch_size: int) -> np.ndarray | None:
        """Return class labels as int64 [batch_size], or None for an unconditional generator.

        `labels` is an integer, broadcast to the whole batch, or a sequence or
        integer array of batch_size values in [0, num_classes). Raises InputError
        for labels given to an unconditional generator, missing labels, a wrong
        shape or dtype, or a value outside the range.
        """
        if not self.conditional:
            if labels is not None:
                raise InputError(f"{self.path.name} is an unconditional generator and takes no labels")
            return None
        if labels is None:
            raise InputError(f"{self.path.name} is a conditional generator: pass labels, integers in "
                             f"[0, {self.num_classes})")
        array = np.asarray(labels)
        if array.dtype.kind not in "iu":
            raise InputError(f"labels must be integers, got {array.dtype}")
        if array.ndim == 0:
            array = np.full(batch_size, int(array))
        if array.shape != (batch_size,):
            raise InputError(f"labels must have shape [{batch_size}] to match z, got {list(array.shape)}")
        outside = array[(array < 0) | (array >= self.num_classes)]
        if outside.size:
            raise InputError(f"label {int(outside[0])} is out of range; this generator has {self.num_classes} "
                             f"classes, labels 0 to {self.num_classes - 1}")
        return array.astype(np.int64)

    def default_labels(self, n: int) -> np.ndarray | None:
        """Return labels that cycle through the classes (0, 1, ..., K-1, 0, ...), or None if unconditional."""
        return np.arange(n, dtype=np.int64) % self.num_classes if self.conditional else None

    def generate(self, z: np.ndarray, labels: Any = None) -> np.ndarray:
        """Run the generator on latents z float32 [batch, z_dim] and, if conditional, labels [batch].

        Returns [batch, *sample_shape] in the file's dtype: float32 in
        value_range, or uint8 NHWC for a file exported with postprocess uint8.
        """
        z = self.check_latents(z)
        feed = {self.input_name: z}
        label_array = self.check_labels(labels, len(z))
        if label_array is not None:
            feed[self.input_names[1]] = label_array
        return self.session.run([self.output_name], feed)[0]

    def sample(self, n: int, seed: int | None = None, labels: Any = None) -> np.ndarray:
        """Generate n samples from latents drawn with `seed` (the same seed gives the same samples).

        A conditional generator takes `labels` (an integer or [n] integers);
        without them it cycles through the classes.
        """
        z = self.latents(n, seed)
        return self.generate(z, self.default_labels(n) if labels is None else labels)

    def interpolate(self, steps: int, seed: int | None = None, labels: Any = None,
                    endpoints: np.ndarray | None = None) -> np.ndarray:
        """Generate `steps` samples along the spherical path between two latents.

        The endpoints are two latents drawn with `seed`, or `endpoints` float32
        [2, z_dim]. A conditional generator keeps one label (default 0) along the
        path. Returns [steps, *sample_shape].
        """
        if endpoints is None:
            endpoints = self.latents(2, seed)
        endpoints = self.check_latents(endpoints)
        if len(endpoints) != 2:
            raise InputError(f"interpolation needs 2 endpoint latents, got {len(endpoints)}")
        z = slerp(endpoints[0], endpoints[1], steps)
        if self.conditional and labels is None:
            labels = 0
        return self.generate(z, labels)
