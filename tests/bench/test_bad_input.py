"""Bad input to every command, as a hostile user would give it: each is refused with exit code != 0, one
line on stderr and no traceback, and every file that existed before is byte-identical afterwards."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mrfbench.cli import app

TINY = ["--epochs", "1", "--n-train", "128", "--n-val", "32", "--n-test", "16", "--batch-size", "64",
        "--n-unconditional", "1000", "--n-per-tuple", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A finished run (RUN), a plain file (AFILE) and run directories damaged in the ways of the issue."""
    root = tmp_path_factory.mktemp("bad-input")
    result = CliRunner().invoke(app, ["train", "--out", str(root / "RUN"), *TINY])
    assert result.exit_code == 0, result.output
    (root / "AFILE").write_text("a plain file\n")
    (root / "NANSPACE.yaml").write_text("dataset: copula\nparams:\n  beta: {grid: [1.0, .nan]}\nmodels:\n  gmrf: {}\n")
    (root / "BADGRID.yaml").write_text("dataset: copula\nmodels:\n  gmrf:\n    sparsity: {grid: [0.0, 1.5]}\n"
                                      "    latent_dim: {choice: [2, 0]}\n")
    for name, metrics in (("EMPTYLIST", "[]"), ("NULL", "null")):
        damaged = root / name
        damaged.mkdir()
        for f in ("config.json", "checkpoint.pt"):
            (damaged / f).write_bytes((root / "RUN" / f).read_bytes())
        (damaged / "metrics.json").write_text(metrics)
    for name, settings in (("BROKENSWEEP", "{ half a json"), ("SPACELESS", '{"out": "x"}'),
                           ("EMPTYTRIAL", '{"out": "x", "space": "copula_quick"}')):
        (root / name / "trial_0").mkdir(parents=True)
        (root / name / "sweep.json").write_text(settings)
    (root / "EMPTYTRIAL" / "trial_0" / "trial.json").write_text("")
    (root / "BADDB").mkdir()
    (root / "BADDB" / "sweep.json").write_text('{"out": "x", "space": "copula_quick", "grid": true}')
    (root / "BADDB" / "optuna.db").write_bytes(b"half a database" * 50)
    (root / "NOTZIP.npz").write_text("not a zip archive\n")
    (root / "DUPKEY.yaml").write_text("dataset: copula\nmodels:\n  gmrf: {}\nmodels:\n  mvae: {}\n")
    (root / "NOTUTF8.yaml").write_bytes(b"dataset: \xff\xfe\n")
    (root / "ADIR.yaml").mkdir()
    (root / "HUGEGRID.yaml").write_text("dataset: copula\nmodels:\n  gmrf:\n    lr: {grid: [%s]}\n    beta: {grid: [%s]}\n"
                                       % (",".join(f"{i + 1}e-4" for i in range(200)), ",".join(str(i + 1) for i in range(100))))
    rng = np.random.default_rng(0)
    digits = {"x_train": rng.integers(0, 255, (20, 28, 28)), "y_train": np.arange(20) % 10,
              "x_test": rng.integers(0, 255, (10, 28, 28)), "y_test": np.arange(10)}
    np.savez(root / "DIGITS.npz", **digits)
    np.savez(root / "BADSHAPE.npz", **{**digits, "x_train": rng.integers(0, 255, (20, 27, 27))})
    np.savez(root / "BADLABELS.npz", **{**digits, "y_train": np.arange(20)})
    negative = root / "NEGTEST"
    negative.mkdir()
    for f in ("metrics.json", "checkpoint.pt"):
        (negative / f).write_bytes((root / "RUN" / f).read_bytes())
    config = json.loads((root / "RUN" / "config.json").read_text())
    config["dataset_config"]["n_test"] = -1
    (negative / "config.json").write_text(json.dumps(config))
    mixed = root / "MIXED" / "run"  # an MVAE's config beside a GMRF's metrics and checkpoint
    mixed.mkdir(parents=True)
    for f in ("metrics.json", "checkpoint.pt"):
        (mixed / f).write_bytes((root / "RUN" / f).read_bytes())
    (mixed / "config.json").write_text(json.dumps({**json.loads((root / "RUN" / "config.json").read_text()), "model": "mvae"}))
    return root


