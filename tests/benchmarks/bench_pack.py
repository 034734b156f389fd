"""Benchmark: member-steps per second of a pack of K models against the same K runs one after another.

Run: python tests/benchmarks/bench_pack.py [--setting copula|mnist3|polymnist] [--models gmrf,mopoe]
     [--ks 1,4,16,64,256] [--batch-sizes 64,256] [--steps 20] [--repeats 3] [--device auto] [--max-seconds 60]
A pack step is ``mrfbench.pack.train_step`` (a vmapped forward and backward of each chunk of members, as many at
once as ``mrfbench.pack_sizing.pack_chunk`` gives: all on a GPU, on a CPU as many as keep the step's largest tensor
within its budget; then one Adam update of the (K, P) parameters); a single step is what
``mrfbench.training.train`` does (the model's loss, backward and fused Adam). Both run on random tensors of the
setting's shape, the members with their own seeds, betas and learning rates. Single runs are timed on min(K, 4)
models and scaled to K (their steps do not depend on K).
Each figure is the median of ``--repeats`` interleaved timings; a K whose single pack step would take longer
than ``--max-seconds`` / ``--steps`` is skipped (stated). Prints one table row per model, batch size and K.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mrfbench.allocator import reuse_freed_memory
from mrfbench.models import build_model
from mrfbench.pack import Pack, PackAdam, member_generators, train_step
from mrfbench.pack_sizing import pack_chunk
from mrfbench.training import TrainConfig, adam, resolve_device

SETTINGS = {  # setting -> (modalities, features per modality, options)
    "copula": (4, 2, {}),
    "mnist3": (3, 784, {"architecture": "mlp", "hidden": 1024, "mlp_layers": 4, "latent_dim": 8,
                        "reconstruction": "mean"}),
    "polymnist": (5, 3 * 784, {"architecture": "conv", "latent_dim": 16, "reconstruction": "mean"}),
}
BASELINE_LATENT = {"copula": {"latent_dim": 3, "specific_dim": 3}}  # as copula_paper.yaml runs the baselines
BASELINES = ("mvae", "mmvae", "mopoe", "mmvaeplus")


def build(name: str, setting: str, seed: int, device: torch.device):
    m, f, options = SETTINGS[setting]
    if name in BASELINES:
        options = {**options, **BASELINE_LATENT.get(setting, {})}
    torch.manual_seed(seed)
    model = build_model(name, n_modalities=m, modality_dim=f, beta=0.5 + seed, **options)
    return model, torch.get_rng_state(), model.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pack(name, setting, k, batch, steps, device) -> tuple[float, int]:
    """Seconds for one step of a pack of K, and the members it runs at once."""
    built = [build(name, setting, seed, device) for seed in range(k)]
    members = [TrainConfig(seed=seed, lr=1e-3 * (1 + seed % 3)) for seed in range(k)]
    m, f, _ = SETTINGS[setting]
    x = torch.rand(k, batch, m, f, device=device)
    pack = Pack([b[2] for b in built], members, [member_generators(s, b[1], device) for s, b in enumerate(built)],
                pack_chunk(built[0][2], x[0]))
    beta, lr, active = pack.betas.float().to(device), [m.lr for m in members], [True] * k
    optimizer = PackAdam(pack.params.stacked.values())
    train_step(pack, optimizer, x, beta, lr, active, "fp32")  # records the draws, warms up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(pack, optimizer, x, beta, lr, active, "fp32")
    sync(device)
    return (time.perf_counter() - start) / steps, pack.chunk


def time_singles(name, setting, k, batch, steps, device) -> float:
    """Seconds for one step of each of K single runs (timed on min(K, 4) of them)."""
    timed = min(k, 4)
    m, f, _ = SETTINGS[setting]
    total = 0.0
    for seed in range(timed):
        model = build(name, setting, seed, device)[2]
        optimizer = adam(model.parameters(), 1e-3)
        x = torch.rand(batch, m, f, device=device)
        for step in range(steps + 1):
            if step == 1:
                sync(device)
                start = time.perf_counter()
            loss = model.loss(x).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        total += (time.perf_counter() - start) / steps
    return total * k / timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="copula", choices=sorted(SETTINGS))
    parser.add_argument("--models", default="gmrf,mopoe")
    parser.add_argument("--ks", default="1,4,16,64,256")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="skip a K whose pack steps take longer")
    args = parser.parse_args()
    reuse_freed_memory()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, setting {args.setting}, "
          f"{args.steps} steps x {args.repeats} repeats (medians)")
    print(f"{'model':<10} {'batch':>5} {'K':>4} {'chunk':>5} {'pack ms/step':>13} {'singles ms':>11} "
          f"{'member-steps/s pack':>20} {'singles':>9} {'speed-up':>9}")
    for name in args.models.split(","):
        for batch in map(int, args.batch_sizes.split(",")):
            skipped = False
            for k in map(int, args.ks.split(",")):
                if skipped:
                    print(f"{name:<10} {batch:>5} {k:>4} {'':>5}  skipped: a smaller K already exceeded --max-seconds")
                    continue
                packs, singles = [], []
                for _ in range(args.repeats):
                    seconds, chunk = time_pack(name, args.setting, k, batch, args.steps, device)
                    packs.append(seconds)
                    singles.append(time_singles(name, args.setting, k, batch, args.steps, device))
                pack_s, single_s = statistics.median(packs), statistics.median(singles)
                print(f"{name:<10} {batch:>5} {k:>4} {chunk:>5} {1e3 * pack_s:>13.1f} {1e3 * single_s:>11.1f} "
                      f"{k / pack_s:>20.0f} {k / single_s:>9.0f} {single_s / pack_s:>8.2f}x", flush=True)
                skipped = pack_s * args.steps * 4 > args.max_seconds


if __name__ == "__main__":
    main()
