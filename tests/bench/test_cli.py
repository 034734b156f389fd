import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mrfbench.cli import app

runner = CliRunner()
TINY = ["--epochs", "2", "--n-train", "256", "--n-val", "64", "--n-test", "32", "--batch-size", "64",
        "--n-unconditional", "2000", "--n-per-tuple", "3", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, pattern):
    assert result.exit_code == 2, result.output
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text
    assert pattern in text, text
    assert len([line for line in result.stderr.strip().splitlines() if line]) == 1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gmrf"
    result = invoke("train", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_help_lists_the_commands():
    result = invoke("--help")
    for command in ("models", "datasets", "train", "evaluate", "sample"):
        assert command in result.output


def test_help_keeps_its_bracketed_defaults_and_the_version_prints():
    """Rich read '[...]' as markup and dropped 19 of 23 hints from --help."""
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "240"}, terminal_width=240)
    assert "[the data set's]" in train.output and "[the cores this process may use]" in train.output
    sweep = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "240"}, terminal_width=240)
    assert "[sqlite file in OUT]" in sweep.output and "[all of the space]" in sweep.output
    assert runner.invoke(app, ["--version"]).output.startswith("mrfbench ")


def test_registries_are_listed():
    listing = invoke("models").output
    for name in ("gmrf", "almrf", "nnmrf", "mrf", "mvae", "mmvae", "mopoe", "mmvaeplus"):
        assert f" {name} " in listing
    assert "(experimental)" in listing
    assert "copula" in invoke("datasets").output