CASES = [
    ["train", "--out", "R", *TINY, "--set", "beta=abc"],
    ["train", "--out", "R", *TINY, "--set", "latent_dim=abc"],
    ["train", "--out", "R", *TINY, "--set", "sparsity=[1,2]"],
    ["train", "--out", "R", *TINY, "--set", "hidden=-1"],
    ["train", "--out", "R", *TINY, "--set", "n_modalities=3"],
    ["train", "--out", "R", *TINY, "--n-train", "0"],
    ["train", "--out", "R", *TINY, "--n-train", "-5"],
    ["train", "--out", "R", *TINY, "--n-val", "0"],
    ["train", "--out", "R", *TINY, "--seed", "-1"],
    ["train", "--out", "R", *TINY, "--seed", "1099511627776"],
    ["train", "--out", "R", *TINY, "--data-dir", "X"],
    ["train", "--out", "R", *TINY, "--device", "meta"],
    ["train", "--out", "R/" + "a" * 300, *TINY],
    ["train", "--out", "R", *TINY, "--lr", "inf"],
    ["train", "--out", "R", *TINY, "--lr", "nan"],
    ["train", "--out", "R", *TINY, "--beta", "inf"],
    ["train", "--out", "R", *TINY, "--beta", "0"],
    ["train", "--out", "R", *TINY, "--precision", "bf16"],
    ["train", "--out", "R", *TINY, "--precision", "fp16"],
    ["train", "--out", "R", *TINY, "--model", "nnmrf", "--precision", "bf16"],
    ["train", "--out", "R", *TINY, "--model", "nope"],
    ["train", "--out", "AFILE", *TINY],
    ["train", "--out", "RUN", *TINY],
    ["train", "--out", "R", *TINY, "--beta", "2", "--set", "beta=0.5"],
    ["train", "--out", "R", *TINY, "--threads", "999"],
    ["train", "--out", ".", *TINY],
    ["train", "--out", "..", *TINY],
    ["train", "--out", "R", *TINY, "--threads", "0"],
    ["train", "--out", "R", *TINY, "--set", "latent_dim=[1"],
    ["train", "--out", "R", *TINY, "--score-every", "0"],
    ["train", "--out", "R", *TINY, "--set", "global_hidden=0"],
    ["train", "--out", "R", *TINY, "--model", "mopoe", "--set", "latent_dim=0"],
    ["train", "--out", "R", *TINY, "--model", "mmvaeplus", "--set", "objective=foo"],
    ["evaluate", "RUN", "--seed", "-1"],
    ["evaluate", "EMPTYLIST"],
    ["evaluate", "NULL"],
    ["evaluate", "NEGTEST"],
    ["evaluate", "MISSING"],
    ["evaluate", "RUN", "--split", "train"],
    ["sample", "RUN", "--n", "10", "--out", "RUN/checkpoint.pt"],
    ["sample", "RUN", "--n", "0", "--out", "S.npz"],
    ["sweep", "--out", "AFILE", "--space", "copula_quick", "--epochs", "1"],
    ["sweep", "--out", "/proc/mrfbench-sweep", "--space", "copula_quick", "--epochs", "1"],
    ["reproduce", "copula", "--out", "AFILE"],
    ["sweep", "--out", "SW", "--space", "nope"],
    ["sweep", "--out", "EMPTYTRIAL", "--resume"],
    ["sweep", "--out", "SW", "--space", "copula", "--trials", "0"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--address", "127.0.0.1:1"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--storage", "notaurl"],
    ["sweep", "--out", "SW", "--space", "NANSPACE.yaml"],
    ["sweep", "--out", "SW", "--space", "BADGRID.yaml"],
    ["sweep", "--out", "SW", "--space", "DUPKEY.yaml"],
    ["sweep", "--out", "SW", "--space", "NOTUTF8.yaml"],
    ["sweep", "--out", "SW", "--space", "ADIR.yaml"],
    ["sweep", "--out", "SW", "--space", "/dev/null"],
    ["sweep", "--out", "SW", "--space", "HUGEGRID.yaml", "--grid"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--mlflow", "mlruns"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--cpus-per-trial", "nan"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--storage", "postgresql+pg8000://u:pw@db/x"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--storage", "sqlite:///ABSENT/optuna.db"],
    ["sweep", "--out", "BADDB", "--resume"],
    ["sweep", "--out", "SW", "--space", "copula", "--pack-size", "0"],
    ["sweep", "--out", "SW", "--space", "copula", "--pack-size", "3", "--asha"],
    ["sweep", "--out", "SW", "--space", "copula", "--pack-size", "3", "--no-packs"],
    ["sweep", "--out", "SW", "--space", "copula", "--pack-size", "3"],
    ["sweep", "--out", "SW", "--space", "copula", "--score-every", "0"],
    ["sweep", "--out", "SW", "--space", "copula", "--score-every", "2", "--packs", "--pack-size", "3"],
    ["sweep", "--out", "SW", "--space", "copula", "--score-every", "two"],
    ["train", "--out", "NEWRUN", "--epochs", "abc"],
    ["train", "--out", "NEWRUN", "--no-such-option"],
    ["sample"],
    ["no-such-command"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--gpus-per-trial", "inf"],
    ["leaderboard", "AFILE"],
    ["leaderboard", "MISSING"],
    ["leaderboard", "RUN"],
    ["leaderboard", "RUN", "--publish", "AFILE"],
    ["leaderboard", "RUN", "--publish", "/proc/mrfbench-results"],
    ["leaderboard", "EMPTYLIST"],
    ["leaderboard", "BROKENSWEEP"],
    ["leaderboard", "SPACELESS"],
    ["leaderboard", "EMPTYTRIAL"],
    ["reproduce", "cifar"],
    ["data", "cifar"],
    ["data", "mnist3", "--mnist", "NOTZIP.npz", "--out", "B"],
    ["data", "mnist3", "--mnist", "BADSHAPE.npz", "--out", "B"],
    ["data", "mnist3", "--mnist", "BADLABELS.npz", "--out", "B"],
    ["data", "mnist3", "--mnist", "DIGITS.npz", "--out", "AFILE"],
    ["data", "mnist3", "--mnist", "DIGITS.npz", "--out", "B", "--seed", "-1"],
    ["data", "polymnist", "--mnist", "DIGITS.npz", "--out", "B", "--backgrounds", "AFILE"],
    ["sample", "RUN", "--n", "10", "--out", "RUN/samples.npz"],
    ["sample", "RUN", "--n", "10", "--out", "NEGTEST/deeper/samples.npz"],
    ["sample", "RUN", "--n", "10", "--out", "BADDB/samples.npz"],
    ["train", "--out", "RUN/inner", *TINY],
    ["train", "--out", "BADDB/run", *TINY],
    ["data", "mnist3", "--mnist", "DIGITS.npz", "--out", "RUN"],
    ["sweep", "--out", "RUN/SW", "--space", "copula_quick"],
    ["sweep", "--out", "RUN", "--space", "copula_quick"],
    ["sweep", "--out", "SW", "--space", "copula_quick", "--publish", "RUN"],
    ["reproduce", "copula", "--out", "SW", "--publish", "BADDB/results"],
    ["leaderboard", "NEGTEST", "--publish", "RUN/results"],
    ["leaderboard", "MIXED"],
    ["evaluate", "MIXED/run"],
    ["sample", "MIXED/run", "--n", "10", "--out", "S.npz"],
]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a[:1] + [x for x in a[1:] if x not in TINY])[:60])
def test_bad_input_is_one_line_and_changes_no_file(workspace, monkeypatch, args):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output + result.stderr and len(lines) == 1, result.stderr
    assert "--debug" not in lines[0], lines[0]  # a message of its own, not the guard's line for the unforeseen
    after = snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before  # every earlier file is untouched


