"""Metrics of generated MNIST digits through the shipped classifier (distgan.evaluation.classifier).

- Class coverage: a class is covered when at least a fifth of its expected
  share of the samples (N / 10 / 5) is predicted as that class with
  confidence >= CONFIDENCE, the rule of distgan.evaluation.mixtures applied
  to digits.
- Class-histogram KL: KL(p || uniform) in nats, where p is the histogram of
  the predicted classes (argmax) of all samples.
- Fréchet distance between the classifier features of generated and real
  digits. The real digits are split into two disjoint halves A and B by a
  fixed permutation. Generated digits, as many as A holds, are compared with
  B, and A itself with B gives the floor: the distance that samples of the
  true distribution reach at that sample size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distgan.evaluation.classifier import CLASSES, DigitClassifier, to_classifier_input
from distgan.evaluation.frechet import features_frechet_distance
from distgan.evaluation.mixtures import COVERAGE_FRACTION

CONFIDENCE = 0.9
REAL_SPLIT_SEED = 0  # seed of the permutation that splits the real digits into halves A and B


@dataclass
class DigitMetrics:
    """Class coverage, class balance and feature distance of generated digits."""

    classes_covered: int
    classes_total: int
    class_kl: float  # KL(predicted class histogram || uniform), nats
    confident_percent: float  # samples predicted with confidence >= CONFIDENCE
    frechet_distance: float  # generated (first len(A) samples) against real half B
    frechet_floor: float  # real half A against real half B
    class_counts: list[int]  # confident predictions per class
    label_accuracy: float | None = None  # conditional generators: predicted class == requested label

    @property
    def frechet_ratio(self) -> float:
        return self.frechet_distance / self.frechet_floor if self.frechet_floor > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = {
            "classes_covered": self.classes_covered,
            "classes_total": self.classes_total,
            "class_kl": self.class_kl,
            "confident_percent": self.confident_percent,
            "frechet_distance": self.frechet_distance,
            "frechet_floor": self.frechet_floor,
            "frechet_ratio": self.frechet_ratio,
            "class_counts": self.class_counts,
        }
        if self.label_accuracy is not None:
            values["label_accuracy"] = self.label_accuracy
        return values


def real_halves(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the indices of the two disjoint halves A and B of `count` real digits."""
    order = np.random.default_rng(REAL_SPLIT_SEED).permutation(count)
    return np.sort(order[: count // 2]), np.sort(order[count // 2 :])


def classify(classifier: DigitClassifier, images: np.ndarray, batch_size: int = 500,
             device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Return (features [N, FEATURES], class probabilities [N, 10]) of images [N, C, H, W] in [-1, 1]."""
    features, probabilities = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).float().to(device)
            hidden, logits = classifier(to_classifier_input(batch))
            features.append(hidden.cpu().numpy())
            probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros((0, CLASSES), np.float32)
    return np.concatenate(features), np.concatenate(probabilities)


def class_histogram_kl(predictions: np.ndarray, classes: int = CLASSES) -> float:
    """Return KL(histogram of `predictions` || uniform over `classes`) in nats."""
    histogram = np.bincount(predictions, minlength=classes) / max(1, len(predictions))
    present = histogram > 0
    return float(np.sum(histogram[present] * np.log(histogram[present] * classes)))


def digit_metrics(features: np.ndarray, probabilities: np.ndarray, real_a: np.ndarray, real_b: np.ndarray,
                  labels: np.ndarray | None = None) -> DigitMetrics:
    """Measure generated digits from their classifier outputs against the features of real halves A and B.

    `features` [N, F] and `probabilities` [N, 10] describe N >= len(real_a)
    generated digits; `labels` [N] are the classes a conditional generator was asked for.
    """
    predictions = probabilities.argmax(axis=1)
    confident = probabilities.max(axis=1) >= CONFIDENCE
    counts = np.bincount(predictions[confident], minlength=CLASSES)
    threshold = COVERAGE_FRACTION * len(predictions) / CLASSES
    return DigitMetrics(
        classes_covered=int(np.sum(counts >= threshold)),
        classes_total=CLASSES,
        class_kl=class_histogram_kl(predictions),
        confident_percent=100.0 * float(confident.mean()),
        frechet_distance=features_frechet_distance(features[: len(real_a)], real_b),
        frechet_floor=features_frechet_distance(real_a, real_b),
        class_counts=counts.tolist(),
        label_accuracy=None if labels is None else float((predictions == labels).mean()),
    )
