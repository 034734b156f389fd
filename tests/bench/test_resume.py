"""`mrfbench train` stopped midway continues where it was when run again, and only as the same run."""

import itertools
import json

import pytest
from typer.testing import CliRunner

import mrfbench.resume
import mrfbench.training
from mrfbench.cli import app
from mrfbench.resume import state_file

RUN = ["--epochs", "4", "--n-train", "256", "--n-val", "64", "--n-test", "16", "--batch-size", "64",
       "--n-unconditional", "1000", "--n-per-tuple", "2", "--device", "cpu", "--threads", "1"]


def stopped_after(monkeypatch, epochs: int, out, *extra):
    """`train` into ``out`` interrupted (Ctrl-C) while validating the epoch after ``epochs``."""
    monkeypatch.setattr(mrfbench.resume, "SAVE_EVERY_S", 0.0)
    calls, validate = itertools.count(1), mrfbench.training.evaluate_loss

    def stopping(*args, **kwargs):
        if next(calls) > epochs:
            raise KeyboardInterrupt
        return validate(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(mrfbench.training, "evaluate_loss", stopping)
        result = CliRunner().invoke(app, ["train", "--out", str(out), *RUN, *extra])
    assert result.exit_code == 130, result.output
    return result


def history(run):
    return json.loads((run / "history.json").read_text())


def test_a_stopped_run_continues_where_it_was_and_trains_as_one_never_stopped(monkeypatch, tmp_path):
    whole = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "whole"), *RUN])
    assert whole.exit_code == 0, whole.output
    stopped_after(monkeypatch, 2, tmp_path / "R")
    assert state_file(tmp_path / "R").exists() and not (tmp_path / "R" / "metrics.json").exists()
    validated, validate = [], mrfbench.training.evaluate_loss
    monkeypatch.setattr(mrfbench.training, "evaluate_loss", lambda *a, **k: validated.append(1) or validate(*a, **k))
    again = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "R"), *RUN])
    assert again.exit_code == 0, again.output
    assert "continuing the interrupted run" in again.output and len(validated) == 2  # epochs 3 and 4 only
    assert history(tmp_path / "R") == [{**r, "lr": pytest.approx(r["lr"])} for r in history(tmp_path / "whole")]
    assert not state_file(tmp_path / "R").exists()


def test_a_stopped_run_is_continued_only_with_its_own_settings(monkeypatch, tmp_path):
    run = tmp_path / "R"
    stopped_after(monkeypatch, 1, run)
    saved = state_file(run).read_bytes()
    other = CliRunner().invoke(app, ["train", "--out", str(run), *RUN, "--beta", "0.5"])
    assert other.exit_code == 2 and "other settings (model_config differ)" in other.stderr
    assert state_file(run).read_bytes() == saved
    fresh = CliRunner().invoke(app, ["train", "--out", str(run), *RUN, "--beta", "0.5", "--overwrite"])
    assert fresh.exit_code == 0, fresh.output
    assert "continuing" not in fresh.output and len(history(run)) == 4 and not state_file(run).exists()


def test_a_damaged_state_is_named_with_the_way_out(tmp_path):
    run = tmp_path / "R"
    run.mkdir()
    state_file(run).write_bytes(b"not a state")
    result = CliRunner().invoke(app, ["train", "--out", str(run), *RUN])
    assert result.exit_code == 2 and "cannot read the interrupted run's state" in result.stderr
    assert "--overwrite" in result.stderr