def test_an_unexpected_error_is_one_line_with_its_traceback_logged(tmp_path, monkeypatch):
    import mrfbench.experiment

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(mrfbench.experiment, "run_experiment", broken)
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "out"), *TINY])
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output + result.stderr
    assert "RuntimeError: something nobody foresaw" in lines[0] and "--debug" in lines[0]
    [log] = (tmp_path / "out").glob("mrfbench-error-*.log")
    assert "Traceback" in log.read_text() and "in broken" in log.read_text()
    debug = CliRunner().invoke(app, ["--debug", "train", "--out", str(tmp_path / "out"), *TINY])
    assert isinstance(debug.exception, RuntimeError)


def test_a_field_keeps_its_bounds_where_a_subclass_changes_its_default():
    """The baselines' configs set latent 3 over the base's bounded latent size: 0 must still be refused (a
    re-declared field once lost its bounds and failed deep in the networks with a ZeroDivisionError)."""
    from mrfbench.errors import UsageError
    from mrfbench.models import build_model

    for model in ("mopoe", "mmvae", "gmrf", "nnmrf"):
        with pytest.raises(UsageError, match="latent dimension must be >= 1, got 0"):
            build_model(model, latent_dim=0)
    with pytest.raises(UsageError, match=r"n importance must be >= 2 \(with 1 the log-partition term vanishes\)"):
        build_model("nnmrf", n_importance=1)
    with pytest.raises(UsageError, match=r"masking sparsity must be in \[0, 1\), got 1.0"):
        build_model("almrf", sparsity=1.0)


