"""A data set is one module and its spec, a model one module, a metric one function: a toy data set, a
model and a metric registered from outside the package (``MRFBENCH_PLUGINS``) run through train, evaluate,
an Optuna search (without a per-epoch proxy) and the leaderboard, with no other file edited."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mrfbench.datasets import BENCHMARKS, get_benchmark
from mrfbench.errors import UsageError
from mrfbench.evaluators import get_evaluator

TOY = '''
"""Two 1-D modalities, jointly Gaussian with correlation 0.8: a law known exactly."""

from dataclasses import dataclass

import numpy as np
import torch
from rich.table import Table
from scipy.stats import wasserstein_distance

from mrfbench.datasets import Benchmark, register_benchmark
from mrfbench.errors import check_fields
from mrfbench.evaluate import collapse_report
from mrfbench.evaluators import Evaluator, Figure, Metric, register_evaluator, register_metric
from mrfbench.models import register_model
from mrfbench.models.gmrf import GMRFMVAE

RHO = 0.8


@dataclass
class ToyConfig:
    n_train: int = 512
    n_val: int = 128
    n_test: int = 128
    seed: int = 0

    def __post_init__(self):
        check_fields(self)


def exact(n, rng):
    return rng.multivariate_normal([0.0, 0.0], [[1.0, RHO], [RHO, 1.0]], n).astype(np.float32)[:, :, None]


class ToyGaussian:
    n_modalities, modality_shape = 2, (1,)

    def __init__(self, config):
        self.config = config

    def splits(self):
        rng = np.random.default_rng(self.config.seed)
        c = self.config
        return {name: torch.from_numpy(exact(n, rng)) for name, n in (("train", c.n_train), ("val", c.n_val), ("test", c.n_test))}


@torch.no_grad()
def marginal_w1(model):
    model.eval()
    generated = model.sample(2000).reshape(2000, 2).cpu().numpy()
    truth = exact(2000, np.random.default_rng(1)).reshape(2000, 2)
    return float(np.mean([wasserstein_distance(generated[:, i], truth[:, i]) for i in range(2)]))


@torch.no_grad()
def score(model, dataset, data, split, cfg, device, out):
    """W1 of the marginals, and of modality 2 given modality 1 against its exact conditional law."""
    given = model.conditional_sample(data.to(device), [0], 1)[:, 0, 1, 0].cpu().numpy()
    residual = given - RHO * data[:, 0, 0].numpy()
    reference = np.random.default_rng(cfg.seed).normal(0.0, (1 - RHO**2) ** 0.5, 5000)
    return {"unconditional": {"w1": marginal_w1(model)},
            "conditional": {"w1": float(wasserstein_distance(residual, reference))},
            "collapse": collapse_report(model, data, cfg.collapse_threshold, device)}


def details(metrics):
    table = Table("setting", "W1", title=f"{metrics['model']} on the toy Gaussian")
    for setting in ("unconditional", "conditional"):
        table.add_row(setting, f"{metrics[setting]['w1']:.3f}")
    return [table]


@torch.no_grad()
def correlation_error(model, dataset, data, cfg, device):
    """|correlation of 2,000 draws - RHO|: a figure added from outside the evaluator."""
    model.eval()
    generated = model.sample(2000).reshape(2000, 2).cpu().numpy()
    return abs(float(np.corrcoef(generated.T)[0, 1]) - RHO)


register_metric(Metric("toygauss", "dependence", "corr_error", "corr error", correlation_error))


@register_model("toymrf")
class ToyMRF(GMRFMVAE):
    description = "the GMRF, registered by a plugin"


register_benchmark(Benchmark(
    name="toygauss", description="two correlated Gaussian modalities", dataset=ToyGaussian, config=ToyConfig,
    architecture="mlp", table="none", notes="W1 against the exact law, lower is better."))
register_evaluator(Evaluator(  # no per-epoch proxy: a search reports losses each epoch and its score at the end
    dataset="toygauss", score=score, details=details,
    paper=(Figure("unconditional/w1", "uncond W1"), Figure("conditional/w1", "cond W1")),
    score_parts=("unconditional/w1", "conditional/w1"), score_direction="lower"))
'''

SPACE = """
dataset: toygauss
epochs: 2
seeds: 2
params:
  beta: {choice: [1.0, 0.5]}
models:
  gmrf:
    latent_dim: 1
  toymrf:
    latent_dim: 1
"""


def test_a_spec_names_its_own_errors():
    assert set(BENCHMARKS) >= {"copula", "polymnist", "mnist3"}
    with pytest.raises(UsageError, match="unknown data set 'nope'"):
        get_benchmark("nope")
    with pytest.raises(UsageError, match="has no option"):
        get_benchmark("copula").make(colour="red")
    assert get_evaluator("copula").objective({"unconditional/wasserstein_mean": 2.0, "conditional/wasserstein_mean": 4.0}) == 3.0
    assert get_evaluator("mnist3").objective({"unconditional/coherence": 0.5, "conditional/coherence": 0.7}) == pytest.approx(0.4)


@pytest.mark.slow
def test_a_data_set_from_one_module_runs_every_command(tmp_path):
    (tmp_path / "toy_gauss.py").write_text(textwrap.dedent(TOY))
    (tmp_path / "toy.yaml").write_text(SPACE)
    env = {**os.environ, "MRFBENCH_PLUGINS": "toy_gauss", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}

    def mrfbench(*args):
        proc = subprocess.run([sys.executable, "-m", "mrfbench", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    listed = mrfbench("datasets")
    assert "toygauss" in listed and "toymrf" in mrfbench("models")
    trained = mrfbench("train", "--dataset", "toygauss", "--out", tmp_path / "run", "--epochs", "2", "--set",
                       "latent_dim=1", "--n-train", "256", "--device", "cpu")
    assert "on the toy Gaussian" in trained and (tmp_path / "run" / "metrics.json").exists()
    added = json.loads((tmp_path / "run" / "metrics.json").read_text())["dependence"]["corr_error"]
    assert 0.0 <= added <= 1.8
    assert "on the toy Gaussian" in mrfbench("evaluate", tmp_path / "run", "--device", "cpu")
    mrfbench("sweep", "--space", tmp_path / "toy.yaml", "--out", tmp_path / "sweep", "--trials", "2", "--device", "cpu")
    board = (tmp_path / "sweep" / "leaderboard.md").read_text()
    assert board.startswith("# toygauss leaderboard") and "| uncond W1 | cond W1 |" in board
    assert "| gmrf |" in board and "| toymrf |" in board
    header, rule, first = next(board.split("\n")[i : i + 3] for i, line in enumerate(board.split("\n"))
                               if line.startswith("| model |"))
    column = [cell.strip() for cell in header.split("|")].index("corr error")
    assert first.split("|")[column].strip(" *")[0].isdigit()  # the added figure, measured (bold: the best)
    mrfbench("leaderboard", tmp_path / "sweep")
    assert "needs a per-epoch score" in subprocess.run(
        [sys.executable, "-m", "mrfbench", "sweep", "--space", tmp_path / "toy.yaml", "--out", tmp_path / "asha",
         "--asha"], cwd=tmp_path, env=env, capture_output=True, text=True).stderr
