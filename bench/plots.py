"""Figures people would rather look at than read: copula pair plots in the style of the paper's Figure 3."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def copula_pair_plot(true: np.ndarray, generated: np.ndarray, path: Path, n_points: int = 3000, title: str = "") -> None:
    """Scatter of every pair of modalities, one row per coordinate: true (orange) under generated (blue)."""
    n_mod, n_feat = true.shape[1], true.shape[2]
    pairs = list(combinations(range(n_mod), 2))
    fig, axes = plt.subplots(n_feat, len(pairs), figsize=(2.2 * len(pairs), 2.3 * n_feat), squeeze=False)
    t, g = true[:n_points], generated[:n_points]
    for j in range(n_feat):
        for col, (a, b) in enumerate(pairs):
            ax = axes[j, col]
            ax.scatter(t[:, a, j], t[:, b, j], s=1, alpha=0.4, color="tab:orange", label="true", rasterized=True)
            ax.scatter(g[:, a, j], g[:, b, j], s=1, alpha=0.4, color="tab:blue", label="generated", rasterized=True)
            ax.set_xlim(-0.1, 1.1)
            ax.set_ylim(-0.1, 1.1)
            ax.set_xticks([0, 0.5, 1])
            ax.set_yticks([0, 0.5, 1])
            ax.tick_params(labelsize=7)
            ax.set_title(f"$X_{a + 1}^{j + 1}$ vs $X_{b + 1}^{j + 1}$", fontsize=9)
    axes[0, 0].legend(loc="lower left", fontsize=7, markerscale=5)
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins (in inches, so they hold for any number of panels): tight_layout would measure every
    # label first, a third of the plot's time
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.35 / width, right=1 - 0.1 / width, bottom=0.3 / height, top=1 - 0.75 / height,
                        wspace=0.3, hspace=0.45)
    _save(fig, path)


@dataclass
class Panel:
    """One figure of a leaderboard chart: per model its mean, interval half-width and seeds, the paper's
    figure (None: none) and the noise floor (None: none)."""

    title: str
    means: list[float]
    errors: list[float | None]
    seeds: list[list[float]]
    paper: list[float | None]
    floor: float | None = None


def leaderboard_chart(models: list[str], panels: list[Panel], title: str, path: Path) -> None:
    """Per model, each panel's mean as a bar with its 95% interval (never drawn below zero for a positive
    figure, nor below half the smallest value on a log axis), every seed as a point over it, the paper's
    figure as a black mark and the noise floor as a
    dashed line; a log axis where the values span more than a decade."""
    width = max(3.2, 1.0 + 0.6 * len(models))
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.6), squeeze=False)
    x = np.arange(len(models))
    for ax, panel in zip(axes[0], panels):
        means = np.array(panel.means, dtype=float)
        errors = np.array([np.nan if e is None else e for e in panel.errors], dtype=float)
        values = [v for v in [*means, *(s for seed in panel.seeds for s in seed), *(p for p in panel.paper if p),
                              panel.floor or np.nan] if np.isfinite(v)]
        positive = bool(values) and min(values) > 0
        log = positive and max(values) / min(values) > 10
        below = np.minimum(np.nan_to_num(errors), means - (min(values) / 2 if log else 0)) if positive else np.nan_to_num(errors)
        ax.bar(x, means, yerr=[below, np.nan_to_num(errors)], color="tab:blue", alpha=0.6, capsize=3,
               label="ours: mean, 95% interval over seeds")
        for i, seeds in enumerate(panel.seeds):
            ax.scatter(np.full(len(seeds), x[i]), seeds, s=12, color="tab:blue", edgecolor="black", linewidth=0.5,
                       zorder=3, label="a seed" if i == 0 else None)
        if any(p is not None for p in panel.paper):
            paper = np.array([np.nan if p is None else p for p in panel.paper], dtype=float)
            ax.scatter(x, paper, marker="_", s=400, color="black", zorder=4, label="paper")
        if panel.floor is not None and np.isfinite(panel.floor):
            ax.axhline(panel.floor, color="grey", linestyle="--", linewidth=1, label="noise floor")
        if log:
            ax.set_yscale("log")
        ax.set_xticks(x, models, rotation=45, fontsize=8)
        ax.set_title(panel.title, fontsize=9)
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    _save(fig, path)


def image_grid(inputs: np.ndarray, generated: np.ndarray, path: Path) -> None:
    """The paper's Figure 2 layout as a PNG: a row of inputs (k, C, 28, 28) of the observed modality, then
    one row per other modality of its conditional generations (rows, k, C, 28, 28); uint8 images."""
    from PIL import Image

    def row(images):
        return np.concatenate([np.pad(im, ((0, 0), (1, 1), (1, 1)), constant_values=255) for im in images], 2)

    rows = [row(inputs), np.full((inputs.shape[1], 4, row(inputs).shape[2]), 255, np.uint8)] + [row(g) for g in generated]
    grid = np.concatenate(rows, 1)
    if grid.shape[0] == 1:
        grid = np.repeat(grid, 3, 0)
    Image.fromarray(grid.transpose(1, 2, 0)).resize((grid.shape[2] * 3, grid.shape[1] * 3), Image.NEAREST).save(path)


def learning_curve_plot(series: dict[str, list[dict]], path: Path) -> None:
    """One panel per figure (the keys of the rows but 'epoch'), its value against the epoch, four to a row: a
    line per series of rows (one run's, or several runs' with a legend of their names)."""
    keys = list(dict.fromkeys(k for rows in series.values() for r in rows for k in r if k != "epoch"))
    columns = min(4, len(keys))
    lines = -(-len(keys) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, rows in series.items():
            ax.plot([r["epoch"] for r in rows], [r.get(key, np.nan) for r in rows], marker="o", markersize=3,
                    label=name)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    if len(series) > 1:
        axes.flat[0].legend(fontsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` whole (a reader never sees half a PNG) and free it."""
    from mrfbench.runs import atomic_write

    try:
        atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    finally:
        plt.close(fig)
