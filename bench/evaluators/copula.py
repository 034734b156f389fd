"""The copula evaluator (the paper's Table 2): a model scored against the exact copula law, each figure
beside its noise floor (the same metric on exact samples of the same size: a model cannot be told apart
from the truth below it), plus the dependence between modalities that the paper's per-coordinate metric
cannot see, and a pair plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from mrfbench.evaluate import EvalConfig, collapse_report, generate_conditional, generate_unconditional, report_rows
from mrfbench.evaluators.figures import Evaluator, Figure, register_evaluator
from mrfbench.evaluators.metrics import kendall_tau_matrix, sliced_wasserstein, w1_to_reference, w1_to_uniform
from mrfbench.models import MultimodalVAE
from mrfbench.plots import copula_pair_plot
from mrfbench.runs import PAIRPLOT_FILE

SCALE = 1000.0  # the paper reports Wasserstein distances x1000
PROXY_SAMPLES = 20_000


def _by_coordinate(per_coordinate: np.ndarray) -> dict[str, float]:
    """(..., F=2) distances -> the paper's dim1 / dim2 / mean summary, x1000."""
    flat = per_coordinate.reshape(-1, per_coordinate.shape[-1]) * SCALE
    return {
        "wasserstein_dim1": float(flat[:, 0].mean()),
        "wasserstein_dim2": float(flat[:, 1].mean()),
        "wasserstein_mean": float(flat.mean()),
    }


def _unconditional(model, dataset, cfg, rng, device, sampler: dict | None = None) -> tuple[dict, np.ndarray]:
    n, m = cfg.n_unconditional, dataset.n_modalities
    generated = generate_unconditional(model, n, device, cfg.chunk, sampler)
    exact = dataset.law.sample(n, rng)
    per_coord = w1_to_uniform(generated.reshape(n, -1)).reshape(m, -1)
    floor = w1_to_uniform(exact.reshape(n, -1)).reshape(m, -1)
    result = {"n": n, "unit": "x1000", **_by_coordinate(per_coord)}
    result["per_modality_coordinate"] = (per_coord * SCALE).round(4).tolist()
    result["floor"] = _by_coordinate(floor)
    return result, generated


def _conditional(model, dataset, test, cfg, rng, device, sampler: dict | None = None) -> dict:
    """Each modality observed in turn from the test set; only the generated columns are scored, against
    exact conditional samples for the same conditioning values (pooled over tuples, as the paper: this sees
    little beyond the marginals, so ``per_tuple`` also scores each tuple's generations against its own)."""
    m, s = dataset.n_modalities, cfg.n_per_tuple
    pooled, grouped = [], []  # per observed modality: W1 of the model's and of the floor's generations
    for k in range(m):
        others = [i for i in range(m) if i != k]
        observed = test[:, k].numpy()
        generated = generate_conditional(model, test, [k], s, device, cfg.chunk, sampler)[:, :, others]
        exact = dataset.law.conditional_sample(observed, k, s, rng)[:, :, others]
        exact_again = dataset.law.conditional_sample(observed, k, s, rng)[:, :, others]
        samples = (exact, generated, exact_again)  # each (B, s, M-1, F)
        pooled.append(w1_to_reference(*(a.reshape(len(a) * s, -1) for a in samples)))
        grouped.append(w1_to_reference(*(a.reshape(len(a), s, -1) for a in samples), axis=1))
    shape = (m, 2, m - 1, -1)  # (M observed, model or floor, M-1 generated, F)
    (per_arr, floor_arr), per_tuple = np.moveaxis(np.reshape(pooled, shape), 1, 0), np.reshape(grouped, shape)
    result = {"n_test": len(test), "n_per_tuple": s, "unit": "x1000", **_by_coordinate(per_arr)}
    result["per_observed_modality"] = [round(float(v), 4) for v in per_arr.mean(axis=(1, 2)) * SCALE]
    result["floor"] = _by_coordinate(floor_arr)
    result["per_tuple"] = {**_by_coordinate(per_tuple[:, 0]), "floor": _by_coordinate(per_tuple[:, 1])}
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
    sliced, sliced_floor = sliced_wasserstein(exact, joint, exact_again, n_projections=cfg.n_projections, seed=seed)
    return {
        "sliced_wasserstein_x1000": sliced * SCALE,
        "sliced_wasserstein_floor_x1000": sliced_floor * SCALE,
        "n_joint": n,
        "kendall_tau_mae": float(np.abs(err).mean()),
        "kendall_tau_max_error": float(np.abs(err).max()),
        "kendall_tau_mae_floor": float(np.abs(floor).mean()),
        "n_tau": min(cfg.n_tau, len(generated)),
    }


