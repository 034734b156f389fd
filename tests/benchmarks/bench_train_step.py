"""Benchmark: train-step time of every model beside its networks' floor, on the paper's architectures.

Run: python tests/benchmarks/bench_train_step.py [--setting copula|mnist3|polymnist] [--precision fp32|bf16]
     [--batch-size N] [--repeats 7] [--steps 30]
The floor is the same modality encoders, heads and decoders (the setting's architecture) with Adam and a
trivial loss: what any model of the setting must pay. On the copula data a diagonal-Gaussian VAE with the
GMRF's networks is also timed (the reference of the performance issue: the GMRF should be within 1.3x of
it). The baselines run as in copula_paper.yaml (latent 3 factorised; MMVAE and MMVAE+ with K = 1), plus
MMVAE+ with DReG at K = 10. Data are random tensors of the setting's shape (no image build needed).
Timings are interleaved in one run so the ratios are not skewed by machine load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from mrfbench.models import build_model
from mrfbench.models.base import LossOutput
from mrfbench.models.networks import GroupedMLP, Likelihood, modality_decoder, modality_encoder


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


SETTINGS = {  # setting -> (modalities, features per modality, shared options, latent of MRF / baselines)
    "copula": (4, 2, {}, (2, 3)),
    "mnist3": (3, 784, {"architecture": "mlp", "hidden": 1024, "mlp_layers": 4}, (8, 8)),
    "polymnist": (5, 3 * 784, {"architecture": "conv"}, (16, 32)),
}


class Floor(nn.Module):
    """The setting's networks (modality encoders and heads, decoders) with a trivial loss."""

    def __init__(self, config):
        super().__init__()
        self.trunks = modality_encoder(config, config.hidden)
        self.heads = GroupedMLP(config.n_modalities, [config.hidden, 2 * config.latent_dim])
        self.decoders = modality_decoder(config, config.latent_dim)
        self.latent_dim = config.latent_dim

    def loss(self, x: torch.Tensor) -> LossOutput:
        z = self.heads(self.trunks(x))[..., : self.latent_dim]
        return LossOutput((self.decoders(z) - x).square().mean(), {})


def time_steps(model: nn.Module, batches: list[torch.Tensor], precision: str = "fp32") -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for x in batches:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model.loss(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def models_of(setting: str, precision: str) -> dict[str, nn.Module]:
    m, features, shared, (mrf_latent, baseline_latent) = SETTINGS[setting]
    shape = {"n_modalities": m, "modality_dim": features, **shared}
    mrf = {"gmrf": build_model("gmrf", latent_dim=mrf_latent, **shape),
           "almrf": build_model("almrf", latent_dim=mrf_latent, **shape)}
    if precision == "fp32":  # the energy-prior models refuse bf16
        mrf["nnmrf"] = build_model("nnmrf", latent_dim=mrf_latent, **shape)
    baselines = {name: build_model(name, latent_dim=baseline_latent, specific_dim=baseline_latent, **shape)
                 for name in ("mvae", "mopoe", "mmvae")}
    baselines["mmvaeplus"] = build_model("mmvaeplus", latent_dim=baseline_latent, specific_dim=baseline_latent,
                                         n_samples=1, **shape)
    baselines["mmvaeplus-k10"] = build_model("mmvaeplus", latent_dim=baseline_latent, specific_dim=baseline_latent, **shape)
    floor = {"floor": Floor(mrf["gmrf"].config)}
    reference = {"diagonal": DiagonalGaussianVAE()} if setting == "copula" else {}
    return {**floor, **reference, **mrf, **baselines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="copula")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on the copula data, else 128")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    batch_size = args.batch_size or (256 if args.setting == "copula" else 128)
    m, features, _, _ = SETTINGS[args.setting]
    data = torch.rand(batch_size * args.steps, m, features)
    batches = list(data.split(batch_size))
    models = models_of(args.setting, args.precision)
    for model in models.values():
        time_steps(model, batches[:2], args.precision)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(time_steps(model, batches, args.precision))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.setting}, {args.precision}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {batch_size}, median of {args.repeats} x {args.steps} steps")
    for name, value in median.items():
        reference = f"   to diagonal {value / median['diagonal']:5.2f}" if "diagonal" in median else ""
        print(f"{name:13s} step {value * 1e3:9.2f} ms   to floor {value / median['floor']:5.2f}{reference}")


if __name__ == "__main__":
    main()
