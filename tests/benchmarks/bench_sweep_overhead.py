"""Benchmark: Ray + Optuna overhead of a small copula sweep, measured in one run.

Run: python tests/benchmarks/bench_sweep_overhead.py [--epochs 5] [--trials 4]
Prints the sweep's wall time divided by the sum of its trials' own training times (and by the sum of
their whole run times, training plus scoring), on a local Ray with one CPU per trial.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mrfbench.sweep import Sweep, SweepSettings, results_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = SweepSettings(
            out=str(Path(tmp) / "sweep"), space="copula", models=["gmrf"], trials=args.trials, seeds=2,
            epochs=args.epochs, dataset_options={"n_train": 5_000},
            eval_options={"n_unconditional": 100_000}, search_eval_options={})
        start = time.perf_counter()
        Sweep(settings).run()
        wall = time.perf_counter() - start
        records = [r for r in results_records(settings.out) if r["status"] == "ok"]
        train = sum(r["metrics"]["train_wall_time_s"] for r in records)
        runs = sum(json.loads((p.parent / "result.json").read_text().splitlines()[-1])["time_this_iter_s"]
                   for p in Path(settings.out).glob("**/trial.json"))
    print(f"{len(records)} trials ({args.trials} searched + 2 seeds), {args.epochs} epochs each, 5k training tuples")
    print(f"sweep wall time            {wall:8.1f} s (including ray.init)")
    print(f"sum of trial training time {train:8.1f} s")
    print(f"sum of trial run time      {runs:8.1f} s (training + scoring + plots)")
    print(f"overhead ratio wall / training: {wall / train:.2f}   wall / run time: {wall / runs:.2f}")


if __name__ == "__main__":
    main()
