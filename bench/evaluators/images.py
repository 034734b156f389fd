"""The image evaluator (PolyMNIST, MNIST-3; the paper's Tables 1 and 4): coherence through the digit
classifiers the suite trains, FID (``evaluators.fid``), SSIM (``evaluators.ssim``), the posterior-collapse
report, and a grid of conditional generations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from mrfbench.datasets.classifiers import CLASSIFIERS_DIR, DigitClassifier, modality_classifiers, predict
from mrfbench.evaluate import EvalConfig, collapse_report, report_rows
from mrfbench.evaluators.fid import fid
from mrfbench.evaluators.figures import Evaluator, Figure, register_evaluator
from mrfbench.evaluators.ssim import ssim
from mrfbench.models.latent import nonempty_subsets
from mrfbench.plots import image_grid
from mrfbench.runs import SAMPLE_GRID_FILE


def conditional_coherence(generate: Callable[[torch.Tensor, list[int]], torch.Tensor], x: torch.Tensor,
                          labels: torch.Tensor, classifiers: list[DigitClassifier],
                          sharing: list[int] | None = None) -> dict:
    """For every non-empty proper subset of observed modalities, ``generate(x, observed)`` -> (N, M, C, H, W)
    generations; coherence is the fraction of generated (unobserved) modalities whose predicted digit is the
    label. Only the modalities in ``sharing`` (default: all) carry the label: a subset is scored when it
    observes one of them, on the unobserved ones among them (MNIST-3: modalities 1 and 2; its third digit is
    independent, so no generation of it can be right or wrong). ``generate`` is called for every subset.
    Returns the mean per subset size ("size_k") and over all scored subsets ("mean")."""
    n_modalities = x.shape[1]
    sharing = list(range(n_modalities)) if sharing is None else sharing
    per_size: dict[int, list[float]] = {}
    for observed in proper_subsets(n_modalities):
        generated = generate(x, observed)
        targets = [m for m in sharing if m not in observed] if set(observed) & set(sharing) else []
        if targets:
            hits = [(predict(classifiers[m], generated[:, m]) == labels).float().mean().item() for m in targets]
            per_size.setdefault(len(observed), []).append(float(np.mean(hits)))
    out = {f"size_{k}": float(np.mean(v)) for k, v in sorted(per_size.items())}
    out["mean"] = float(np.mean([h for v in per_size.values() for h in v]))
    return out


def proper_subsets(n_modalities: int) -> list[list[int]]:
    """The observed sets of conditional generation: every non-empty proper subset, by size."""
    return [[int(i) for i in torch.nonzero(mask).flatten()] for mask in nonempty_subsets(n_modalities)[:-1]]


def unconditional_coherence(samples: torch.Tensor, classifiers: list[DigitClassifier],
                            sharing: list[int] | None = None) -> float:
    """Fraction of joint generations (N, M, C, H, W) whose label-sharing modalities (default: all) are
    predicted as one digit."""
    sharing = list(range(samples.shape[1])) if sharing is None else sharing
    predictions = torch.stack([predict(classifiers[m], samples[:, m]) for m in sharing], 1)
    return float((predictions == predictions[:, :1]).all(1).float().mean())


def to_images(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Model outputs (..., M, C * 784) in [0, 1] -> uint8 images (..., M, C, 28, 28)."""
    return (flat.clamp(0, 1) * 255).round().to(torch.uint8).reshape(*flat.shape[:-1], *shape)


