"""Distances between samples and laws, on NumPy arrays: per-coordinate W1, sliced W2, Kendall's tau."""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau


def w1_to_uniform(samples: np.ndarray) -> np.ndarray:
    """Exact W1 between each column's empirical law and Uniform(0, 1), (n, k) -> (k,).

    W1 = int_0^1 |F_n^-1(u) - u| du; F_n^-1 equals the i-th order statistic c on [i/n, (i+1)/n), where
    the integral of |c - u| is closed form, so no reference sample (and no extra noise) is involved.
    """
    c = np.sort(np.asarray(samples, dtype=np.float64), axis=0)
    n = c.shape[0]
    a = (np.arange(n, dtype=np.float64) / n)[:, None]
    b = a + 1.0 / n
    mid = 0.5 * (a + b)
    inside = 0.5 * ((c - a) ** 2 + (b - c) ** 2)
    piece = np.where(c <= a, (mid - c) / n, np.where(c >= b, (c - mid) / n, inside))
    return piece.sum(axis=0)


def w1_to_reference(reference: np.ndarray, *samples: np.ndarray, axis: int = 0) -> list[np.ndarray]:
    """W1 between matching columns of each sample and ``reference``, all of one size along ``axis`` (the
    order statistics then pair up, so sorts suffice; the reference is sorted once), averaged over ``axis``
    and the axes before it: (n, k) -> (k,) for pooled samples, (G, n, k) -> (k,) for the mean over groups."""
    ref = np.sort(reference, axis=axis)
    over = tuple(range(axis + 1))
    out = []
    for sample in samples:
        if sample.shape != reference.shape:
            raise ValueError(f"W1 by order statistics needs equal shapes, got {sample.shape} and {reference.shape}")
        out.append(np.abs(np.sort(sample, axis=axis) - ref).mean(axis=over, dtype=np.float64))
    return out


def random_directions(dim: int, n_projections: int, seed: int) -> np.ndarray:
    """n_projections directions uniform on the unit sphere of R^dim, as columns (dim, n_projections)."""
    v = np.random.default_rng(seed).standard_normal((dim, n_projections))
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def sliced_wasserstein(reference: np.ndarray, *samples: np.ndarray, n_projections: int, seed: int) -> list[float]:
    """Sliced 2-Wasserstein distance of each joint sample to ``reference``, all (n, D) of one size: sensitive
    to dependence.

    Same value as POT's ``ot.sliced_wasserstein_distance`` for the same directions (up to the float32 in
    which the projections are sorted, 1e-7): for equal sizes the 1-D optimal plan pairs order statistics, so
    a sort per direction suffices, and the reference's projections are sorted once.
    """
    directions = random_directions(reference.shape[1], n_projections, seed)

    def sorted_projections(x: np.ndarray) -> np.ndarray:  # (n_projections, n), rows contiguous to sort
        if x.shape != reference.shape:
            raise ValueError(f"sliced_wasserstein needs samples of equal size, got {x.shape} and {reference.shape}")
        return np.sort((directions.T @ np.asarray(x, np.float64).T).astype(np.float32), axis=1)

    ref = sorted_projections(reference)
    return [float(np.sqrt(((sorted_projections(x) - ref) ** 2).mean(dtype=np.float64))) for x in samples]


def kendall_tau_matrix(x: np.ndarray) -> np.ndarray:
    """Kendall's tau between every pair of columns of x (n, k), (k, k) with ones on the diagonal."""
    k = x.shape[1]
    tau = np.eye(k)
    for i, j in zip(*np.triu_indices(k, 1)):
        tau[i, j] = tau[j, i] = kendalltau(x[:, i], x[:, j]).statistic
    return tau
