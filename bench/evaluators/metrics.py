"""Distances between samples and laws, on NumPy arrays: per-coordinate W1, sliced W2, Kendall's tau."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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


W1_ROWS = 1 << 16  # order statistics integrated at a time: float64 temporaries that stay in cache (and no
# fresh 8-byte copy of a million-row column) make the integral 2x faster warm, 10x on a process's first call


def w1_to_uniform(samples: np.ndarray) -> np.ndarray:
    """Exact W1 between each column's empirical law and Uniform(0, 1), (n, k) -> (k,).

    W1 = int_0^1 |F_n^-1(u) - u| du; F_n^-1 equals the i-th order statistic c on [a, b) = [i/n, (i+1)/n),
    where the integral of |c - u| is (f(c - a) - f(c - b)) / 2 with f(t) = t |t|, so no reference sample
    (and no extra noise) is involved. Each column is sorted in its own precision (exactly) and integrated
    in float64, W1_ROWS at a time, a column per thread.
    """
    samples = np.asarray(samples)
    n, k = samples.shape

    def column(j: int) -> float:
        ordered, total = np.sort(samples[:, j]), 0.0
        for start in range(0, n, W1_ROWS):
            below = ordered[start : start + W1_ROWS].astype(np.float64)
            below -= np.arange(start, start + len(below), dtype=np.float64) / n
            above = below - 1.0 / n
            total += 0.5 * (below * np.abs(below) - above * np.abs(above)).sum()
        return total

    return np.array(thread_map(column, range(k)) if samples.size >= PARALLEL_MIN else [column(j) for j in range(k)])


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


PROJECTION_ROWS = 16  # directions projected at a time: no float64 copy of all the projections


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
        x64, out = np.asarray(x, np.float64).T, np.empty((n_projections, len(x)), np.float32)
        for rows in range(0, n_projections, PROJECTION_ROWS):  # projected in float64, kept in float32
            out[rows : rows + PROJECTION_ROWS] = directions[:, rows : rows + PROJECTION_ROWS].T @ x64
        return sort_along(out, axis=1, copy=False)

    def root_mean_square_gap(x: np.ndarray) -> float:
        gap = sorted_projections(x)
        gap -= ref
        gap *= gap
        return float(np.sqrt(gap.mean(dtype=np.float64)))

    ref = sorted_projections(reference)
    return [root_mean_square_gap(x) for x in samples]


TAU_BLOCK = 32  # run length up to which inversions are counted by comparing every pair


def _tied_pairs(keys: np.ndarray) -> int:
    """Pairs of columns equal in every row of ``keys`` (k, n), whose columns are sorted lexicographically."""
    starts = np.ones(keys.shape[1] + 1, bool)
    starts[1:-1] = (keys[:, 1:] != keys[:, :-1]).any(0)
    counts = np.diff(np.flatnonzero(starts))
    return int((counts * (counts - 1) // 2).sum())


def _inversions(y: np.ndarray) -> np.ndarray:
    """Pairs a < b with y[a] > y[b] in each row of y (P, n): by comparing every pair inside runs of
    TAU_BLOCK, then by a bottom-up merge sort whose merges are stable sorts of two sorted runs (an element
    of the right run that lands at t from position s has passed s - t larger ones of the left run)."""
    p, n = y.shape
    size = max(TAU_BLOCK, 1 << (n - 1).bit_length())
    runs = np.empty((p, size), dtype=y.dtype)
    runs[:, :n] = y
    runs[:, n:] = y.max()  # padding after the data and below none of it: no inversions
    blocks = runs.reshape(-1, TAU_BLOCK)
    later = np.triu(np.ones((TAU_BLOCK, TAU_BLOCK), bool), 1)
    count = ((blocks[:, :, None] > blocks[:, None, :]) & later).reshape(p, -1).sum(1)
    blocks.sort(axis=1)
    width = TAU_BLOCK
    while width < size:
        pairs = runs.reshape(-1, 2 * width)
        order = np.argsort(pairs, axis=1, kind="stable")
        count += np.where(order >= width, order - np.arange(2 * width), 0).reshape(p, -1).sum(1)
        runs = np.take_along_axis(pairs, order, axis=1).reshape(p, size)
        width *= 2
    return count


def kendall_tau_matrix(x: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between every pair of columns of x (n, k), (k, k) with ones on the diagonal: SciPy's
    ``kendalltau`` to the last bit (its tie counts and formula, NaN where a column is constant), without
    importing ``scipy.stats`` (0.6 s of the scoring command's start-up)."""
    n, k = x.shape
    tau = np.eye(k)
    if n < 2:
        tau[~np.eye(k, dtype=bool)] = np.nan
        return tau
    ranks = np.stack([np.unique(x[:, c], return_inverse=True)[1].reshape(-1) for c in range(k)])
    total = n * (n - 1) // 2
    ties = [_tied_pairs(np.sort(r)[None]) for r in ranks]
    pairs = list(zip(*np.triu_indices(k, 1)))
    orders = [np.argsort(ranks[i] * n + ranks[j]) for i, j in pairs]  # by column i, then by column j
    discordant = _inversions(np.stack([ranks[j][order] for (_, j), order in zip(pairs, orders)]))
    for (i, j), order, dis in zip(pairs, orders, discordant):
        if max(ties[i], ties[j]) == total:
            tau[i, j] = tau[j, i] = np.nan
            continue
        both = _tied_pairs(np.stack([ranks[i][order], ranks[j][order]]))
        value = (total - ties[i] - ties[j] + both - 2 * dis) / np.sqrt(total - ties[i]) / np.sqrt(total - ties[j])
        tau[i, j] = tau[j, i] = min(1.0, max(-1.0, value))
    return tau
