"""Aggregation: every trial into one tidy table, mean and spread over seeds, the paper's table beside ours."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mrfbench.curve import sweep_curves, write_sweep_curves
from mrfbench.datasets import Benchmark, get_benchmark
from mrfbench.errors import UsageError
from mrfbench.evaluators import get_evaluator
from mrfbench.folder_runs import run_records
from mrfbench.paper import paper_rows
from mrfbench.plots import Panel, leaderboard_chart
from mrfbench.runs import atomic_write, is_finished_run, read_json_object, writable_folder
from mrfbench.sweeps import SWEEP_FILE, results_records
from mrfbench.uncertainty import interval, tied_with_best

TIDY_COLUMNS = ["model", "variant", "config", "seed", "stage", "status", "error", "metric", "value"]
def variant_name(params: dict) -> str:
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def tidy(records: list[dict]) -> pd.DataFrame:
    """One row per (trial, metric); a failed trial is one row with its error and metric 'failed'."""
    rows = []
    for r in records:
        params = {**r["params"], **r.get("trained_as", {})}  # the variant as it trained
        base = {"model": r["model"], "variant": variant_name(params), "config": json.dumps(params, sort_keys=True),
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
    """Per model, the variant of ``stage`` with the lowest mean score among those with the most seeds (a
    partial grid, or a seed-0 grid beside the chosen variant's seeds, does not crown a lucky single seed)."""
    scores = summary[(summary["stage"] == stage) & (summary["metric"] == "score")]
    scores = scores[scores["n"] == scores.groupby("model")["n"].transform("max")]
    return scores.loc[scores.groupby("model")["mean"].idxmin(), ["model", "variant"]]


def leaderboard(summary: pd.DataFrame, spec: Benchmark) -> pd.DataFrame:
    """The paper's table layout: one row per model (best final variant), ours as mean and std over seeds,
    the paper's figure and the difference (ours - paper) beside each column. An image FID column holds the
    Inception ``fid`` when the runs had its weights, else ``fid_suite`` (then no difference is taken)."""
    paper = {(r["model"], f"{r['setting']}/{r['metric']}"): float(r["value"]) for r in paper_rows() if r["dataset"] == spec.name}
    evaluator, rows = get_evaluator(spec.name), []
    for _, best in best_variants(summary).iterrows():
        mine = summary[(summary["model"] == best["model"]) & (summary["variant"] == best["variant"])
                       & (summary["stage"] == "final")].set_index("metric")
        stat = lambda metric, column="mean": mine.loc[metric, column] if metric in mine.index else None  # noqa: E731
        row = {"model": best["model"], "variant": best["variant"], "seeds": int(mine.loc["score", "n"])}
        for column in evaluator.paper:
            key = source = column.key
            if source not in mine.index and column.fallback is not None:
                source = column.fallback
            ours = mine.loc[source] if source in mine.index else None
            theirs = paper.get((best["model"], key))
            comparable = ours is not None and theirs is not None and source == key
            row[f"{key} mean"] = None if ours is None else ours["mean"]
            row[f"{key} std"] = None if ours is None else ours["std"]
            row[f"{key} source"] = source.split("/")[1]
            row[f"{key} fallback"] = source != key
            row[f"{key} paper"] = theirs
            row[f"{key} diff"] = ours["mean"] - theirs if comparable else None
        row.update({bound.key: stat(bound.key) for bound in evaluator.bounds})
        for column in evaluator.beyond_columns:
            row[f"{column.key} mean"], row[f"{column.key} std"] = stat(column.key), stat(column.key, "std")
        row["train s"] = stat("train_wall_time_s")
        rows.append(row)
    return pd.DataFrame(rows)


OUTLIER_FACTOR = 2.0  # a seed scoring over this multiple of the median of its variant's other seeds is flagged


def flagged_seeds(table: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """Seeds of the table's rows that are averaged in but should not be read blindly: an outlier (score over
    ``OUTLIER_FACTOR`` x the median of the variant's other seeds), or a run whose collapse report fires or
    could not read a block's KL (not finite)."""
    final = table[(table["stage"] == "final") & (table["status"] == "ok")]
    flags = []
    for _, row in board.iterrows():
        mine = final[(final["model"] == row["model"]) & (final["variant"] == row["variant"])]
        scores = mine[mine["metric"] == "score"].set_index("seed")["value"]
        collapsed, unreadable = (mine[mine["metric"] == name].set_index("seed")["value"]
                                 for name in ("collapsed", "collapse_unreadable"))
        for seed, value in scores.items():
            reasons = []
            others = scores.drop(seed)
            if len(others) and value > OUTLIER_FACTOR * others.median():
                reasons.append(f"score {value:.3g} is {value / others.median():.1f}x the median of the other seeds")
            if collapsed.get(seed, 0.0) > 0:
                reasons.append("its collapse report fires")
            if unreadable.get(seed, 0.0) > 0:
                reasons.append("its collapse report has a block whose KL is not finite")
            if reasons:
                flags.append({"model": row["model"], "variant": row["variant"], "seed": seed,
                              "reason": " and ".join(reasons)})
    return pd.DataFrame(flags, columns=["model", "variant", "seed", "reason"])


def search_scores(summary: pd.DataFrame, spec: Benchmark) -> pd.DataFrame:
    """The search stage (validation split) of every variant: seeds, score and the two figures behind it, as
    means over seeds, best score first within each model."""
    search = summary[summary["stage"] == "search"]
    table = search.pivot_table(index=["model", "variant"], columns="metric", values="mean")
    if table.empty:
        return table
    table = table.reindex(columns=["score", *get_evaluator(spec.name).score_parts])
    table["seeds"] = search[search["metric"] == "score"].set_index(["model", "variant"])["n"]
    return table.reset_index().sort_values(["model", "score"]).reset_index(drop=True)


def to_markdown(board: pd.DataFrame, spec: Benchmark, failures: pd.DataFrame, searched: pd.DataFrame | None = None,
                flagged: pd.DataFrame | None = None, budget: str = "") -> str:
    def ours(row, key):
        return figure(row, key, "**{}**")

    def cell(row, key):
        paper, mean = row[f"{key} paper"], row[f"{key} mean"]
        mark = "*" if row[f"{key} fallback"] else ""
        if paper is None or pd.isna(paper):
            return ours(row, key) + mark
        ratio = "" if pd.isna(mean) or mark or not paper else f", {mean / paper:.2g}x"
        return ours(row, key) + mark + f" ({paper:g}{ratio})"

    def bound(value):
        return "-" if value is None or pd.isna(value) else f"{value:.3g}"

    evaluator = get_evaluator(spec.name)
    shown = evaluator.paper + evaluator.bounds + evaluator.beyond_columns
    keys = [column.key for column in evaluator.paper]
    lines = [f"# {spec.name} leaderboard",
             "",
             "Ours: mean over seeds of each model's best variant (lowest mean score among its variants with the most",
             f"seeds) ± {UNCERTAINTY}; the paper's figure in parentheses, with ours over it; train s: mean training",
             "seconds per run.",
             *([budget] if budget else []),
             spec.notes,
             "",
             "| model | variant | seeds | " + " | ".join(c.title for c in shown) + " | train s |",
             "|" + "---|" * (len(shown) + 4)]
    flagged = flagged if flagged is not None else pd.DataFrame(columns=["model", "variant", "seed", "reason"])

    def seeds(row):
        n = int(((flagged["model"] == row["model"]) & (flagged["variant"] == row["variant"])).sum())
        return f"{row['seeds']}" + (f" ({n} flagged)" if n else "")

    for _, row in board.iterrows():
        lines.append(f"| {row['model']} | {row['variant']} | {seeds(row)} | "
                     + " | ".join([cell(row, k) for k in keys] + [bound(row[b.key]) for b in evaluator.bounds]
                                  + [ours(row, c.key) for c in evaluator.beyond_columns])
                     + f" | {bound(row['train s'])} |")
    if searched is not None and len(searched):
        parts, titles = evaluator.score_parts, {c.key: c.title for c in evaluator.paper}
        how = "their mean" if evaluator.score_direction == "lower" else "1 - their mean"
        lines += ["", f"Search stage, scored on the validation split (score: {how}; lower is better):", "",
                  "| model | variant | seeds | score | " + " | ".join(titles.get(p, p) for p in parts) + " |",
                  "|" + "---|" * (4 + len(parts))]
        best = searched.groupby("model").head(1).index
        lines += [f"| {r['model']} | {r['variant']} | {r['seeds']} | {r['score']:.3g}{' (best)' if i in best else ''} | "
                  + " | ".join(bound(r[p]) for p in parts) + " |" for i, r in searched.iterrows()]
    if len(flagged):
        lines += ["", "Flagged seeds (averaged into the rows above; read those rows with them in mind):", ""]
        lines += [f"- {r.model} {r.variant} seed {r.seed}: {r.reason}" for r in flagged.itertuples()]
    if len(failures):
        lines += ["", "Failed trials:", ""]
        lines += [f"- {r.model} {r.variant} seed {r.seed} ({r.stage}): {r.error}" for r in failures.itertuples()]
    return "\n".join(lines) + "\n"


UNCERTAINTY = ("the half-width of its 95% Student t interval (3 seeds: 2.48 standard deviations; one seed: "
               "none); in bold, the column's best mean and every model Welch's t-test at 5% cannot tell from it "
               "(leaderboard.csv keeps the std too)")


def figure(row, key: str, best: str) -> str:
    """A figure as the tables show it: mean ± the 95% interval's half-width, formatted by ``best`` ('{}'
    with the mean) where it is tied with the best."""
    mean, half = row[f"{key} mean"], row.get(f"{key} ci95")
    if mean is None or pd.isna(mean):
        return "-"
    text = f"{mean:.3g}" + ("" if half is None or pd.isna(half) else f" ± {half:.2g}")
    return best.format(text) if bool(row.get(f"{key} best", False)) else text


def row_seeds(table: pd.DataFrame, board: pd.DataFrame, key: str) -> list[list[float]]:
    """For each row of ``board``, the seeds' values of figure ``key`` (its fallback where the row shows one)
    in the final trials of the row's variant."""
    final = table[(table["stage"] == "final") & (table["status"] == "ok")]
    seeds = []
    for _, row in board.iterrows():
        source = f"{key.split('/')[0]}/{row[f'{key} source']}" if f"{key} source" in row else key
        mine = final[(final["model"] == row["model"]) & (final["variant"] == row["variant"]) & (final["metric"] == source)]
        seeds.append([float(v) for v in mine["value"]])
    return seeds


def add_uncertainty(board: pd.DataFrame, table: pd.DataFrame, spec: Benchmark) -> pd.DataFrame:
    """Beside each figure's mean, the 95% interval's half-width ('<key> ci95') and whether the model is the
    best or tied with it ('<key> best'), from the seeds of each row's variant (``mrfbench.uncertainty``)."""
    board, evaluator = board.copy(), get_evaluator(spec.name)
    for column in evaluator.paper + evaluator.beyond_columns:
        key = column.key
        values = dict(zip(board["model"], row_seeds(table, board, key)))
        tied = tied_with_best(values, column.better)
        board[f"{key} ci95"] = [interval(values[m]) for m in board["model"]]
        board[f"{key} best"] = [m in tied for m in board["model"]]
    return board


def chart_panels(board: pd.DataFrame, table: pd.DataFrame, spec: Benchmark) -> list[Panel]:
    """The figures behind the score as chart panels: title with unit and direction, means, intervals, each
    row's seeds, the paper's figures and the noise floor (the figure's declared floor, where the board has it)."""
    evaluator = get_evaluator(spec.name)
    columns = {c.key: c for c in evaluator.paper + evaluator.beyond_columns}
    panels = []
    for key in evaluator.score_parts:
        column = columns[key]
        seeds = row_seeds(table, board, key)
        floor = board[column.floor].dropna() if column.floor in board else pd.Series()
        unit = f"{column.unit}, " if column.unit else ""
        panels.append(Panel(f"{column.title} ({unit}{column.better} is better)", list(board[f"{key} mean"]),
                            list(board.get(f"{key} ci95", [None] * len(board))), seeds,
                            [None if pd.isna(p) else p for p in board.get(f"{key} paper", [None] * len(board))],
                            float(floor.iloc[0]) if len(floor) else None))
    return panels


def csv_columns(board: pd.DataFrame, spec: Benchmark) -> pd.DataFrame:
    """The leaderboard with snake_case column names that carry their unit: 'unconditional/wasserstein_dim1
    mean' becomes 'unconditional_wasserstein_dim1_x1000_mean'."""
    units = {c.key: c.unit for c in get_evaluator(spec.name).declared if c.unit}

    def name(column: str) -> str:
        if column == "train s":
            return "train_wall_time_s"
        key, _, statistic = column.partition(" ")
        unit = units.get(key, "")
        return "_".join(part for part in (key.replace("/", "_"), "" if key.endswith(unit) else unit, statistic) if part)

    return board.rename(columns=name)


def sweep_budget(settings: dict, space) -> str:
    """The budget a sweep ran with, as one line: its space, epochs and the data and scoring sizes it set."""
    def sizes(options: dict | None) -> str:
        return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in (options or {}).items()
                         if k != "build_dir")

    epochs = settings.get("epochs") or space.epochs
    parts = [f"Budget: search space `{space.name}`, {epochs} epochs per run"]
    for what, key in (("data", "dataset_options"), ("scoring", "eval_options")):
        if listed := sizes(settings.get(key)):
            parts.append(f"{what}: {listed}")
    return "; ".join(parts) + "."


def sweep_cost(records: list[dict]) -> str:
    """What a sweep's trials cost, as one line: how many ended how, their training time in all, and the
    wall time during which trials ran (the union of their start-to-finish spans: a resumed sweep's pauses
    left out)."""
    import datetime

    ended = pd.Series([r.get("status", "?") for r in records]).value_counts()
    spans = sorted((datetime.datetime.fromisoformat(r["started"]), datetime.datetime.fromisoformat(r["finished"]))
                   for r in records if r.get("started") and r.get("finished"))
    running, end = 0.0, None
    for a, b in spans:
        start = a if end is None else max(a, end)
        running += max(0.0, (b - start).total_seconds())
        end = b if end is None else max(end, b)
    train = sum(float((r.get("metrics") or {}).get("train_wall_time_s") or 0.0) / (r.get("pack_size") or len(r.get("pack_seeds") or [0]))
                for r in records)  # a pack's members share its training time
    threads = sorted({r["threads"] for r in records if "threads" in r})
    how = ", ".join(f"{n} {status}" for status, n in ended.items())
    return (f"Cost: {len(records)} trials ({how}); {train / 3600:.1f} h of training over the scored trials; trials "
            f"ran during {running / 3600:.1f} h of wall time"
            + (f", {'/'.join(map(str, threads))} thread(s) each" if threads else "") + ".")


def read_trials(sweep_dir: Path) -> tuple[str, pd.DataFrame, str]:
    """The data set, the tidy table of every trial (``tidy``) and the budget lines of a sweep directory, or
    of a directory of ``mrfbench train`` runs (no budget lines)."""
    from mrfbench.sweeps.settings import sweep_space

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UsageError(f"{sweep_dir} is not a directory")
    if (sweep_dir / SWEEP_FILE).exists():
        settings = read_json_object(sweep_dir / SWEEP_FILE)
        if not isinstance(settings.get("space"), str):
            raise UsageError(f"corrupt {sweep_dir / SWEEP_FILE}: it names no search space")
        space = sweep_space(settings["space"], settings.get("space_text"))
        records = results_records(sweep_dir)
        dataset, budget = space.dataset, sweep_budget(settings, space) + "\n" + sweep_cost(records)
    else:
        (dataset, records), budget = run_records(sweep_dir), ""
    return dataset, tidy(records), budget


@dataclass
class Leaderboard:
    """A sweep's (or a folder of runs') leaderboard: per model, its best variant's figures over seeds."""

    board: pd.DataFrame  # a row per model: mean, std (and the paper's figure) of every figure
    trials: pd.DataFrame  # every trial behind it (``tidy``)
    spec: Benchmark
    markdown: str


def build_leaderboard(sweep_dir: Path) -> Leaderboard:
    """The leaderboard of ``sweep_dir`` (a sweep, or a folder of ``mrfbench train`` runs), writing nothing."""
    dataset, table, budget = read_trials(sweep_dir)
    if table.empty or not (table["status"] == "ok").any():
        raise UsageError(f"no finished trial in {sweep_dir} yet")
    summary = aggregate(table)
    spec = get_benchmark(dataset)
    board = add_uncertainty(leaderboard(summary, spec), table, spec)
    failures = table[table["status"] == "failed"].drop_duplicates(["model", "variant", "seed", "stage"])
    markdown = to_markdown(board, spec, failures, search_scores(summary, spec), flagged_seeds(table, board), budget)
    return Leaderboard(board, table, spec, markdown)


def write_leaderboard(sweep_dir: Path, publish_dir: Path | None = None) -> tuple[Path, Path, pd.DataFrame, Benchmark]:
    """Aggregate a sweep directory, or a directory of ``mrfbench train`` runs, into its own
    leaderboard.{md,csv}, and with ``publish_dir`` also into publish_dir/<dataset>/ (the reference
    leaderboards); every file is written atomically. Returns the paths of the last copy written, the
    leaderboard and its data set's spec. A single run's own folder is refused: its files are the run's."""
    sweep_dir = Path(sweep_dir)
    if is_finished_run(sweep_dir):
        raise UsageError(f"{sweep_dir} is one run; give the folder that holds runs ({sweep_dir.parent}), so that no "
                         "leaderboard is written into the run")
    result = build_leaderboard(sweep_dir)
    board, spec, markdown = result.board, result.spec, result.markdown.encode()
    outs = [sweep_dir] + ([Path(publish_dir) / spec.name] if publish_dir is not None else [])
    for out in outs:  # every copy can be written before the first is
        writable_folder(out, "the leaderboard")
    curves = sweep_curves(sweep_dir)
    for out in outs:
        try:
            atomic_write(out / "trials.csv", lambda h: h.write(result.trials.to_csv(index=False).encode()))
            if curves:
                write_sweep_curves(curves, out)
            md, csv = out / "leaderboard.md", out / "leaderboard.csv"
            atomic_write(md, lambda h: h.write(markdown))
            atomic_write(csv, lambda h: h.write(csv_columns(board, spec).to_csv(index=False).encode()))
            leaderboard_chart(list(board["model"]), chart_panels(board, result.trials, spec),
                              f"{spec.name} leaderboard ({spec.table}): ours beside the paper's", out / "leaderboard.png")
        except OSError as err:
            raise UsageError(f"cannot write the leaderboard into {out}: {err.strerror or err}") from None
    return md, csv, board, spec