def evaluate_copula(
    model: MultimodalVAE, dataset, test: torch.Tensor, cfg: EvalConfig, device: torch.device
) -> tuple[dict, np.ndarray]:
    """All copula metrics of ``model`` (its sampler's figures, such as MCMC acceptance rates, as "sampler");
    also returns the unconditional generations (for plots)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    sampler = {}
    unconditional, generated = _unconditional(model, dataset, cfg, rng, device, sampler)
    metrics = {
        "unconditional": unconditional,
        "conditional": _conditional(model, dataset, test, cfg, rng, device, sampler),
        "dependence": _dependence(dataset, generated, cfg, rng),
        "collapse": collapse_report(model, test, cfg.collapse_threshold, device),
    }
    return {**metrics, **({"sampler": sampler} if sampler else {})}, generated


def score(model: MultimodalVAE, dataset, data: torch.Tensor, split: str, cfg: EvalConfig, device, out: Path) -> dict:
    """Every copula figure of ``model`` on ``data`` (the ``split`` of ``dataset``); writes the pair plot."""
    scores, generated = evaluate_copula(model, dataset, data.cpu(), cfg, device)
    title = (f"{model.name}, beta={model.config.beta:.3g}, seed {cfg.seed}: W1 x1000 unconditional "
             f"{scores['unconditional']['wasserstein_mean']:.2f}, conditional {scores['conditional']['wasserstein_mean']:.2f} "
             f"({split}); generated in blue, exact in orange")
    copula_pair_plot(data.cpu().numpy(), generated, out / PAIRPLOT_FILE, title=title)
    return scores


@torch.no_grad()
def proxy(model: MultimodalVAE) -> float:
    """The per-epoch score for ASHA: unconditional W1 x1000 of 20k samples against the exact marginals."""
    model.eval()
    samples = model.sample(PROXY_SAMPLES).reshape(PROXY_SAMPLES, -1).cpu().numpy()
    return float(np.mean(w1_to_uniform(samples)) * SCALE)


def details(metrics: dict) -> list[Table]:
    """What the figures do not say: the sample sizes behind them, the largest Kendall tau error, the collapse
    report and the sampler's own figures."""
    unconditional, conditional, dependence = metrics["unconditional"], metrics["conditional"], metrics["dependence"]
    table = Table("", "value", title=f"{metrics['model']}: sample sizes, dependence, collapse")
    table.add_row("unconditional samples", f"{unconditional['n']:,}")
    table.add_row("conditional generations", f"{conditional['n_test']:,} tuples x {conditional['n_per_tuple']}")
    table.add_row("joint law and Kendall tau samples", f"{dependence['n_joint']:,}, {dependence['n_tau']:,}")
    table.add_row("Kendall tau max abs error", f"{dependence['kendall_tau_max_error']:.4f}")
    for row in report_rows(metrics):
        table.add_row(*row)
    return [table]


def _w1(key: str, title: str, source: tuple[str, ...] = (), floor: str | None = None) -> Figure:
    return Figure(key, title, source, unit="x1000", floor=floor)


def _floor(setting: str, d: str, title: str = "") -> Figure:
    return _w1(f"{setting}/floor_wasserstein_{d}", title or f"floor {setting} {d}", (setting, "floor", f"wasserstein_{d}"))


def _per_tuple(d: str, title: str = "", floor: bool = False) -> Figure:
    return _w1(f"conditional/{'floor_' if floor else ''}per_tuple_wasserstein_{d}",
               title or f"{'floor ' if floor else ''}per-tuple {d}",
               ("conditional", "per_tuple", *(("floor",) if floor else ()), f"wasserstein_{d}"),
               None if floor else f"conditional/floor_per_tuple_wasserstein_{d}")


_SETTINGS = (("unconditional", "uncond"), ("conditional", "cond"))

register_evaluator(Evaluator(
    dataset="copula", score=score, details=details, proxy=proxy,
    paper=tuple(_w1(f"{setting}/wasserstein_{d}", f"{short} {d}", floor=f"{setting}/floor_wasserstein_{d}")
                for setting, short in _SETTINGS for d in ("dim1", "dim2", "mean")),
    score_parts=("unconditional/wasserstein_mean", "conditional/wasserstein_mean"), score_direction="lower",
    bounds=(_floor("unconditional", "mean", "floor uncond"), _floor("conditional", "mean", "floor cond"),
            _per_tuple("mean", "floor per-tuple", floor=True)),
    beyond=(_per_tuple("mean", "cond per-tuple"),
            Figure("dependence/kendall_tau_mae", "Kendall tau MAE", floor="dependence/kendall_tau_mae_floor"),
            _w1("dependence/sliced_wasserstein_x1000", "joint SW", floor="dependence/sliced_wasserstein_floor_x1000")),
    recorded=(*(_floor(setting, d) for setting, _ in _SETTINGS for d in ("dim1", "dim2")),
              *(_per_tuple(d, floor=floor) for floor in (False, True) for d in ("dim1", "dim2")),
              _w1("dependence/sliced_wasserstein_floor_x1000", "joint SW floor"),
              Figure("dependence/kendall_tau_max_error", "Kendall tau max error"),
              Figure("dependence/kendall_tau_mae_floor", "Kendall tau MAE floor"),
              Figure("unconditional/n", "unconditional samples"), Figure("conditional/n_test", "conditioning tuples"),
              Figure("conditional/n_per_tuple", "generations per tuple"), Figure("dependence/n_joint", "joint samples"),
              Figure("dependence/n_tau", "Kendall tau samples")),
))
