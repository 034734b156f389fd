"""Benchmark: GMRF training throughput of runs side by side with given torch threads each.

Run: python tests/benchmarks/bench_threads.py [--steps 200]
Prints, for 1 run x 2 threads, 2 runs x 1 thread and 2 runs x 2 threads, the steps per second of all
runs together and the ratio to one run with 2 threads (on a 2-core machine, 2 x 1 should win and 2 x 2
oversubscribe). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

WORKER = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from mrfbench.allocator import reuse_freed_memory
from mrfbench.datasets import get_dataset
from mrfbench.models import build_model
from mrfbench.training import adam
reuse_freed_memory()  # as in `mrfbench train` and sweep trials
steps = int(sys.argv[2])
model = build_model("gmrf")
optimizer = adam(model.parameters(), 1e-3)
batches = list(get_dataset("copula", n_train=256 * 20).splits()["train"].split(256))
for i in range(5 + steps):
    if i == 5:
        start = time.perf_counter()
    loss = model.loss(batches[i % len(batches)]).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
print(steps / (time.perf_counter() - start))
"""


def throughput(runs: int, threads: int, steps: int) -> float:
    """Steps per second of ``runs`` processes side by side, ``threads`` torch threads each, summed."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(threads), str(steps)], stdout=subprocess.PIPE, text=True)
             for _ in range(runs)]
    return sum(float(proc.communicate()[0]) for proc in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    start = time.perf_counter()
    results = {(runs, threads): throughput(runs, threads, args.steps) for runs, threads in ((1, 2), (2, 1), (2, 2))}
    base = results[(1, 2)]
    for (runs, threads), value in results.items():
        print(f"{runs} run(s) x {threads} thread(s): {value:7.1f} steps/s in all, {value / base:4.2f}x one run at 2 threads")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
