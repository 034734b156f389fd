"""Where an image MRF model's coherence is lost: prints, for a finished run (or a `train` state file with
--state), the figures that separate the candidate causes (for a baseline, its reconstructions' only).

- reconstruction coherence: every modality encoded and decoded (the posterior's mean); the ceiling of any
  generation, near the classifiers' accuracy if the decoders carry the digit;
- cross coherence through the posterior: z from q(z | all modalities), the label modality's block taken
  from the other's posterior block by the prior's conditional; and the conditional generation the
  evaluator scores (unimodal factor of the observed block, prior conditional for the rest);
- the same through the prior's conditional mean rather than a draw (how much the conditional's spread costs);
- the conditional sampler against the exact Gaussian conditional (mean and covariance of 20,000 draws);
- how strongly the prior ties the two label blocks against how strongly the aggregate posterior does
  (canonical correlations of blocks 0 and 1, and the prior's mutual information between them, which bounds
  what a draw of one block can say of the other's digit);
- the KL per block and what the beta-weighted KL weighs against the reconstruction term.

    python tests/benchmarks/coherence_diagnosis.py RUN_DIR [--tuples 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mrfbench.datasets.classifiers import modality_classifiers, predict
from mrfbench.evaluators.images import to_images
from mrfbench.experiment import load_run
from mrfbench.models.experts import ExpertsVAE
from mrfbench.models.latent.gaussian import block_indices


def canonical_correlations(cov: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The canonical correlations between the coordinates ``a`` and ``b`` of a law with covariance ``cov``."""
    saa, sbb, sab = cov[a][:, a], cov[b][:, b], cov[a][:, b]
    wa = torch.linalg.inv(torch.linalg.cholesky(saa))
    wb = torch.linalg.inv(torch.linalg.cholesky(sbb))
    return torch.linalg.svdvals(wa @ sab @ wb.T)


@torch.no_grad()
def diagnose(model, dataset, n: int) -> dict:
    d, shape = model.config.latent_dim, dataset.modality_shape
    x, y = dataset.splits()["test"][:n], dataset.labels()["test"][:n]
    y = y if y.ndim == 1 else y[:, 0]
    classifiers, accuracies = modality_classifiers(dataset.build_dir)
    sharing = list(dataset.label_sharing or range(dataset.n_modalities))

    def coherence(flat: torch.Tensor, modalities: list[int]) -> list[float]:
        """Accuracy on the label of each of ``modalities``' generations, ``flat`` (N, len(modalities), F)."""
        images = to_images(flat, shape)
        return [round(float((predict(classifiers[m], images[:, i]) == y).float().mean()), 3)
                for i, m in enumerate(modalities)]

    baseline = isinstance(model, ExpertsVAE)
    if baseline:  # each modality through its own unimodal posterior's mean
        post = model.encode(x)
        reconstruction = model.decode(post.shared.mean, None if post.specific is None else post.specific.mean)
    else:
        q, p = model.posterior(x), model.prior()
        reconstruction = model.decode(q.mean)
    out = {"classifier accuracy": [round(a, 3) for a in accuracies],
           "reconstruction coherence": coherence(reconstruction, list(range(dataset.n_modalities))),
           "reconstruction mean squared error": round(float((reconstruction - x).pow(2).mean()), 4)}
    if baseline:
        return out
    z = q.sample()
    a, b = sharing[0], sharing[1]
    za = z[:, block_indices([a], d)]
    missing = [m for m in range(dataset.n_modalities) if m != a]
    zb = p.condition([a], za, d).sample().unflatten(-1, (len(missing), d))[:, missing.index(b)]
    out[f"m{b} from q's block {a} through the prior"] = coherence(model.decode(_with(z, b, zb, d), [b]), [b])
    za_unimodal = model.posterior_net.observed_latents(x, [a], 1, True)[:, 0]  # m_a's own factor's mean only
    zb_mean = p.condition([a], za_unimodal, d).mean.unflatten(-1, (len(missing), d))[:, missing.index(b)]
    out[f"m{b} from the prior's conditional mean given the mean of m{a}'s own factor"] = coherence(
        model.decode(_with(q.mean, b, zb_mean, d), [b]), [b])
    generated = model.conditional_sample(x, [a], 1)[:, 0]
    out[f"m{b} given m{a} (the evaluator's generation)"] = coherence(generated[:, [b]], [b])
    cond = p.condition([a], za[:1], d)
    draws = cond.sample((20_000,))[:, 0]
    out["sampler mean error (max abs)"] = round(float((draws.mean(0) - cond.mean[0]).abs().max()), 4)
    out["sampler covariance error (max abs)"] = round(float((torch.cov(draws.T) - cond.covariance_matrix[0]).abs().max()), 4)
    ia, ib = block_indices([a], d), block_indices([b], d)
    prior_cov = p.covariance_matrix.reshape(-1, *p.covariance_matrix.shape[-2:])[0]
    rho = canonical_correlations(prior_cov, ia, ib)
    out["prior canonical correlations of the label blocks"] = [round(float(c), 3) for c in rho]
    out["prior mutual information of the label blocks (nats; a digit is ln 10 = 2.30)"] = round(
        float(-0.5 * torch.log1p(-rho.clamp(max=1 - 1e-6) ** 2).sum()), 3)
    out["aggregate posterior canonical correlations"] = [round(float(c), 3) for c in canonical_correlations(torch.cov(z.T), ia, ib)]
    out["posterior unimodal factor vs q's block (mean abs)"] = round(float(
        (model.observed_latents(x, [a], 1)[:, 0] - q.mean[:, ia]).abs().mean()), 3)
    kl = model.kl_per_block(x[:1000])
    out["KL per block (nats)"] = [round(float(v), 2) for v in kl]
    loss = model.loss(x[:1000])
    out["reconstruction term"] = round(float(loss.terms["recon"]), 4)
    out["beta x KL"] = round(float(model.config.beta * loss.terms["kl"]), 4)
    return out


def _with(z: torch.Tensor, block: int, value: torch.Tensor, d: int) -> torch.Tensor:
    z = z.clone()
    z[:, block_indices([block], d)] = value
    return z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tuples", type=int, default=2000)
    parser.add_argument("--state", type=Path, help="a `train` state file: the weights of a run still training")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _, dataset, _, _ = load_run(args.run, "cpu") if args.state is None else _from_state(args.run, args.state)
    for key, value in diagnose(model.eval(), dataset, args.tuples).items():
        print(f"{key}: {value}")


def _from_state(staged: Path, state_file: Path):
    """The model of a run still training: its staged config and its last saved state."""
    from mrfbench.datasets import get_benchmark
    from mrfbench.experiment import model_for_data
    from mrfbench.runs import read_json_object

    config = read_json_object(staged / "config.json")
    spec = get_benchmark(config["dataset"])
    dataset = spec.make(**config["dataset_config"])
    options = {k: v for k, v in config["model_config"].items() if k not in ("n_modalities", "modality_dim")}
    model = model_for_data(config["model"], options, spec, dataset)
    model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=False)["state"]["model"])
    return model, spec, dataset, config, torch.device("cpu")


if __name__ == "__main__":
    main()
