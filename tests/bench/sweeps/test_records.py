from mrfbench.runs import write_json
from mrfbench.sweeps.records import TRIAL_FILE, finished_runs, mark_died, trained_as


def test_a_resumed_sweep_counts_the_runs_it_will_not_train_again(tmp_path):
    """Scored, scheduler-stopped and failed trials and pack members are finished; those whose worker died
    train again, as do those still running."""
    singles = {"ok": "ok", "asha": "stopped", "nan": "failed", "died": "running", "cut": "running"}
    for name, status in singles.items():
        _record(tmp_path / "search-gmrf" / name, status)
    for name, status in {"seed0": "ok", "seed1": "failed", "seed2": "running"}.items():
        _record(tmp_path / "final" / "pack" / name, status)
    mark_died(tmp_path / "search-gmrf" / "died", "its worker process died")
    assert finished_runs(tmp_path) == (3, 2)
    mark_died(tmp_path / "final" / "pack", "its worker process died")  # seed2, running, is marked; the others kept
    assert finished_runs(tmp_path) == (3, 2)
    assert finished_runs(tmp_path / "absent") == (0, 0)


def _record(folder, status: str) -> None:
    folder.mkdir(parents=True)
    write_json(folder / TRIAL_FILE, {"status": status})


def test_a_trial_records_the_precision_its_run_trained_at_where_it_differs_from_the_asked_one():
    asked = {"beta": 1.0, "precision": "bf16"}
    assert trained_as(asked, {"training": {"precision": "fp32"}}) == {"trained_as": {"precision": "fp32"}}
    assert trained_as(asked, {"training": {"precision": "bf16"}}) == {}
    assert trained_as({"beta": 1.0}, {"training": {"precision": "fp32"}}) == {}  # the space does not name it
