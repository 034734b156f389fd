"""Aggregation: every trial into one tidy table, mean and spread over seeds, the paper's table beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mrfbench.paper import paper_rows
from mrfbench.runs import atomic_write
from mrfbench.sweep import SWEEP_FILE, results_records

TIDY_COLUMNS = ["model", "variant", "config", "seed", "stage", "status", "error", "metric", "value"]
TABLE_METRICS = {  # data set -> (setting, metric) columns of the paper's table (1: PolyMNIST, 2: copula, 4: MNIST-3)
    "copula": [(s, f"wasserstein_{d}") for s in ("unconditional", "conditional") for d in ("dim1", "dim2", "mean")],
    "polymnist": [(s, m) for s in ("unconditional", "conditional") for m in ("fid", "coherence")]
    + [("conditional", "ssim")],
    "mnist3": [(s, m) for s in ("unconditional", "conditional") for m in ("fid", "coherence")],
}
BOUNDS = {  # data set -> (tidy metric, column title) of the noise floors and ceilings printed beside the table
    "copula": [("unconditional/floor_wasserstein_mean", "floor uncond"),
               ("conditional/floor_wasserstein_mean", "floor cond")],
    "polymnist": [("unconditional/floor_fid_suite", "fid_suite floor"),
                  ("conditional/ceiling_coherence", "coherence ceiling")],
}
BOUNDS["mnist3"] = BOUNDS["polymnist"]
NOTES = {
    "copula": "Wasserstein-1 x1000, lower is better; floors are the same metric on exact samples.",
    "polymnist": "Coherence and SSIM higher, FID lower is better. FID marked * is fid_suite: the FID on the "
                 "features of the suite's digit classifiers, not the Inception FID of the paper (whose figure "
                 "stands beside it for reference only; no difference is taken). Floor: the FID between two "
                 "halves of the real test images; ceiling: the classifiers' test accuracy.",
}
NOTES["mnist3"] = NOTES["polymnist"] + " MNIST-3 coherence counts modalities 1 and 2 (the third digit is random)."


def variant_name(params: dict) -> str:
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def tidy(records: list[dict]) -> pd.DataFrame:
    """One row per (trial, metric); a failed trial is one row with its error and metric 'failed'."""
    rows = []
    for r in records:
        base = {"model": r["model"], "variant": variant_name(r["params"]), "config": json.dumps(r["params"], sort_keys=True),
                "seed": r["seed"], "stage": r["stage"], "status": r["status"], "error": r.get("error", "")}
        metrics = r.get("metrics") or {"failed": 1.0}
        rows.extend({**base, "metric": k, "value": v} for k, v in metrics.items())
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count over seeds of each (model, variant, stage, metric) of finished trials."""
    ok = table[table["status"] == "ok"]
    grouped = ok.groupby(["model", "variant", "stage", "metric"])["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def best_variants(summary: pd.DataFrame, stage: str = "final") -> pd.DataFrame:
    """Per model, the variant of ``stage`` with the lowest mean score."""
    scores = summary[(summary["stage"] == stage) & (summary["metric"] == "score")]
    return scores.loc[scores.groupby("model")["mean"].idxmin(), ["model", "variant"]]


def leaderboard(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The paper's table layout: one row per model (best final variant), ours as mean and std over seeds,
    the paper's figure and the difference (ours - paper) beside each column. An image FID column holds the
    Inception ``fid`` when the runs had its weights, else ``fid_suite`` (then no difference is taken)."""
    paper = {(r["model"], r["setting"], r["metric"]): float(r["value"]) for r in paper_rows() if r["dataset"] == dataset}
    rows = []
    for _, best in best_variants(summary).iterrows():
        mine = summary[(summary["model"] == best["model"]) & (summary["variant"] == best["variant"])
                       & (summary["stage"] == "final")].set_index("metric")
        row = {"model": best["model"], "variant": best["variant"], "seeds": int(mine.loc["score", "n"])}
        for setting, metric in TABLE_METRICS[dataset]:
            key, source = f"{setting}/{metric}", f"{setting}/{metric}"
            if metric == "fid" and source not in mine.index:
                source = f"{setting}/fid_suite"
            ours = mine.loc[source] if source in mine.index else None
            theirs = paper.get((best["model"], setting, metric))
            comparable = ours is not None and theirs is not None and source == key
            row[f"{key} mean"] = None if ours is None else ours["mean"]
            row[f"{key} std"] = None if ours is None else ours["std"]
            row[f"{key} source"] = source.split("/")[1]
            row[f"{key} paper"] = theirs
            row[f"{key} diff"] = ours["mean"] - theirs if comparable else None
        for bound, _ in BOUNDS[dataset]:
            row[bound] = mine.loc[bound, "mean"] if bound in mine.index else None
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(board: pd.DataFrame, dataset: str, failures: pd.DataFrame) -> str:
    def cell(row, key):
        mean, std, paper = row[f"{key} mean"], row[f"{key} std"], row[f"{key} paper"]
        ours = "-" if pd.isna(mean) else f"{mean:.3g}" + ("" if pd.isna(std) else f" ± {std:.2g}")
        ours += "*" if row[f"{key} source"] == "fid_suite" else ""
        return ours + ("" if paper is None or pd.isna(paper) else f" ({paper:g})")

    def bound(value):
        return "-" if value is None or pd.isna(value) else f"{value:.3g}"

    keys = [f"{s}/{m}" for s, m in TABLE_METRICS[dataset]]
    titles = [k.replace("unconditional/", "uncond ").replace("conditional/", "cond ").replace("wasserstein_", "")
              for k in keys]
    lines = [f"# {dataset} leaderboard",
             "",
             "Ours: mean ± std over seeds of each model's best variant (lowest mean score); the paper's figure",
             f"in parentheses. {NOTES[dataset]}",
             "",
             "| model | variant | seeds | " + " | ".join(titles + [t for _, t in BOUNDS[dataset]]) + " |",
             "|" + "---|" * (len(keys) + len(BOUNDS[dataset]) + 3)]
    for _, row in board.iterrows():
        lines.append(f"| {row['model']} | {row['variant']} | {row['seeds']} | "
                     + " | ".join([cell(row, k) for k in keys] + [bound(row[b]) for b, _ in BOUNDS[dataset]]) + " |")
    if len(failures):
        lines += ["", "Failed trials:", ""]
        lines += [f"- {r.model} {r.variant} seed {r.seed} ({r.stage}): {r.error}" for r in failures.itertuples()]
    return "\n".join(lines) + "\n"


def write_leaderboard(sweep_dir: Path, results_dir: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Aggregate a sweep directory into results_dir/<dataset>/leaderboard.{md,csv} (written atomically)."""
    from mrfbench.errors import UsageError
    from mrfbench.spaces import load_space

    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / SWEEP_FILE).exists():
        raise UsageError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE})")
    settings = json.loads((sweep_dir / SWEEP_FILE).read_text())
    dataset = load_space(settings["space"]).dataset
    table = tidy(results_records(sweep_dir))
    if table.empty or not (table["status"] == "ok").any():
        raise UsageError(f"no finished trial in {sweep_dir} yet")
    board = leaderboard(aggregate(table), dataset)
    failures = table[table["status"] == "failed"].drop_duplicates(["model", "variant", "seed", "stage"])
    out = Path(results_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "leaderboard.md", out / "leaderboard.csv"
    atomic_write(md, lambda h: h.write(to_markdown(board, dataset, failures).encode()))
    atomic_write(csv, lambda h: h.write(board.to_csv(index=False).encode()))
    atomic_write(sweep_dir / "trials.csv", lambda h: h.write(table.to_csv(index=False).encode()))
    return md, csv, board
