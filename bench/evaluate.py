"""Scoring a trained model on the copula data against the exact copula law, with noise floors.

Every figure is printed beside the same metric computed on exact samples of the same size (its noise
floor): a model cannot be told apart from the truth below that floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrfbench.datasets.copula import CopulaDataset
from mrfbench.errors import UsageError, check_fields
from mrfbench.metrics import kendall_tau_matrix, sliced_wasserstein, w1_between, w1_per_group, w1_to_uniform
from mrfbench.models import MultimodalVAE

SCALE = 1000.0  # the paper reports Wasserstein distances x1000


@dataclass
class EvalConfig:
    n_unconditional: int = 1_000_000
    n_per_tuple: int = 20  # conditional generations per test tuple
    n_joint: int = 100_000  # samples for the sliced Wasserstein distance on the joint 8-D law
    n_projections: int = 200
    n_tau: int = 20_000  # samples for the Kendall's tau matrices
    collapse_threshold: float = 0.05  # nats: a latent block whose mean KL is below this carries nothing
    chunk: int = 100_000
    n_image_tuples: int = 10_000  # image data: test tuples scored (coherence, SSIM, FID)
    inception_weights: str | None = None  # image data: the standard Inception weights, for the paper's FID
    seed: int = 0

    def __post_init__(self):
        check_fields(self)
        for name in ("n_unconditional", "n_per_tuple", "n_joint", "n_projections", "n_tau", "chunk", "n_image_tuples"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")


@torch.no_grad()
def generate_unconditional(model: MultimodalVAE, n: int, device: torch.device, chunk: int) -> np.ndarray:
    """n prior generations as a NumPy array (n, M, F), produced in chunks to bound memory."""
    model.eval()
    parts = [model.sample(min(chunk, n - s)).cpu() for s in range(0, n, chunk)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def generate_conditional(
    model: MultimodalVAE, x: torch.Tensor, observed: list[int], n_per: int, device: torch.device, chunk: int
) -> np.ndarray:
    """n_per generations per tuple of x given its ``observed`` modalities, (B, n_per, M, F)."""
    model.eval()
    step = max(1, chunk // n_per)
    parts = [model.conditional_sample(x[s : s + step].to(device), observed, n_per).cpu() for s in range(0, len(x), step)]
    return torch.cat(parts).numpy()


def _by_coordinate(per_coordinate: np.ndarray) -> dict[str, float]:
    """(..., F=2) distances -> the paper's dim1 / dim2 / mean summary, x1000."""
    flat = per_coordinate.reshape(-1, per_coordinate.shape[-1]) * SCALE
    return {
        "wasserstein_dim1": float(flat[:, 0].mean()),
        "wasserstein_dim2": float(flat[:, 1].mean()),
        "wasserstein_mean": float(flat.mean()),
    }


def _unconditional(model, dataset, cfg, rng, device) -> tuple[dict, np.ndarray]:
    n, m = cfg.n_unconditional, dataset.n_modalities
    generated = generate_unconditional(model, n, device, cfg.chunk)
    exact = dataset.law.sample(n, rng)
    per_coord = w1_to_uniform(generated.reshape(n, -1)).reshape(m, -1)
    floor = w1_to_uniform(exact.reshape(n, -1)).reshape(m, -1)
    result = {"n": n, "unit": "x1000", **_by_coordinate(per_coord)}
    result["per_modality_coordinate"] = (per_coord * SCALE).round(4).tolist()
    result["floor"] = _by_coordinate(floor)
    return result, generated


