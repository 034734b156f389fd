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


def test_a_run_keeps_its_curves_for_tensorboard(finished, read_scalars):
    curves = read_scalars(finished)
    assert [step for step, _ in curves["val_loss"]] == [1] and "train_loss" in curves  # TINY trains 1 epoch


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


def test_a_killed_evaluate_leaves_the_run_whole(finished, tmp_path):
    """Killed while re-scoring (it holds the run's lock): the run keeps its own figures, and scores again."""
    import fcntl

    before = digest(finished)
    proc = subprocess.Popen([sys.executable, "-m", "mrfbench", "evaluate", str(finished), "--n-unconditional",
                             "20000000", "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # scoring has begun once evaluate holds the lock
        try:
            with open(tmp_path / ".R.lock") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
        except FileNotFoundError:
            pass
        except BlockingIOError:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert digest(finished) == before
    for args in (["evaluate", str(finished)], ["leaderboard", str(tmp_path)],
                 ["sample", str(finished), "--n", "10", "--out", str(tmp_path / "s.npz")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    assert '"n_unconditional": 1000' in (finished / "metrics.json").read_text()  # the figures say how they were made


@pytest.mark.parametrize("moved", [False, True])
def test_a_writer_killed_while_moving_a_run_into_place(finished, tmp_path, moved):
    """``--overwrite`` sets the old run aside, moves the new one in, then deletes the old one; killed between
    two of these steps, the next command on the directory finishes the move: the new run, whole, under
    its own label, and nothing left beside it."""
    new = tmp_path / "new"
    result = CliRunner().invoke(app, ["train", "--out", str(new), *TINY, "--beta", "0.5"])
    assert result.exit_code == 0, result.output
    old = tmp_path / ".R.old-4242"
    finished.rename(old)  # the killed writer (pid 4242) set the old run aside...
    new.rename(finished if moved else tmp_path / ".R.partial-4242")  # ...and had, or had not, moved the new one in
    expected = digest(finished if moved else tmp_path / ".R.partial-4242")
    result = CliRunner().invoke(app, ["evaluate", str(finished)])
    assert result.exit_code == 0, result.output
    assert '"beta": 0.5' in (finished / "metrics.json").read_text()
    assert {k: v for k, v in digest(finished).items() if k not in ("metrics.json", "pairplot.png")} == {
        k: v for k, v in expected.items() if k not in ("metrics.json", "pairplot.png")}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".R.")) == []


def test_recovery_touches_only_its_own_run(tmp_path):
    """A run's name is no pattern: recovering 'b[0]' leaves the staging folder of run 'b0' alone, and
    finishing nothing takes no lock (a reader never stands in a starting writer's way)."""
    from mrfbench.runs import recover

    other = tmp_path / ".b0.partial-123"
    other.mkdir()
    (tmp_path / ".b[0].lock").touch()
    recover(tmp_path / "b[0]")
    assert other.is_dir()
    with run_lock(tmp_path / "c"):
        recover(tmp_path / "c")  # no leftovers: no lock wanted, no refusal


def test_a_writer_leaves_no_lock_file_behind(finished, tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


def test_a_write_removes_the_temporaries_of_killed_writers_only(tmp_path):
    from mrfbench.runs import atomic_write

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".leaderboard.md.{dead.pid}-abc.tmp"  # a leaderboard killed mid-write
    live = tmp_path / f".leaderboard.md.{os.getpid()}-def.tmp"  # one being written now
    other = tmp_path / f".trials.csv.{dead.pid}-ghi.tmp"  # another file's: its own write removes it
    for path in (orphan, live, other):
        path.write_text("half")
    atomic_write(tmp_path / "leaderboard.md", lambda handle: handle.write(b"whole"))
    assert (tmp_path / "leaderboard.md").read_text() == "whole"
    assert not orphan.exists() and live.exists() and other.exists()