@pytest.mark.parametrize("source, reason", [(None, "ModuleNotFoundError: No module named 'absent_plugin'"),
                                            ("raise RuntimeError('boom')", "RuntimeError: boom")])
def test_a_plugin_that_cannot_be_imported_is_named_with_the_variable(tmp_path, source, reason):
    import os
    import subprocess
    import sys

    name = "absent_plugin" if source is None else "broken_plugin"
    if source is not None:
        (tmp_path / f"{name}.py").write_text(source)
    env = {**os.environ, "MRFBENCH_PLUGINS": f" {name} ", "PYTHONPATH": str(tmp_path)}
    for command in ("models", "datasets"):
        proc = subprocess.run([sys.executable, "-m", "mrfbench", command], env=env, capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip() == (f"error: MRFBENCH_PLUGINS names the module '{name}', which cannot be "
                                       f"imported ({reason})")


READ_ONLY_CASES = {  # a command, with {run} (a finished run) and {ro} (an empty folder) both read-only mounts
    "evaluate {run} --device cpu": "cannot write to output directory {run}: it is read-only",
    "train --out {run} --overwrite": "cannot write to output directory {run}: it is read-only",
    "train --out {ro}/new": "cannot write to output directory {ro}/new: Read-only file system",
    "sample {run} --n 5 --out {ro}/s.npz": "cannot write {ro}/s.npz: Read-only file system",
    "leaderboard {runs} --publish {ro}": "cannot write the leaderboard into {ro}/copula: Read-only file system",
    "sweep --out {ro}/sweep --space copula_quick": "cannot write the sweep directory {ro}/sweep: Read-only file system",
}


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v unshare && unshare -m true"], capture_output=True).returncode,
                    reason="read-only mounts need a mount namespace (root)")
def test_read_only_outputs_are_refused_in_one_line_before_any_work(workspace, tmp_path):
    """Root ignores permission bits, not a read-only mount: each command, run in a mount namespace where the
    run and the output folder are read-only, refuses in one line with exit code 2 (evaluate before scoring,
    --overwrite before training), and the run is unchanged."""
    places = {"runs": tmp_path / "RUNS", "run": tmp_path / "RUNS" / "RUN", "ro": tmp_path / "RO"}
    places["ro"].mkdir()
    shutil.copytree(workspace / "RUN", places["run"])
    before = snapshot(places["runs"])
    lines = [f"for d in {places['run']} {places['ro']}; do mount --bind $d $d && mount -o remount,ro,bind $d; done",
             "set -o pipefail"]
    for command in READ_ONLY_CASES:
        tiny = " ".join(TINY) if command.startswith("train") else ""
        lines.append(f"{sys.executable} -m mrfbench {command.format(**places)} {tiny} 2>&1 | tail -1; echo \"rc $?\"")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", "\n".join(lines)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    said = proc.stdout.strip().splitlines()
    assert len(said) == 2 * len(READ_ONLY_CASES), proc.stdout + proc.stderr
    for (command, message), error, code in zip(READ_ONLY_CASES.items(), said[::2], said[1::2]):
        assert (error, code) == (f"error: {message.format(**places)}", "rc 2"), command
    assert snapshot(places["runs"]) == before
