"""Distances between two sets of feature vectors: the Fréchet distance and the kernel (KID) distance.

The Fréchet distance (Heusel et al., 2017, the "FID" with Inception
features) fits a Gaussian to each set and returns

    ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).

The kernel distance (Binkowski et al., 2018, the "KID") is the unbiased
estimate of the squared maximum mean discrepancy under the polynomial kernel
k(x, y) = (x . y / d + 1)^3, averaged over random subsets.

numpy only: the matrix square root comes from symmetric eigendecompositions,
so no scipy is needed at run time (the tests compare against scipy).
"""

from __future__ import annotations

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean [d] and the covariance [d, d] (normalized by N - 1) of features [N, d], in float64.

    Raises ValueError for fewer than 2 feature vectors.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"expected features of shape [N, d] with N >= 2, got {list(features.shape)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Return the Fréchet distance between the Gaussians N(mean_a, cov_a) and N(mean_b, cov_b).

    tr((S_a S_b)^(1/2)) equals tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), whose
    argument is symmetric positive semi-definite, so two eigendecompositions
    give it without a general matrix square root.
    """
    root_a = _symmetric_sqrt(np.asarray(cov_a, dtype=np.float64))
    middle = root_a @ np.asarray(cov_b, dtype=np.float64) @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    difference = np.asarray(mean_a, dtype=np.float64) - np.asarray(mean_b, dtype=np.float64)
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def features_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Return the Fréchet distance between the Gaussians fitted to two feature sets [N, d] and [M, d]."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def polynomial_mmd(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Return the unbiased squared MMD between two feature sets [m, d] under k(x, y) = (x . y / d + 1)^3."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    dimension = a.shape[1]
    k_aa = (a @ a.T / dimension + 1.0) ** 3
    k_bb = (b @ b.T / dimension + 1.0) ** 3
    k_ab = (a @ b.T / dimension + 1.0) ** 3
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, subsets: int = KID_SUBSETS,
                    subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """Return the mean and standard deviation of polynomial_mmd over `subsets` random subset pairs.

    Each subset draws min(subset_size, N, M) vectors of each set without
    replacement, from numpy's generator seeded with `seed`. Raises ValueError
    for sets of fewer than 2 vectors.
    """
    size = min(subset_size, len(features_a), len(features_b))
    if size < 2:
        raise ValueError(f"the kernel distance needs at least 2 feature vectors per set, got {size}")
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd(features_a[rng.choice(len(features_a), size, replace=False)],
                             features_b[rng.choice(len(features_b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