@torch.no_grad()
def evaluate_images(model, dataset, test: torch.Tensor, labels: torch.Tensor, n_tuples: int, chunk: int,
                    device: torch.device, inception_weights: str | None = None) -> tuple[dict, torch.Tensor]:
    """Paper Table 1 metrics on the first ``n_tuples`` test tuples, as "unconditional" and "conditional"
    sections: coherence, FID per modality and their mean (``fid_suite``; also the paper's Inception ``fid``
    when ``inception_weights`` is given), SSIM of conditional generations against the true images. A
    modality's conditional FID pools its generations over every subset that leaves it out, each test tuple
    once (tuple i from the (i mod c)-th of those c subsets). Noise floor: the FID between the two halves of
    the real test images; ceiling of coherence: the classifiers' test accuracy. Also returns the uint8
    unconditional generations."""
    model.eval()
    classifiers, accuracies = modality_classifiers(dataset.build_dir)
    sharing = list(dataset.label_sharing or range(dataset.n_modalities))
    shape, n = dataset.modality_shape, min(n_tuples, len(test))
    x, y = test[:n], labels[:n]
    truth = to_images(x, shape)
    sampler = {}  # the model's sampler figures (MCMC acceptance rates), where it has any
    samples = torch.cat([to_images(model.sample(min(chunk, n - s), sampler).cpu(), shape) for s in range(0, n, chunk)])
    subsets = proper_subsets(truth.shape[1])
    leaving_out = {m: [i for i, o in enumerate(subsets) if m not in o] for m in range(truth.shape[1])}
    pooled, similarities = torch.empty_like(truth), []

    def generate(data: torch.Tensor, observed: list[int]) -> torch.Tensor:
        parts = [model.conditional_sample(data[s : s + chunk].to(device), observed, 1, sampler)[:, 0].cpu()
                 for s in range(0, len(data), chunk)]
        generated = to_images(torch.cat(parts), shape)
        missing = [m for m in range(data.shape[1]) if m not in observed]
        similarities.append(ssim(generated[:, missing].flatten(0, 1), truth[:, missing].flatten(0, 1)))
        for m in missing:
            rows = slice(leaving_out[m].index(subsets.index(observed)), None, len(leaving_out[m]))
            pooled[rows, m] = generated[rows, m]
        return generated

    def fids(generated: torch.Tensor, reference: torch.Tensor) -> dict:
        per = [{**fid(reference[:, m], generated[:, m], suite_classifier=dataset.build_dir / CLASSIFIERS_DIR / f"m{m}.pt"),
                **(fid(reference[:, m], generated[:, m], inception_weights) if inception_weights else {})}
               for m in range(reference.shape[1])]
        out = {}
        for key in per[0]:
            out[key], out[f"{key}_per_modality"] = float(np.mean([p[key] for p in per])), [p[key] for p in per]
        return out

    y_shared = y if y.ndim == 1 else y[:, sharing[0]]
    coherence = conditional_coherence(generate, x, y_shared, classifiers, sharing)
    half = n // 2
    floor = {k: v for k, v in fids(truth[half : 2 * half], truth[:half]).items() if not k.endswith("_per_modality")}
    metrics = {
        "n_tuples": n,
        "label_sharing": sharing,
        "classifier_test_accuracy": [round(a, 4) for a in accuracies],
        "unconditional": {"coherence": unconditional_coherence(samples, classifiers, sharing),
                          **fids(samples, truth), "floor": floor},
        "conditional": {"coherence": coherence["mean"], "coherence_by_size": coherence, **fids(pooled, truth),
                        "ssim": float(np.mean(similarities)), "floor": floor,
                        "ceiling": {"coherence": float(np.mean([accuracies[m] for m in sharing]))}},
        **({"sampler": sampler} if sampler else {}),
    }
    return metrics, samples


