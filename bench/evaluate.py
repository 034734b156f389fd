"""What every evaluator shares: the evaluation settings, generation in chunks and the posterior-collapse
report. The evaluators themselves (one per metric family) are in ``mrfbench.evaluators``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrfbench.errors import bounded, check_fields
from mrfbench.models import MultimodalVAE


@dataclass
class EvalConfig:
    n_unconditional: int = bounded(1_000_000, ge=1)
    n_per_tuple: int = bounded(20, ge=1)  # conditional generations per test tuple
    n_joint: int = bounded(100_000, ge=1)  # samples for the sliced Wasserstein distance on the joint 8-D law
    n_projections: int = bounded(200, ge=1)
    n_tau: int = bounded(20_000, ge=1)  # samples for the Kendall's tau matrices
    collapse_threshold: float = bounded(0.05, ge=0)  # nats: a latent block whose mean KL is below this carries nothing
    chunk: int = bounded(100_000, ge=1)
    n_image_tuples: int = bounded(10_000, ge=1)  # image data: test tuples scored (coherence, SSIM, FID)
    inception_weights: str | None = None  # image data: the standard Inception weights, for the paper's FID
    seed: int = 0

    def __post_init__(self):
        check_fields(self)


@torch.no_grad()
def generate_unconditional(model: MultimodalVAE, n: int, device: torch.device, chunk: int,
                           diagnostics: dict | None = None) -> np.ndarray:
    """n prior generations as a NumPy array (n, M, F), produced in chunks to bound memory; the sampler's
    figures (``MultimodalVAE.sample``) go into ``diagnostics``."""
    model.eval()
    parts = [model.sample(min(chunk, n - s), diagnostics).cpu() for s in range(0, n, chunk)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def generate_conditional(
    model: MultimodalVAE, x: torch.Tensor, observed: list[int], n_per: int, device: torch.device, chunk: int,
    diagnostics: dict | None = None,
) -> np.ndarray:
    """n_per generations per tuple of x given its ``observed`` modalities, (B, n_per, M, F); the sampler's
    figures go into ``diagnostics``."""
    model.eval()
    step = max(1, chunk // n_per)
    parts = [model.conditional_sample(x[s : s + step].to(device), observed, n_per, diagnostics).cpu()
             for s in range(0, len(x), step)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def collapse_report(model: MultimodalVAE, test: torch.Tensor, threshold: float, device: torch.device) -> dict:
    """Mean KL per latent block on the test set and which blocks carry (almost) no information."""
    model.eval()
    kl = model.kl_per_block(test.to(device)).cpu().numpy()
    collapsed = [int(i) for i in np.flatnonzero(kl < threshold)]
    return {"kl_per_block": kl.round(4).tolist(), "threshold": threshold, "collapsed_blocks": collapsed,
            "collapsed": bool(collapsed)}


def report_rows(metrics: dict) -> list[tuple[str, str]]:
    """A run's collapse report and its sampler's own figures, as (what, value) rows for the terminal."""
    collapse = metrics.get("collapse")
    rows = [] if collapse is None else [
        ("KL per latent block (nats)", ", ".join("-" if v is None else f"{v:.2f}" for v in collapse["kl_per_block"])),
        ("posterior collapse", f"YES: blocks {collapse['collapsed_blocks']}" if collapse["collapsed"] else "no")]
    return rows + [(name.replace("_", " "), f"{value:.3f}") for name, value in metrics.get("sampler", {}).items()]
