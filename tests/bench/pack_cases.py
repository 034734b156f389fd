"""The runs the pack tests compare with single runs: every model (and objective or factorised variant) on
a small copula set, 20 steps of a 4-epoch run, and how a single run's step losses are read."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mrfbench.datasets import get_dataset
from mrfbench.models import build_model
from mrfbench.train import TrainConfig, seed_everything, train

FIXTURE = Path(__file__).parent / "fixtures" / "single_run_step_losses.json"
CASES = {
    "gmrf": ("gmrf", {}),
    "gmrf_sparse": ("gmrf", {"sparsity": 0.3}),
    "almrf": ("almrf", {}),
    "nnmrf": ("nnmrf", {"pcd_sweeps": 2}),
    "mvae": ("mvae", {}),
    "mvae_factorised": ("mvae", {"specific_dim": 2}),
    "mopoe": ("mopoe", {}),
    "mopoe_laplace_factorised": ("mopoe", {"dist": "laplace", "specific_dim": 2}),
    "mmvae": ("mmvae", {}),
    "mmvae_iwae": ("mmvae", {"objective": "iwae", "n_samples": 3}),
    "mmvae_dreg": ("mmvae", {"objective": "dreg", "n_samples": 3}),
    "mmvaeplus": ("mmvaeplus", {"n_samples": 3}),
}
SEED, BETA, EPOCHS, BATCH = 3, 0.5, 4, 64  # 320 training tuples: 5 steps an epoch, 20 in all


def case_data() -> dict[str, torch.Tensor]:
    return get_dataset("copula", n_train=5 * BATCH, n_val=100, n_test=16).splits()


def train_config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": EPOCHS, "batch_size": BATCH, "seed": SEED, "device": "cpu", **changes})


def single_run(case: str, data: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """The training step losses and the validation losses of ``case`` trained as ``mrfbench train`` does."""
    name, options = CASES[case]
    seed_everything(SEED)
    model = build_model(name, beta=BETA, **options)
    steps: list[float] = []
    original = model.loss

    def spy(x, beta_scale=1.0):
        out = original(x, beta_scale)
        if model.training:
            steps.append(float(out.loss.detach()))
        return out

    model.loss = spy
    result = train(model, data["train"], data["val"], train_config())
    return {"steps": steps, "val": [record["val_loss"] for record in result.history]}


if __name__ == "__main__":  # records the fixture (run it only on code known to train as the reference)
    data = case_data()
    FIXTURE.write_text(json.dumps({case: single_run(case, data) for case in CASES}, indent=1) + "\n")