def score(model, dataset, data: torch.Tensor, split: str, cfg: EvalConfig, device, out: Path) -> dict:
    """Coherence, SSIM, FID and collapse of an image model on ``data`` (the ``split`` of ``dataset``); writes
    the sample grid (inputs of modality 0, then the generations of the others given it)."""
    torch.manual_seed(cfg.seed)
    scores, _ = evaluate_images(model, dataset, data.cpu(), dataset.labels()[split], cfg.n_image_tuples,
                                max(1, cfg.chunk // 100), device, cfg.inception_weights)
    scores["collapse"] = collapse_report(model, data[:1000], cfg.collapse_threshold, device)
    with torch.no_grad():
        given_first = model.conditional_sample(data[:8].to(device), [0], 1)[:, 0].cpu()
    shape = dataset.modality_shape
    image_grid(to_images(data[:8, 0].cpu(), shape).numpy(),
               to_images(given_first[:, 1:], shape).transpose(0, 1).numpy(), out / SAMPLE_GRID_FILE)
    return scores


def details(metrics: dict) -> list[Table]:
    """What the figures do not say: coherence by how many modalities are given, the classifiers' accuracy,
    the collapse report and the sampler's own figures."""
    table = Table("", "value", title=f"{metrics['model']}: {metrics['n_tuples']:,} test tuples, coherence by "
                                     "modalities given, classifiers, collapse")
    for key, value in metrics["conditional"]["coherence_by_size"].items():
        if key != "mean":
            table.add_row(f"conditional coherence given {key.removeprefix('size_')} modalities", f"{value:.3f}")
    table.add_row("classifier test accuracy", ", ".join(f"{v:.3f}" for v in metrics["classifier_test_accuracy"]))
    for row in report_rows(metrics):
        table.add_row(*row)
    return [table]


SETTINGS = (("unconditional", "uncond"), ("conditional", "cond"))


def _floor(setting: str, metric: str, title: str, optional: bool = False) -> Figure:
    return Figure(f"{setting}/floor_{metric}", title, (setting, "floor", metric), optional=optional)


def _evaluator(dataset: str, n_modalities: int, ssim_in_paper: bool) -> Evaluator:
    """Coherence and FID as the paper's columns (FID: the Inception one, else fid_suite, marked), SSIM in
    the paper's table (PolyMNIST) or beyond it (MNIST-3); each FID with its floor, the conditional coherence
    with its ceiling. No per-epoch proxy: coherence and FID need the full test pass."""
    ssim_figure = Figure("conditional/ssim", "cond ssim", better="higher")
    by_size = tuple(Figure(f"conditional/coherence_by_size_{size}", f"cond coherence, {size}",
                           ("conditional", "coherence_by_size", size), better="higher", optional=True)
                    for size in (*(f"size_{k}" for k in range(1, n_modalities)), "mean"))
    ceiling = Figure("conditional/ceiling_coherence", "coherence ceiling", ("conditional", "ceiling", "coherence"),
                     better="higher")
    paper = tuple(figure for setting, short in SETTINGS for figure in (
        Figure(f"{setting}/fid", f"{short} fid", fallback=f"{setting}/fid_suite", optional=True,
               floor=f"{setting}/floor_fid"),
        Figure(f"{setting}/coherence", f"{short} coherence", better="higher",
               ceiling=ceiling.key if setting == "conditional" else None)))
    return Evaluator(
        dataset=dataset, score=score, details=details,
        paper=paper + ((ssim_figure,) if ssim_in_paper else ()),
        score_parts=("unconditional/coherence", "conditional/coherence"), score_direction="higher",
        bounds=(_floor("unconditional", "fid_suite", "fid_suite floor"), ceiling),
        beyond=() if ssim_in_paper else (ssim_figure,),
        recorded=(*(Figure(f"{setting}/fid_suite", f"{short} fid_suite", floor=f"{setting}/floor_fid_suite")
                    for setting, short in SETTINGS),
                  _floor("unconditional", "fid", "uncond FID floor", optional=True),
                  _floor("conditional", "fid_suite", "cond fid_suite floor"),
                  _floor("conditional", "fid", "cond FID floor", optional=True), *by_size))


for _dataset, _modalities, _ssim_in_paper in (("polymnist", 5, True), ("mnist3", 3, False)):
    register_evaluator(_evaluator(_dataset, _modalities, _ssim_in_paper))
