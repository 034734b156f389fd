"""Benchmark: train-step time of every model beside its networks' floor, on the paper's architectures.

Run: python tests/benchmarks/bench_train_step.py [--setting copula|mnist3|polymnist] [--precision fp32|bf16]
     [--batch-size N] [--repeats 7] [--steps 30] [--allocator reuse|system]
The floor is the same modality encoders, heads and decoders (the setting's architecture) with Adam and a
trivial loss: what any model of the setting must pay. A model may run its networks more than once a step
(MMVAE decodes each modality's sample with every decoder, MVAE decodes each subset, the NN-MRF decodes K
importance samples and evaluates its potentials in the Metropolis-Hastings chains): its own floor replays
the network calls one of its steps makes (recorded by forward hooks; same modules, input shapes, gradient
modes) on fixed inputs with a trivial loss, so "to own" is what the model adds beyond its networks' work
(latent maths, Python, the optimiser's extra parameters). On the copula data a diagonal-Gaussian VAE with the
GMRF's networks is also timed (the reference of the performance issue: the GMRF should be within 1.3x of
it). The baselines run as in copula_paper.yaml (latent 3 factorised; MMVAE and MMVAE+ with K = 1), plus
MMVAE+ with DReG at K = 10. Data are random tensors of the setting's shape (no image build needed).
Timings are interleaved in one run so the ratios are not skewed by machine load. The C allocator keeps
freed memory as `mrfbench` commands and sweep trials have it (``mrfbench.allocator``); ``--allocator system``
leaves glibc's defaults, for a before/after in two runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from mrfbench.allocator import reuse_freed_memory
from mrfbench.models import build_model
from mrfbench.models.base import LossOutput
from mrfbench.models.networks import ConvDecoder, ConvEncoder, GroupedMLP, Likelihood, modality_decoder, modality_encoder
from mrfbench.training import adam

NETWORKS = (GroupedMLP, ConvEncoder, ConvDecoder, nn.Sequential)  # a model's networks (outermost ones)


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


class NetworkFloor(nn.Module):
    """The network calls of one training step of ``model`` replayed with a trivial loss: each outermost
    network module on fixed inputs of the recorded shape, with the recorded gradient mode and with an input
    gradient where the model's input had one (a decoder's latent input does; the data do not)."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        super().__init__()
        self.model = model  # the optimiser steps the model's parameters, as for the model itself
        self.calls: list[tuple[nn.Module, torch.Tensor, bool]] = []
        hooks, seen = [], set()
        for name, module in model.named_modules():
            if isinstance(module, NETWORKS) and not any(name.startswith(outer + ".") for outer in seen):
                seen.add(name)
                hooks.append(module.register_forward_pre_hook(self._record))
        model.loss(x).loss.backward()
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)

    def _record(self, module: nn.Module, args: tuple) -> None:
        inputs = torch.randn_like(args[0]).requires_grad_(args[0].requires_grad)
        self.calls.append((module, inputs, torch.is_grad_enabled()))

    def loss(self, x: torch.Tensor) -> LossOutput:
        total = torch.zeros((), device=x.device)
        for module, inputs, grad in self.calls:
            inputs.grad = None
            with torch.set_grad_enabled(grad):
                out = module(inputs)
            if grad:
                total = total + out.float().square().mean()
        return LossOutput(total, {})


def time_steps(model: nn.Module, batches: list[torch.Tensor], precision: str = "fp32") -> float:
    optimizer = adam(model.parameters(), 1e-3)  # the trainer's
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
    parser.add_argument("--allocator", choices=("reuse", "system"), default="reuse")
    args = parser.parse_args()
    if args.allocator == "reuse":
        reuse_freed_memory()
    torch.manual_seed(0)
    batch_size = args.batch_size or (256 if args.setting == "copula" else 128)
    m, features, _, _ = SETTINGS[args.setting]
    data = torch.rand(batch_size * args.steps, m, features)
    batches = list(data.split(batch_size))
    models = models_of(args.setting, args.precision)
    with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        own = {name: NetworkFloor(model, batches[0]) for name, model in models.items()
               if name not in ("floor", "diagonal")}
    models |= {f"{name} networks": floor for name, floor in own.items()}
    for model in models.values():
        time_steps(model, batches[:2], args.precision)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(time_steps(model, batches, args.precision))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.setting}, {args.precision}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {batch_size}, {args.allocator} allocator, median of {args.repeats} x {args.steps} steps")
    print(f"{'model':13s} {'step ms':>9s} {'floor ms':>9s} {'to floor':>9s} {'own ms':>9s} {'to own':>7s}"
          + ("  to diagonal" if "diagonal" in median else ""))
    for name, value in median.items():
        if name.endswith(" networks"):
            continue
        own_floor = median.get(f"{name} networks")
        own_cols = f"{own_floor * 1e3:9.2f} {value / own_floor:7.2f}" if own_floor else f"{'-':>9s} {'-':>7s}"
        reference = f"  {value / median['diagonal']:11.2f}" if "diagonal" in median else ""
        print(f"{name:13s} {value * 1e3:9.2f} {median['floor'] * 1e3:9.2f} {value / median['floor']:9.2f} {own_cols}{reference}")


if __name__ == "__main__":
    main()