def test_train_writes_a_complete_run(run_dir):
    for name in ("config.json", "history.json", "checkpoint.pt", "metrics.json", "pairplot.png"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["capacity"] == 44 and metrics["unconditional"]["n"] == 2000
    for setting in ("unconditional", "conditional"):
        assert set(metrics[setting]["floor"]) == {"wasserstein_dim1", "wasserstein_dim2", "wasserstein_mean"}
    assert len(metrics["collapse"]["kl_per_block"]) == 4
    assert len(json.loads((run_dir / "history.json").read_text())) == 2


def test_evaluate_reproduces_the_metrics(run_dir):
    before = json.loads((run_dir / "metrics.json").read_text())
    result = invoke("evaluate", run_dir, "--device", "cpu")  # the run's own evaluation settings
    assert result.exit_code == 0, result.output
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["unconditional"] == before["unconditional"]
    assert after["conditional"] == before["conditional"]
    assert after["training"] == before["training"]


def test_evaluate_on_the_validation_split_rescores_the_conditional_figures(run_dir, tmp_path):
    """A search run (choosing beta) is scored on the validation split; the split is recorded and kept."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = json.loads((run / "metrics.json").read_text())
    assert invoke("evaluate", run, "--split", "val", "--device", "cpu").exit_code == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["unconditional"] == before["unconditional"]  # samples of the prior do not see a split
    assert after["conditional"]["wasserstein_mean"] != before["conditional"]["wasserstein_mean"]
    assert after["training"]["eval_split"] == "val" and before["training"]["eval_split"] == "test"
    assert invoke("evaluate", run, "--device", "cpu").exit_code == 0
    assert json.loads((run / "metrics.json").read_text())["conditional"] == after["conditional"]  # its split now
    assert_clean_error(invoke("evaluate", run, "--split", "train"), "unknown evaluation split 'train'")


def test_sample_exports_the_documented_keys(run_dir, tmp_path):
    out = tmp_path / "s.npz"
    result = invoke("sample", run_dir, "--n", 50, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    arrays = np.load(out)
    assert sorted(arrays) == ["conditional_given_0", "conditional_given_1", "conditional_given_2",
                              "conditional_given_3", "unconditional"]
    assert all(arrays[k].shape == (50, 4, 2) for k in arrays)
    # the observed modality holds test values; generated ones vary within a test tuple's repeats
    assert np.all((arrays["conditional_given_2"][:, 2] >= 0) & (arrays["conditional_given_2"][:, 2] <= 1))


def test_training_is_deterministic_on_cpu(run_dir, tmp_path):
    result = invoke("train", "--out", tmp_path / "again", *TINY)
    assert result.exit_code == 0
    first = json.loads((run_dir / "history.json").read_text())
    second = json.loads((tmp_path / "again" / "history.json").read_text())
    assert first == second


def test_finished_runs_are_not_overwritten(run_dir):
    before = (run_dir / "metrics.json").read_bytes()
    assert_clean_error(invoke("train", "--out", run_dir, *TINY), "already holds a finished run")
    assert (run_dir / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'; valid: almrf, gmrf"),
        (["--dataset", "nope"], "unknown data set 'nope'; valid: copula"),
        (["--beta", "0"], "beta must be > 0"),
        (["--beta", "-1"], "beta must be > 0"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--lr-schedule", "step"], "unknown lr schedule"),
        (["--set", "likelihood=poisson"], "unknown likelihood 'poisson'"),
        (["--n-unconditional", "0"], "n unconditional must be >= 1"),
        (["--eval-split", "train"], "unknown evaluation split 'train'; valid: test, val"),
    ],
)
def test_bad_train_input_is_one_clear_line(tmp_path, args, message):
    result = invoke("train", "--out", tmp_path / "x", *TINY, *args)
    assert_clean_error(result, message)
    assert not (tmp_path / "x").exists()  # nothing is written for a rejected run


@pytest.mark.parametrize(("args", "message"), [
    (["cifar"], "unknown data set 'cifar'; valid: copula, mnist3, polymnist"),
    (["polymnist", "--budget", "huge"], "unknown budget 'huge' for polymnist; valid: quick, cpu, paper"),
    (["copula", "--models", "gmrf,vae"], "model(s) vae not in search space copula_quick"),
])
def test_bad_reproduce_input_is_one_clear_line(tmp_path, args, message):
    assert_clean_error(invoke("reproduce", *args, "--out", tmp_path / "sweep"), message)
    assert not any(tmp_path.iterdir())


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_clean_error(invoke("train", "--out", blocker / "run", *TINY), "cannot write to output directory")


def test_missing_and_corrupt_run_directories(run_dir, tmp_path):
    assert_clean_error(invoke("evaluate", tmp_path / "absent"), "does not exist")
    assert_clean_error(invoke("evaluate", tmp_path), "missing config.json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((run_dir / "config.json").read_text())
    (broken / "checkpoint.pt").write_bytes(b"definitely not a checkpoint")
    assert_clean_error(invoke("evaluate", broken), "corrupt checkpoint")
    assert_clean_error(invoke("sample", broken, "--out", tmp_path / "s.npz"), "corrupt checkpoint")
    (broken / "config.json").write_text("{ half a json")
    assert_clean_error(invoke("evaluate", broken), "corrupt")


def test_installed_entry_point_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "mrfbench", "train", "--out", "/tmp/unused", "--model", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown model 'nope'" in proc.stderr


@pytest.mark.parametrize(("model", "extra"), [
    ("mvae", ["--set", "specific_dim=3"]), ("mopoe", ["--set", "dist=laplace"]),
    ("mmvae", ["--set", "objective=dreg", "--set", "n_samples=3"]), ("mmvaeplus", ["--set", "objective=elbo"]),
    ("gmrf", ["--set", "sparsity=0.5", "--set", "likelihood=laplace"]),
    ("almrf", ["--set", "conditional=exact"]),
    ("nnmrf", ["--set", "n_importance=4", "--set", "mh_chains=500", "--set", "mh_burn_in=20",
               "--set", "collapse_samples=500"]),
])
def test_every_model_trains_from_the_cli(tmp_path, model, extra):
    result = invoke("train", "--out", tmp_path / model, "--model", model, *TINY, *extra)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / model / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["unconditional"]["n"] == 2000


def test_options_a_model_lacks_are_rejected(tmp_path):
    assert_clean_error(invoke("train", "--out", tmp_path / "x", "--model", "mvae", "--set", "sparsity=0.5", *TINY),
                       "model 'mvae' has no option(s) sparsity")


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nnmrf", "--set", "n_importance=1"], "n importance must be >= 2"),
    (["--model", "nnmrf", "--set", "n_importance"], "--set takes KEY=VALUE"),
    (["--model", "gmrf", "--set", "colour=red"], "model 'gmrf' has no option(s) colour"),
    (["--model", "almrf", "--set", "conditional=approximate"], "unknown conditional 'approximate'"),
])
def test_bad_model_options_are_one_clear_line(tmp_path, args, message):
    assert_clean_error(invoke("train", "--out", tmp_path / "x", *TINY, *args), message)


def test_numerical_failures_are_one_line_with_exit_1(tmp_path, monkeypatch):
    import torch

    import mrfbench.experiment

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.cholesky: the input is not positive-definite.\nsecond line")

    monkeypatch.setattr(mrfbench.experiment, "run_experiment", fail)
    result = invoke("train", "--out", tmp_path / "x", *TINY)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "numerical failure" in lines[0] and "not positive-definite" in lines[0]
