"""Benchmark: train-step times of every model at the copula paper settings divided by a diagonal-Gaussian VAE's.

Run: python tests/benchmarks/bench_train_step.py [--batch-size 256] [--repeats 7] [--steps 30]
All models share per-modality encoder trunks, decoders and likelihood; the diagonal VAE has no global
encoder, a diagonal posterior per modality and a standard normal prior. The baselines run as in
copula_paper.yaml (latent 3 factorised; MMVAE and MMVAE+ with K = 1), plus MMVAE+ with DReG at K = 10. Timings are interleaved in one
run so the ratio is not skewed by machine load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from mrfbench.datasets import get_dataset
from mrfbench.models import build_model
from mrfbench.models.base import LossOutput
from mrfbench.models.networks import GroupedMLP, Likelihood


class DiagonalGaussianVAE(nn.Module):
    """Reference: the GMRF's encoders and decoders with a factorised diagonal Gaussian latent."""

    def __init__(self, n_modalities=4, modality_dim=2, latent_dim=2, hidden=256):
        super().__init__()
        self.trunks = GroupedMLP(n_modalities, [modality_dim, hidden, hidden], final_relu=True)
        self.heads = GroupedMLP(n_modalities, [hidden, 2 * latent_dim])
        self.decoders = GroupedMLP(n_modalities, [latent_dim, hidden, hidden, modality_dim])
        self.likelihood = Likelihood("gaussian", n_modalities, modality_dim)
        self.latent_dim = latent_dim

    def loss(self, x: torch.Tensor) -> LossOutput:
        out = self.heads(self.trunks(x))
        q = Normal(out[..., : self.latent_dim], out[..., self.latent_dim :].mul(0.5).exp())
        z = q.rsample()
        recon = self.likelihood.log_prob(x, self.decoders(z)).sum(-1)
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum((-2, -1))
        return LossOutput((kl - recon).mean(), {})


def time_steps(model: nn.Module, batches: list[torch.Tensor]) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for x in batches:
        loss = model.loss(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = get_dataset("copula", n_train=args.batch_size * args.steps).splits()["train"]
    batches = list(data.split(args.batch_size))
    models = {"gmrf": build_model("gmrf"), "almrf": build_model("almrf"), "nnmrf": build_model("nnmrf"),
              **{name: build_model(name, specific_dim=3) for name in ("mvae", "mopoe", "mmvae")},
              "mmvaeplus": build_model("mmvaeplus", n_samples=1), "mmvaeplus-k10": build_model("mmvaeplus"),
              "diagonal": DiagonalGaussianVAE()}
    for model in models.values():
        time_steps(model, batches[:3])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(time_steps(model, batches))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"median of {args.repeats} x {args.steps} steps")
    for name, value in median.items():
        print(f"{name:13s} train step {value * 1e3:8.2f} ms   ratio to diagonal {value / median['diagonal']:6.2f}")


if __name__ == "__main__":
    main()
