"""Distances between samples and laws, on NumPy arrays: per-coordinate W1, sliced W2, Kendall's tau."""

from __future__ import annotations

import numpy as np
import ot
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


def w1_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """W1 between the empirical laws of matching columns of a (n, k) and b (m, k), via POT, (k,)."""
    return np.atleast_1d(ot.wasserstein_1d(np.asarray(a, np.float64), np.asarray(b, np.float64), p=1))


def w1_per_group(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over groups of the W1 between matching columns of a and b, both (G, n, k) with equal n (order
    statistics pair up, so a sort suffices), (k,)."""
    return np.abs(np.sort(a, axis=1) - np.sort(b, axis=1)).mean(axis=1).mean(axis=0)


def random_directions(dim: int, n_projections: int, seed: int) -> np.ndarray:
    """n_projections directions uniform on the unit sphere of R^dim, as columns (dim, n_projections)."""
    v = np.random.default_rng(seed).standard_normal((dim, n_projections))
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int, seed: int) -> float:
    """Sliced 2-Wasserstein distance between two joint samples of equal size (n, D), sensitive to dependence.

    Same value as POT's ``ot.sliced_wasserstein_distance`` for the same directions; for equal sizes the
    1-D optimal plan pairs order statistics, so a sort per direction suffices (much faster at n = 1e5).
    """
    if len(a) != len(b):
        raise ValueError("sliced_wasserstein needs samples of equal size")
    directions = random_directions(a.shape[1], n_projections, seed)
    pa = np.sort(np.asarray(a, np.float64) @ directions, axis=0)
    pb = np.sort(np.asarray(b, np.float64) @ directions, axis=0)
    return float(np.sqrt(((pa - pb) ** 2).mean()))


def kendall_tau_matrix(x: np.ndarray) -> np.ndarray:
    """Kendall's tau between every pair of columns of x (n, k), (k, k) with ones on the diagonal."""
    k = x.shape[1]
    tau = np.eye(k)
    for i, j in zip(*np.triu_indices(k, 1)):
        tau[i, j] = tau[j, i] = kendalltau(x[:, i], x[:, j]).statistic
    return tau
