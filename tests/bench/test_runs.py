"""Run directories with a lifecycle: written beside their place and moved in only when complete, one writer
at a time, and never mixed with an older run's files."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from mrfbench.cli import app
from mrfbench.runs import run_lock

TINY = ["--epochs", "1", "--n-train", "128", "--n-val", "32", "--n-test", "16", "--batch-size", "64",
        "--n-unconditional", "1000", "--n-per-tuple", "2", "--device", "cpu"]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def finished(tmp_path):
    run = tmp_path / "R"
    result = CliRunner().invoke(app, ["train", "--out", str(run), *TINY])
    assert result.exit_code == 0, result.output
    return run


def test_a_killed_overwrite_leaves_the_old_run_whole(finished, tmp_path):
    before = digest(finished)
    proc = subprocess.Popen([sys.executable, "-m", "mrfbench", "train", "--out", str(finished), "--overwrite",
                             "--beta", "0.5", "--epochs", "300", *TINY[2:]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".R.partial-*/config.json")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the new run has started writing
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert digest(finished) == before  # no new config.json beside the old checkpoint and metrics
    board = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert board.exit_code == 0, board.output
    assert "beta=1,epochs=1" in (tmp_path / "leaderboard.md").read_text()  # the old run, under its own label
    again = CliRunner().invoke(app, ["train", "--out", str(finished), "--overwrite", "--beta", "0.5", *TINY])
    assert again.exit_code == 0, again.output
    assert '"beta": 0.5' in (finished / "metrics.json").read_text()


def test_a_second_writer_is_refused(finished, tmp_path):
    with run_lock(tmp_path / "other"):
        result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "other"), *TINY])
        assert result.exit_code == 2 and "another mrfbench process is writing" in result.stderr
        scoring = CliRunner().invoke(app, ["evaluate", str(tmp_path / "other")])
        assert scoring.exit_code == 2
    with run_lock(finished):
        result = CliRunner().invoke(app, ["evaluate", str(finished)])
        assert result.exit_code == 2 and "another mrfbench process is writing" in result.stderr


def test_an_unfinished_run_is_not_scored_and_a_foreign_folder_is_not_replaced(finished, tmp_path):
    (finished / "metrics.json").unlink()
    result = CliRunner().invoke(app, ["evaluate", str(finished)])
    assert result.exit_code == 2 and "not a finished run" in result.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["train", "--out", str(foreign), *TINY])
    assert result.exit_code == 2 and "not a run's" in result.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_json_files_are_strict(tmp_path):
    """trial.json stored NaN, which strict JSON readers reject; non-finite figures are written as null."""
    import json
    import math

    from mrfbench.runs import write_json

    write_json(tmp_path / "t.json", {"score": math.nan, "metrics": [1.0, math.inf], "ok": 2})

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads((tmp_path / "t.json").read_text(), parse_constant=refuse) == {
        "score": None, "metrics": [1.0, None], "ok": 2}


def test_a_run_killed_while_scoring_leaves_nothing_to_misread(tmp_path):
    """Killed after its checkpoint was saved, during scoring: no run appears at --out (evaluate used to
    score it and write metrics without the training record, which the leaderboard then rejected)."""
    run = tmp_path / "R"
    proc = subprocess.Popen([sys.executable, "-m", "mrfbench", "train", "--out", str(run), *TINY[:-6],
                             "--n-unconditional", "20000000", "--n-per-tuple", "2", "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".R.partial-*/checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.1)  # trained and checkpointed: scoring 20M samples has begun
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not run.exists()
    result = CliRunner().invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    board = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert board.exit_code == 2 and "neither a sweep" in board.stderr
