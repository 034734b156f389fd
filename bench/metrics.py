"""Distances between samples and laws, on NumPy arrays: per-coordinate W1, sliced W2, Kendall's tau."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.stats import kendalltau

PARALLEL_MIN = 1 << 16  # elements below which splitting work across threads does not pay


def thread_map(fn: Callable, items: Sequence) -> list:
    """``[fn(item) for item in items]`` on as many threads as torch may use (``--threads``): NumPy's sorts
    and element-wise loops release the GIL, so the columns of a score sort side by side."""
    workers = min(torch.get_num_threads(), len(items))
    if workers < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _chunks(size: int, total: int) -> list[slice]:
    """At most one slice of range(size) per thread (one slice for small work)."""
    parts = min(size, torch.get_num_threads()) if total >= PARALLEL_MIN else 1
    bounds = np.linspace(0, size, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def sort_along(a: np.ndarray, axis: int, copy: bool = True) -> np.ndarray:
    """``np.sort(a, axis)``, split along the longest other axis across threads; ``copy=False`` sorts ``a``
    itself (an array the caller has just made) instead of a copy."""
    out = np.array(a, copy=True) if copy else a
    axis %= out.ndim
    others = [d for d in range(out.ndim) if d != axis]
    if not others:
        out.sort()
        return out
    split = max(others, key=lambda d: out.shape[d])
    views = [out[(slice(None),) * split + (part,)] for part in _chunks(out.shape[split], out.size)]
    thread_map(lambda view: view.sort(axis=axis), views)
    return out


def w1_to_uniform(samples: np.ndarray) -> np.ndarray:
    """Exact W1 between each column's empirical law and Uniform(0, 1), (n, k) -> (k,).

    W1 = int_0^1 |F_n^-1(u) - u| du; F_n^-1 equals the i-th order statistic c on [a, b) = [i/n, (i+1)/n),
    where the integral of |c - u| is (f(c - a) - f(c - b)) / 2 with f(t) = t |t|, so no reference sample
    (and no extra noise) is involved. Columns are sorted in their own precision (exactly) and integrated
    in float64, a few at a time per thread.
    """
    samples = np.asarray(samples)
    n, k = samples.shape
    a = (np.arange(n, dtype=np.float64) / n)[:, None]
    b = a + 1.0 / n

    def columns(part: slice) -> np.ndarray:
        c = np.sort(samples[:, part], axis=0).astype(np.float64)
        below, above = c - a, c - b
        return 0.5 * (below * np.abs(below) - above * np.abs(above)).sum(axis=0)

    return np.concatenate(thread_map(columns, _chunks(k, samples.size)))


def w1_to_reference(reference: np.ndarray, *samples: np.ndarray, axis: int = 0) -> list[np.ndarray]:
    """W1 between matching columns of each sample and ``reference``, all of one size along ``axis`` (the
    order statistics then pair up, so sorts suffice; the reference is sorted once), averaged over ``axis``
    and the axes before it: (n, k) -> (k,) for pooled samples, (G, n, k) -> (k,) for the mean over groups."""
    for sample in samples:
        if sample.shape != reference.shape:
            raise ValueError(f"W1 by order statistics needs equal shapes, got {sample.shape} and {reference.shape}")
    ref, *ordered = (sort_along(x, axis) for x in (reference, *samples))
    over = tuple(range(axis + 1))
    return [np.abs(x - ref).mean(axis=over, dtype=np.float64) for x in ordered]


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
        return sort_along((directions.T @ np.asarray(x, np.float64).T).astype(np.float32), axis=1, copy=False)

    ref = sorted_projections(reference)
    return [float(np.sqrt(((sorted_projections(x) - ref) ** 2).mean(dtype=np.float64))) for x in samples]


def kendall_tau_matrix(x: np.ndarray) -> np.ndarray:
    """Kendall's tau between every pair of columns of x (n, k), (k, k) with ones on the diagonal."""
    k = x.shape[1]
    tau = np.eye(k)
    for i, j in zip(*np.triu_indices(k, 1)):
        tau[i, j] = tau[j, i] = kendalltau(x[:, i], x[:, j]).statistic
    return tau
