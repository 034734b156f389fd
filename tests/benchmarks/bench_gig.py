"""Benchmark: the vectorised GIG sampler against scipy.stats.geninvgauss when every draw has its own
parameters (as in the ALMRF's exact conditional generation, where chi depends on the observed latents).

Run: python tests/benchmarks/bench_gig.py [--n 20000]
scipy draws one variate per parameter pair in a Python-level loop; both sample the same laws (the test suite
checks ours against scipy with Kolmogorov-Smirnov tests). Times measured in one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import geninvgauss

from mrfbench.models.latent import sample_gig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    chi, psi, lam = rng.uniform(0.01, 5.0, args.n), rng.uniform(2.0, 4.0, args.n), -1.0  # lam of d_obs = 4
    sample_gig(lam, torch.from_numpy(chi[:100]), torch.from_numpy(psi[:100]))  # warm-up
    start = time.perf_counter()
    sample_gig(lam, torch.from_numpy(chi), torch.from_numpy(psi))
    ours = time.perf_counter() - start
    start = time.perf_counter()
    np.sqrt(chi / psi) * geninvgauss.rvs(lam, np.sqrt(chi * psi), random_state=rng)
    scipy_time = time.perf_counter() - start
    print(f"{args.n:,} GIG draws, each with its own (chi, psi), lambda = {lam}")
    print(f"mrfbench sample_gig        {ours:8.3f} s")
    print(f"scipy geninvgauss.rvs      {scipy_time:8.3f} s")
    print(f"speed-up: {scipy_time / ours:.0f}x")


if __name__ == "__main__":
    main()
