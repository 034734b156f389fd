"""Benchmark: what a sweep costs beyond its trials' training, on the quick copula budget, in one run.

Run: python tests/benchmarks/bench_sweep_overhead.py [--space copula_quick] [--models gmrf,mopoe]
Runs the space as `mrfbench reproduce` does (its `sweep:` settings; local Ray, one CPU per trial) and
prints the sweep's wall time divided by the sum of its trials' own training times, and by the sum of their
whole run times (training, scoring, plots).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mrfbench.spaces import load_space
from mrfbench.sweeps import Sweep, SweepSettings, results_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="copula_quick")
    parser.add_argument("--models", default="", help="comma-separated; default: every model of the space")
    args = parser.parse_args()
    space = load_space(args.space)
    with tempfile.TemporaryDirectory() as tmp:
        settings = SweepSettings(out=str(Path(tmp) / "sweep"), space=space.name,
                                 models=[m for m in args.models.split(",") if m], **space.sweep)
        start = time.perf_counter()
        Sweep(settings).run()
        wall = time.perf_counter() - start
        records = [r for r in results_records(settings.out) if r["status"] == "ok"]
        train = sum(r["metrics"]["train_wall_time_s"] / (r.get("pack_size") or 1) for r in records)  # a pack's, shared
        runs = sum(json.loads(p.read_text().splitlines()[-1])["time_total_s"]
                   for p in Path(settings.out).glob("*/*/result.json"))  # each Tune trial (a pack is one)
    print(f"{space.name}: {len(records)} trials of {space.epochs} epochs, models {', '.join(settings.models or space.params)}")
    print(f"sweep wall time            {wall:8.1f} s (including ray.init)")
    print(f"sum of trial training time {train:8.1f} s")
    print(f"sum of trial run time      {runs:8.1f} s (training + scoring + plots)")
    print(f"overhead ratio wall / training: {wall / train:.2f}   wall / run time: {wall / runs:.2f}   "
          f"run time / training: {runs / train:.2f} (what a trial spends beyond training)")


if __name__ == "__main__":
    main()
