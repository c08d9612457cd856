"""Mode collapse metrics on 2D Gaussian mixtures, following VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et al., 2018).

Every generated point is registered to its nearest mode centre. A point is
high quality when it lies within 3 standard deviations of that centre. A mode
is covered when at least a fifth of its expected share of the points are
high-quality points registered to it: PacGAN's rule of 20 out of 2,500 points
on 25 modes, scaled to any number of points. The reverse KL divergence
compares the histogram of all points over the modes with the uniform weights
of the true mixture.

This module imports numpy only, so it serves the torch-free runtime too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUALITY_STDS = 3.0  # a point within this many standard deviations of its mode is high quality
COVERAGE_FRACTION = 0.2  # a mode is covered with at least this fraction of its expected share of points


@dataclass
class MixtureMetrics:
    """Mode coverage and sample quality of generated points against a mixture with equal mode weights."""

    modes_covered: int
    modes_total: int
    high_quality_percent: float  # percentage of all points within QUALITY_STDS stds of their mode
    reverse_kl: float  # KL(generated mode histogram || uniform), in nats
    points: int
    mode_counts: list[int]  # high-quality points registered to each mode

    def to_dict(self) -> dict[str, object]:
        return {
            "modes_covered": self.modes_covered,
            "modes_total": self.modes_total,
            "high_quality_percent": self.high_quality_percent,
            "reverse_kl": self.reverse_kl,
            "points": self.points,
            "mode_counts": self.mode_counts,
        }


def nearest_modes(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (index of the nearest centre [N], distance to it [N]) for points [N, 2] and centres [K, 2]."""
    distances = np.linalg.norm(points[:, None, :].astype(np.float64) - centers[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(points)), nearest]


def mixture_metrics(points: np.ndarray, centers: np.ndarray, std: float) -> MixtureMetrics:
    """Measure generated points [N, 2] against mixture centres [K, 2] with standard deviation `std`.

    Points that are not finite count as low quality and register to no mode.
    Raises ValueError for an empty or misshapen input.
    """
    points = np.asarray(points, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"expected points of shape [N, 2] with N >= 1, got {list(points.shape)}")
    modes = len(centers)
    finite = np.isfinite(points).all(axis=1)
    nearest, distance = nearest_modes(points[finite], centers)
    good = distance <= QUALITY_STDS * std
    counts = np.bincount(nearest[good], minlength=modes)
    threshold = COVERAGE_FRACTION * len(points) / modes

    histogram = np.bincount(nearest, minlength=modes) / max(1, len(nearest))
    present = histogram > 0
    reverse_kl = float(np.sum(histogram[present] * np.log(histogram[present] * modes))) if present.any() else float("inf")
    return MixtureMetrics(
        modes_covered=int(np.sum(counts >= threshold)),
        modes_total=modes,
        high_quality_percent=100.0 * float(good.sum()) / len(points),
        reverse_kl=reverse_kl,
        points=len(points),
        mode_counts=counts.tolist(),
    )
