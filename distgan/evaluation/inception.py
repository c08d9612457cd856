"""Inception-v3 features for FID and KID, through torch-fidelity (the `fid` extra), from weights on disk.

torch-fidelity's FeatureExtractorInceptionV3 reproduces the TensorFlow
Inception graph that FID and KID were defined with. It downloads its weights
when none are given; distgan never downloads, so the weights file must be
on disk already, found in this order:

1. the path given as --inception-weights,
2. the path in the DISTGAN_INCEPTION_WEIGHTS environment variable,
3. torch-fidelity's file name in torch's hub cache,
   $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from distgan.errors import EvaluationError

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_NAME}"
WEIGHTS_VARIABLE = "DISTGAN_INCEPTION_WEIGHTS"
FEATURE = "2048"  # the pool3 features that FID and KID use


def hub_weights_path() -> Path:
    """Return where torch's hub cache keeps torch-fidelity's Inception weights."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                        os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints" / WEIGHTS_NAME


def find_weights(explicit: Path | None = None) -> Path:
    """Return the Inception weights file to use; raise EvaluationError saying how to provide it when missing."""
    candidates: list[tuple[str, Path]] = []
    if explicit is not None:
        candidates.append(("--inception-weights", explicit))
    elif os.environ.get(WEIGHTS_VARIABLE):
        candidates.append((WEIGHTS_VARIABLE, Path(os.environ[WEIGHTS_VARIABLE])))
    else:
        candidates.append(("torch's hub cache", hub_weights_path()))
    origin, path = candidates[0]
    if path.is_file():
        return path
    raise EvaluationError(
        f"FID and KID need the Inception-v3 weights of torch-fidelity, but the file from {origin} was not found: "
        f"{path}. distgan does not download them. On a machine with internet access, download {WEIGHTS_URL} "
        f"(about 91 MB) and pass it with --inception-weights PATH, set {WEIGHTS_VARIABLE}=PATH, or put it at "
        f"{hub_weights_path()}. To evaluate without FID and KID, pass --no-fid."
    )


def load_extractor(weights: Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Build the Inception feature extractor; return a function from uint8 images [N, 3, H, W] to features [N, 2048].

    Raises EvaluationError when torch-fidelity cannot be imported or the weights do not load.
    """
    import torch

    try:
        # weights_only: the file comes from the user, so nothing but tensors is unpickled from it.
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError for a bad file
        raise EvaluationError(f"cannot read the Inception weights {weights}: {error}") from None
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as error:  # ImportError, or a torchvision built for another torch failing at import
        raise EvaluationError(
            f"FID and KID need torch-fidelity, which could not be imported ({type(error).__name__}: {error}). "
            "Install it with pip install 'distgan[fid]', with a torchvision built for your torch, "
            "or pass --no-fid."
        ) from None
    # NOTE: torch-fidelity 0.4 loads its weights with torch.load(weights_only=False). It reads a copy that
    # distgan wrote from the tensors loaded safely above, never the user's file itself.
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / WEIGHTS_NAME
        torch.save(state, copy)
        try:
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE],
                                                    feature_extractor_weights_path=str(copy))
        except Exception as error:  # a state dict that does not fit the network
            raise EvaluationError(f"the Inception weights {weights} do not fit torch-fidelity's network: "
                                  f"{error}") from None
    extractor = extractor.to(device).eval()

    def features(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            (output,) = extractor(torch.from_numpy(images).to(device))
        return output.cpu().numpy()

    return features


def to_uint8_rgb(images: np.ndarray) -> np.ndarray:
    """Convert images [N, C, H, W] in [-1, 1] to uint8 [N, 3, H, W], repeating a single channel."""
    pixels = np.rint(np.clip((images.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)).astype(np.uint8)
    return np.repeat(pixels, 3, axis=1) if pixels.shape[1] == 1 else pixels
