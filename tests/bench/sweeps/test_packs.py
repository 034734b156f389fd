import dataclasses

import pytest

import mrfbench.sweeps.packs as sweep_packs
from mrfbench.runs import read_json_object, write_json
from mrfbench.sweeps import TRIAL_FILE, TrialSpec
from mrfbench.sweeps.records import mark_died


def spec(seeds=(0, 1, 2)) -> TrialSpec:
    return TrialSpec(model="mopoe", stage="final", seed=seeds[0], params={"beta": 1.0, "lr": 2e-3}, dataset="copula",
                     epochs=2, device="cpu", cpus=1, dataset_options={"n_train": 256, "n_val": 64, "n_test": 32},
                     eval_options={"n_unconditional": 1000, "n_per_tuple": 2}, pack_seeds=tuple(seeds))


def test_a_pack_trial_records_each_member_and_reruns_only_the_unfinished(local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_packs, "_epoch_reporter", lambda: None)  # no Tune session here
    result = sweep_packs.run_pack_trial(spec(), spec().params, tmp_path)
    records = [read_json_object(tmp_path / f"seed{s}" / TRIAL_FILE) for s in (0, 1, 2)]
    assert [(r["seed"], r["status"], r["pack_seeds"]) for r in records] == [(s, "ok", [0, 1, 2]) for s in (0, 1, 2)]
    assert all(r["params"] == {"beta": 1.0, "lr": 2e-3} for r in records)
    config = read_json_object(tmp_path / "seed1" / "run" / "config.json")
    assert (config["train"]["seed"], config["train"]["lr"], config["dataset_config"]["seed"]) == (1, 2e-3, 1)
    assert result["score"] == pytest.approx(sum(r["metrics"]["score"] for r in records) / 3)
    # killed midway: seed 2 never finished; only it trains again, the others are left as they are
    write_json(tmp_path / "seed2" / TRIAL_FILE, {**records[2], "status": "running", "metrics": None})
    kept = {s: (tmp_path / f"seed{s}" / TRIAL_FILE).stat().st_mtime_ns for s in (0, 1)}
    again = sweep_packs.run_pack_trial(spec(), spec().params, tmp_path)
    assert kept == {s: (tmp_path / f"seed{s}" / TRIAL_FILE).stat().st_mtime_ns for s in (0, 1)}
    assert read_json_object(tmp_path / "seed2" / TRIAL_FILE)["status"] == "ok"
    assert again["score"] == pytest.approx(result["score"], rel=1e-3)  # seed 2 retrained alone: its figures, to rounding
    # its worker killed while seed 1 trained: recorded as failed, and trained again when the sweep resumes
    write_json(tmp_path / "seed1" / TRIAL_FILE, {**records[1], "status": "running", "metrics": None})
    mark_died(tmp_path, "its worker process died, likely killed or out of memory")
    assert read_json_object(tmp_path / "seed1" / TRIAL_FILE)["status"] == "failed"
    sweep_packs.run_pack_trial(spec(), spec().params, tmp_path)
    assert read_json_object(tmp_path / "seed1" / TRIAL_FILE)["status"] == "ok"
    assert kept[0] == (tmp_path / "seed0" / TRIAL_FILE).stat().st_mtime_ns


def test_a_pack_that_cannot_start_fails_each_member_with_the_reason(local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_packs, "_epoch_reporter", lambda: None)
    bad = dataclasses.replace(spec((0, 1)), params={"beta": 1.0, "latent_dim": 0})
    result = sweep_packs.run_pack_trial(bad, bad.params, tmp_path)
    assert result["failed"] == 1.0
    for seed in (0, 1):
        record = read_json_object(tmp_path / f"seed{seed}" / TRIAL_FILE)
        assert record["status"] == "failed" and "latent dimension must be >= 1" in record["error"]
