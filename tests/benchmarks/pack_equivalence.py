"""Statistical equivalence of packs and single runs at the copula paper protocol (200 epochs, the default data
and scoring: 1,000,000 unconditional samples, test split): for each model, seeds 0-2 at beta 1 as three single
runs and as one pack, then each headline figure's pack mean against the single runs' mean and standard
deviation (the pack passes a figure when its mean lies within two of the single runs' standard deviations).

Run: python tests/benchmarks/pack_equivalence.py --out DIR [--models gmrf,mopoe] [--epochs 200] [--threads 2]
Runs already finished in DIR are kept (the script resumes). Prints one markdown table per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mrfbench.evaluators import get_evaluator, run_figures

SEEDS = (0, 1, 2)


def train(args: list[str], out: Path, threads: int) -> float:
    """Run `mrfbench train` unless ``out`` is finished; its wall time (0 when it was)."""
    if (out / "metrics.json").exists() or (out.is_dir() and all((out / f"seed={s}" / "metrics.json").exists() for s in SEEDS)):
        return 0.0
    start = time.perf_counter()
    subprocess.run(["mrfbench", "train", *args, "--out", str(out), "--threads", str(threads)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def figures(run: Path) -> dict[str, float]:
    metrics = json.loads((run / "metrics.json").read_text())
    evaluator, flat = get_evaluator(metrics["dataset"]), run_figures(metrics, metrics["dataset"])
    return {c.title: flat[c.key] for c in evaluator.paper + evaluator.beyond}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="gmrf,mopoe")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for model in args.models.split(","):
        common = ["--model", model, "--beta", "1", "--epochs", str(args.epochs)]
        single_s = sum(train([*common, "--seed", str(s)], args.out / model / f"single_seed{s}", args.threads)
                       for s in SEEDS)
        pack_s = train([*common, "--seed", ",".join(map(str, SEEDS))], args.out / model / "pack", args.threads)
        singles = [figures(args.out / model / f"single_seed{s}") for s in SEEDS]
        packed = [figures(args.out / model / "pack" / f"seed={s}") for s in SEEDS]
        print(f"\n{model}: 3 single runs ({single_s:.0f} s) against one pack of 3 ({pack_s:.0f} s), "
              f"{args.epochs} epochs, beta 1, seeds 0-2 (0 s: finished earlier)\n")
        print("| figure | single runs (mean ± sd) | pack (mean ± sd) | |pack - single| / sd | within 2 sd |")
        print("|---|---|---|---|---|")
        for title in singles[0]:
            a, b = [f[title] for f in singles], [f[title] for f in packed]
            sd = statistics.stdev(a)
            gap = abs(statistics.mean(b) - statistics.mean(a)) / sd if sd > 0 else float("inf")
            print(f"| {title} | {statistics.mean(a):.4g} ± {sd:.2g} | {statistics.mean(b):.4g} ± "
                  f"{statistics.stdev(b):.2g} | {gap:.2f} | {'yes' if gap <= 2 else 'NO'} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