def _conditional(model, dataset, test, cfg, rng, device) -> dict:
    """Each modality observed in turn from the test set; only the generated columns are scored, against
    exact conditional samples for the same conditioning values (pooled over tuples, as the paper: this sees
    little beyond the marginals, so ``per_tuple`` also scores each tuple's generations against its own)."""
    m, s = dataset.n_modalities, cfg.n_per_tuple
    per, floor, per_tuple, per_tuple_floor = [], [], [], []
    for k in range(m):
        others = [i for i in range(m) if i != k]
        observed = test[:, k].numpy()
        generated = generate_conditional(model, test, [k], s, device, cfg.chunk)[:, :, others]
        exact = dataset.law.conditional_sample(observed, k, s, rng)[:, :, others]
        exact_again = dataset.law.conditional_sample(observed, k, s, rng)[:, :, others]
        flat = lambda a: a.reshape(-1, len(others) * a.shape[-1])  # noqa: E731
        per.append(w1_between(flat(generated), flat(exact)).reshape(len(others), -1))
        floor.append(w1_between(flat(exact_again), flat(exact)).reshape(len(others), -1))
        grouped = lambda a: a.reshape(len(a), s, -1)  # noqa: E731
        per_tuple.append(w1_per_group(grouped(generated), grouped(exact)).reshape(len(others), -1))
        per_tuple_floor.append(w1_per_group(grouped(exact_again), grouped(exact)).reshape(len(others), -1))
    per_arr, floor_arr = np.stack(per), np.stack(floor)  # (M observed, M-1 generated, F)
    result = {"n_test": len(test), "n_per_tuple": s, "unit": "x1000", **_by_coordinate(per_arr)}
    result["per_observed_modality"] = [round(float(v), 4) for v in per_arr.mean(axis=(1, 2)) * SCALE]
    result["floor"] = _by_coordinate(floor_arr)
    result["per_tuple"] = {**_by_coordinate(np.stack(per_tuple)), "floor": _by_coordinate(np.stack(per_tuple_floor))}
    return result


def _dependence(dataset, generated: np.ndarray, cfg, rng) -> dict:
    """Beyond the paper: the joint law (sliced W2) and the rank-correlation matrices (Kendall's tau)."""
    n = min(cfg.n_joint, len(generated))
    joint = generated[:n].reshape(n, -1)
    exact, exact_again = (dataset.law.sample(n, rng).reshape(n, -1) for _ in range(2))
    seed = cfg.seed
    true_tau = dataset.law.kendall_tau()  # (F, M, M)
    iu = np.triu_indices(dataset.n_modalities, 1)

    def tau_errors(sample: np.ndarray) -> np.ndarray:
        return np.stack([kendall_tau_matrix(sample[: cfg.n_tau, :, j])[iu] - true_tau[j][iu] for j in range(sample.shape[-1])])

    err = tau_errors(generated)
    floor = tau_errors(dataset.law.sample(cfg.n_tau, rng))
    return {
        "sliced_wasserstein_x1000": sliced_wasserstein(joint, exact, cfg.n_projections, seed) * SCALE,
        "sliced_wasserstein_floor_x1000": sliced_wasserstein(exact_again, exact, cfg.n_projections, seed) * SCALE,
        "n_joint": n,
        "kendall_tau_mae": float(np.abs(err).mean()),
        "kendall_tau_max_error": float(np.abs(err).max()),
        "kendall_tau_mae_floor": float(np.abs(floor).mean()),
        "n_tau": min(cfg.n_tau, len(generated)),
    }


@torch.no_grad()
def collapse_report(model: MultimodalVAE, test: torch.Tensor, threshold: float, device: torch.device) -> dict:
    """Mean KL per latent block on the test set and which blocks carry (almost) no information."""
    model.eval()
    kl = model.kl_per_block(test.to(device)).cpu().numpy()
    collapsed = [int(i) for i in np.flatnonzero(kl < threshold)]
    return {"kl_per_block": kl.round(4).tolist(), "threshold": threshold, "collapsed_blocks": collapsed,
            "collapsed": bool(collapsed)}


def evaluate_copula(
    model: MultimodalVAE, dataset: CopulaDataset, test: torch.Tensor, cfg: EvalConfig, device: torch.device
) -> tuple[dict, np.ndarray]:
    """All copula metrics of ``model``; also returns the unconditional generations (for plots)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    unconditional, generated = _unconditional(model, dataset, cfg, rng, device)
    metrics = {
        "unconditional": unconditional,
        "conditional": _conditional(model, dataset, test, cfg, rng, device),
        "dependence": _dependence(dataset, generated, cfg, rng),
        "collapse": collapse_report(model, test, cfg.collapse_threshold, device),
    }
    return metrics, generated
