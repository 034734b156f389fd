from mrfbench.runs import write_json
from mrfbench.sweeps.records import TRIAL_FILE, finished_runs


def test_a_resumed_sweep_counts_the_runs_it_will_not_train_again(tmp_path):
    """Scored and scheduler-stopped trials, and scored or failed pack members, are finished; a single trial
    recorded as failed may have lost its worker and runs again, and a running one is unfinished."""
    singles = {"ok": "ok", "asha": "stopped", "died": "failed", "cut": "running"}
    for name, status in singles.items():
        _record(tmp_path / "search-gmrf" / name, status)
    for name, status in {"seed0": "ok", "seed1": "failed", "seed2": "running"}.items():
        _record(tmp_path / "final" / "pack" / name, status)
    assert finished_runs(tmp_path) == (3, 1)
    assert finished_runs(tmp_path / "absent") == (0, 0)


def _record(folder, status: str) -> None:
    folder.mkdir(parents=True)
    write_json(folder / TRIAL_FILE, {"status": status})
