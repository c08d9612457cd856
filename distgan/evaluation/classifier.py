"""The MNIST digit classifier that measures generated digits, and its shipped weights.

A small CNN: two 3x3 convolutions with ReLU and 2x2 max pooling, a hidden
layer of FEATURES units whose activations serve as the features of the
Fréchet distance, and 10 logits. `python -m distgan.evaluation.train_classifier`
trains it on the embedded MNIST digits and writes the weights that ship as
package data (float16 safetensors), together with its held-out accuracy.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from distgan.errors import EvaluationError

FEATURES = 128
CLASSES = 10
RESOLUTION = 28
WEIGHTS_FILE = "mnist_classifier.safetensors"


class DigitClassifier(nn.Module):
    """Map digits [B, 1, 28, 28] in [-1, 1] to (features [B, FEATURES], logits [B, 10])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.hidden = nn.Linear(64 * 5 * 5, FEATURES)
        self.head = nn.Linear(FEATURES, CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)  # [B, 32, 13, 13]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [B, 64, 5, 5]
        features = F.relu(self.hidden(x.flatten(1)))
        return features, self.head(features)


def weights_path() -> Path:
    """Return the path of the shipped classifier weights inside the installed package."""
    return Path(str(resources.files("distgan.evaluation") / WEIGHTS_FILE))


def load_classifier(path: Path | None = None) -> tuple[DigitClassifier, dict[str, str]]:
    """Load the classifier in eval mode (float32) and the metadata stored with its weights.

    Raises EvaluationError when the weights file is missing or unreadable.
    """
    path = path or weights_path()
    try:
        state = load_file(path)
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise EvaluationError(f"cannot read the MNIST classifier weights {path}: {error}; rebuild them with "
                              "python -m distgan.evaluation.train_classifier") from None
    classifier = DigitClassifier()
    classifier.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    with safe_open(path, framework="pt") as file:
        metadata = dict(file.metadata() or {})
    return classifier.eval(), metadata


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Convert images [B, C, H, W] in [-1, 1] to the classifier's grayscale [B, 1, 28, 28].

    RGB becomes the mean of its channels; other sizes are resized with area
    averaging (down) or bilinear interpolation (up).
    """
    if images.shape[1] != 1:
        images = images.mean(dim=1, keepdim=True)
    if images.shape[-2:] != (RESOLUTION, RESOLUTION):
        mode = "area" if images.shape[-1] > RESOLUTION else "bilinear"
        images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode=mode)
    return images


def describe(metadata: dict[str, str]) -> str:
    """Return one line about the classifier: its held-out accuracy and training set, from its metadata."""
    info = json.loads(metadata.get("distgan.classifier", "{}"))
    if not info:
        return "MNIST classifier (no training record)"
    return (f"MNIST classifier, held-out accuracy {100 * info['heldout_accuracy']:.2f}% on "
            f"{info['heldout']} digits")
