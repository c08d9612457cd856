"""Evaluation arithmetic on known inputs: mixture metrics, Fréchet distance and KID against scipy, digit metrics."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from distgan.data.mixtures import get_mixture
from distgan.data.mnist import load_mnist
from distgan.data.sources import pixels_to_float
from distgan.evaluation.classifier import load_classifier
from distgan.evaluation.digits import class_histogram_kl, classify, digit_metrics, real_halves
from distgan.evaluation.frechet import features_frechet_distance, frechet_distance, kernel_distance, polynomial_mmd
from distgan.evaluation.mixtures import mixture_metrics


def _mixture_points(name: str, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    mixture = get_mixture(name)
    points, _ = mixture.sample(count, torch.Generator().manual_seed(seed), torch.device("cpu"))
    return points.numpy(), mixture.centers.numpy(), mixture.std


def test_mixture_metrics_of_true_samples():
    points, centers, std = _mixture_points("grid25", 10_000)
    metrics = mixture_metrics(points, centers, std)
    assert metrics.modes_covered == 25
    assert 98.5 < metrics.high_quality_percent < 99.3  # a radius of 3 std in 2D contains 98.9 % of a Gaussian's mass
    assert metrics.reverse_kl < 0.01
    assert sum(metrics.mode_counts) == round(metrics.high_quality_percent * 100)


def test_mixture_metrics_of_collapsed_and_spread_samples():
    _, centers, std = _mixture_points("ring8", 1)
    collapsed = np.repeat(centers[:1], 1000, axis=0)
    metrics = mixture_metrics(collapsed, centers, std)
    assert metrics.modes_covered == 1
    assert metrics.high_quality_percent == 100.0
    assert metrics.reverse_kl == pytest.approx(math.log(8))

    # Half the points on modes 0 and 1, half far from every mode: only the first half is high quality.
    far = np.full((500, 2), 10.0)
    half = np.concatenate([np.repeat(centers[:2], 250, axis=0), far])
    metrics = mixture_metrics(half, centers, std)
    assert metrics.high_quality_percent == 50.0
    assert metrics.mode_counts[:2] == [250, 250]
    assert sum(metrics.mode_counts) == 500
    assert metrics.modes_covered == 2  # 250 >= 1000 / 8 / 5


def test_mixture_coverage_threshold():
    _, centers, std = _mixture_points("ring8", 1)
    # 800 points: 100 expected per mode, so a mode needs 20 high-quality points.
    points = np.concatenate([np.repeat(centers[:1], 780, axis=0), np.repeat(centers[1:2], 19, axis=0),
                             np.repeat(centers[2:3], 1, axis=0)])
    assert mixture_metrics(points, centers, std).modes_covered == 1
    points[-1] = centers[1]
    assert mixture_metrics(points, centers, std).modes_covered == 2


def test_mixture_metrics_non_finite_points():
    _, centers, std = _mixture_points("ring8", 1)
    points = np.concatenate([np.repeat(centers, 10, axis=0), np.full((20, 2), np.nan)])
    assert mixture_metrics(points, centers, std).high_quality_percent == 80.0


def _random_covariance(rng: np.random.Generator, dimension: int) -> np.ndarray:
    factor = rng.standard_normal((dimension, dimension))
    return factor @ factor.T / dimension + 0.1 * np.eye(dimension)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    for dimension in (1, 5, 32):
        mean_a, mean_b = rng.standard_normal(dimension), rng.standard_normal(dimension)
        cov_a, cov_b = _random_covariance(rng, dimension), _random_covariance(rng, dimension)
        root = scipy.linalg.sqrtm(cov_a @ cov_b).real
        expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
        assert frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_frechet_distance_known_values():
    identity = np.eye(3)
    assert frechet_distance(np.zeros(3), identity, np.zeros(3), identity) == pytest.approx(0.0, abs=1e-12)
    # Means 2 apart along one axis, covariances I and 4I: 4 + 3 + 12 - 2 * tr(2I) = 7.
    assert frechet_distance(np.zeros(3), identity, np.array([2.0, 0, 0]), 4 * identity) == pytest.approx(7.0)
    features = np.random.default_rng(1).standard_normal((400, 4))
    assert features_frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)


def test_kernel_distance_matches_direct_sum():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((30, 6)), rng.standard_normal((25, 6)) + 0.5
    dimension = a.shape[1]

    def kernel(x, y):
        return (float(np.dot(x, y)) / dimension + 1.0) ** 3

    within_a = sum(kernel(a[i], a[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    within_b = sum(kernel(b[i], b[j]) for i in range(25) for j in range(25) if i != j) / (25 * 24)
    across = sum(kernel(x, y) for x in a for y in b) / (30 * 25)
    assert polynomial_mmd(a, b) == pytest.approx(within_a + within_b - 2 * across, rel=1e-10)
    # Subsets are drawn reproducibly from the seed. Sets from one distribution are about 0 apart, shifted ones not.
    a, b, shifted = rng.standard_normal((300, 6)), rng.standard_normal((300, 6)), rng.standard_normal((300, 6)) + 0.5
    mean, std = kernel_distance(a, shifted, subsets=10, subset_size=100, seed=3)
    assert (mean, std) == kernel_distance(a, shifted, subsets=10, subset_size=100, seed=3)
    assert mean > 0.1
    assert abs(kernel_distance(a, b, subsets=10, subset_size=100, seed=3)[0]) < 0.02


def test_class_histogram_kl():
    assert class_histogram_kl(np.arange(1000) % 10) == pytest.approx(0.0, abs=1e-12)
    assert class_histogram_kl(np.zeros(50, dtype=np.int64)) == pytest.approx(math.log(10))
    assert class_histogram_kl(np.arange(1000) % 5) == pytest.approx(math.log(2))


def test_classifier_weights_record_accuracy():
    _, metadata = load_classifier()
    record = json.loads(metadata["distgan.classifier"])
    assert record["heldout"] == 1000
    assert record["train"] == 4000
    assert record["heldout_accuracy"] >= 0.97


def test_digit_metrics_of_real_digits_reach_the_floor():
    classifier, _ = load_classifier()
    pixels, labels = load_mnist()
    features, probabilities = classify(classifier, pixels_to_float(torch.from_numpy(pixels)).numpy())
    assert (probabilities.argmax(1) == labels).mean() > 0.98  # training digits included
    half_a, half_b = real_halves(len(pixels))
    assert len(np.intersect1d(half_a, half_b)) == 0
    assert len(half_a) + len(half_b) == len(pixels)

    # Real half A measured as if generated: the distance equals the floor, every class is covered.
    metrics = digit_metrics(features[half_a], probabilities[half_a], features[half_a], features[half_b],
                            labels=labels[half_a])
    assert metrics.classes_covered == 10
    assert metrics.class_kl < 0.01
    assert metrics.frechet_distance == pytest.approx(metrics.frechet_floor)
    assert metrics.label_accuracy > 0.98

    # Only ones: one class covered, a large distance to the real digits.
    ones = np.flatnonzero(labels == 1)
    repeated = np.resize(ones, len(half_a))
    collapsed = digit_metrics(features[repeated], probabilities[repeated], features[half_a], features[half_b])
    assert collapsed.classes_covered == 1
    assert collapsed.class_kl > 2.0
    assert collapsed.frechet_distance > 10 * collapsed.frechet_floor
