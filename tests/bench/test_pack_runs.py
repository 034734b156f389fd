import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mrfbench.cli import app
from mrfbench.pack_runs import member_grid

runner = CliRunner()
TINY = ["--epochs", "2", "--n-train", "256", "--n-val", "64", "--n-test", "32", "--batch-size", "64",
        "--n-unconditional", "2000", "--n-per-tuple", "3", "--device", "cpu"]
MEMBERS = ["beta=0.1_seed=0", "beta=0.1_seed=1", "beta=1.0_seed=0", "beta=1.0_seed=1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    result = invoke("train", "--model", "gmrf", "--beta", "0.1,1", "--seed", "0,1", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_a_pack_writes_a_run_folder_per_member(pack_dir):
    assert sorted(p.name for p in pack_dir.iterdir() if not p.name.startswith(".")) == MEMBERS
    for name in MEMBERS:
        config = json.loads((pack_dir / name / "config.json").read_text())
        assert (config["model_config"]["beta"], config["train"]["seed"]) == (float(name[5:8]), int(name[-1]))
        assert config["dataset_config"]["seed"] == config["eval"]["seed"] == config["train"]["seed"]
        assert {"checkpoint.pt", "history.json", "metrics.json", "pairplot.png"} <= {p.name for p in (pack_dir / name).iterdir()}


def test_members_read_as_single_runs(pack_dir, tmp_path):
    member = pack_dir / MEMBERS[2]
    assert invoke("evaluate", member, "--n-unconditional", "1000").exit_code == 0
    result = invoke("sample", member, "--out", tmp_path / "s.npz", "--n", "10")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s.npz")["unconditional"].shape == (10, 4, 2)
    board = tmp_path / "board"
    result = invoke("leaderboard", pack_dir, "--publish", board)
    assert result.exit_code == 0, result.output
    assert "| gmrf | beta=" in (pack_dir / "leaderboard.md").read_text()
    trials = pd.read_csv(pack_dir / "trials.csv")
    assert len(trials.drop_duplicates(["variant", "seed"])) == 4 and (trials["status"] == "ok").all()


def test_a_member_trains_as_its_single_run(pack_dir, tmp_path):
    result = invoke("train", "--model", "gmrf", "--beta", "1", "--seed", "1", "--out", tmp_path / "single", *TINY)
    assert result.exit_code == 0, result.output
    single = json.loads((tmp_path / "single" / "history.json").read_text())
    member = json.loads((pack_dir / "beta=1.0_seed=1" / "history.json").read_text())
    for a, b in zip(single, member):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_an_interrupted_pack_reruns_only_its_unfinished_members(tmp_path, monkeypatch):
    import mrfbench.pack_runs as pack_runs

    finish, finished = pack_runs.finish_run, []

    def interrupted(*args, **kwargs):
        if len(finished) == 2:
            raise KeyboardInterrupt
        finished.append(args[9])
        return finish(*args, **kwargs)

    monkeypatch.setattr(pack_runs, "finish_run", interrupted)
    args = ["train", "--model", "mopoe", "--beta", "0.1,1", "--seed", "0,1", "--out", tmp_path, *TINY]
    assert invoke(*args).exit_code == 130
    done = sorted(p.name for p in tmp_path.iterdir() if (p / "metrics.json").exists())
    assert done == MEMBERS[:2]
    stamps = {name: (tmp_path / name / "metrics.json").stat().st_mtime_ns for name in done}
    monkeypatch.setattr(pack_runs, "finish_run", finish)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "2 of 4 members already finished" in result.output
    assert all((tmp_path / name / "metrics.json").exists() for name in MEMBERS)
    assert stamps == {name: (tmp_path / name / "metrics.json").stat().st_mtime_ns for name in done}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "partial" in p.name]


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "latent_dim=2,3"], "--set latent_dim has several values"),
    (["--beta", "1,1"], "--beta lists 1 twice"),
    (["--seed", "0,x"], "--seed takes int values separated by commas"),
    (["--beta", "0.1,nan"], "--beta must be finite"),
    (["--lr-schedule", "cosine,step"], "unknown lr schedule 'step'"),
    (["--beta", "1,2", "--pack-size", "0"], "--pack-size must be >= 1"),
])
def test_bad_pack_settings_are_refused_before_training(tmp_path, extra, message):
    result = invoke("train", "--model", "gmrf", "--out", tmp_path / "out", *TINY, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output + result.stderr and "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "out").exists()


def test_pack_size_splits_the_product(tmp_path):
    result = invoke("train", "--model", "gmrf", "--beta", "0.5,1,2", "--pack-size", "2", "--out", tmp_path, *TINY)
    assert result.exit_code == 0, result.output
    assert "pack 2 of 2" in result.output or "wrote 3 runs" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["beta=0.5", "beta=1.0", "beta=2.0"]


def test_member_grid_names_the_settings_with_several_values():
    grid = member_grid({"beta": [0.1, 1.0], "lr": [1e-3], "seed": [0, 1]})
    assert [name for name, _ in grid] == ["beta=0.1_seed=0", "beta=0.1_seed=1", "beta=1.0_seed=0", "beta=1.0_seed=1"]
    assert grid[1][1] == {"beta": 0.1, "lr": 1e-3, "seed": 1}


def test_a_pack_that_would_not_fit_is_split_before_it_starts(tmp_path, monkeypatch):
    import mrfbench.pack_runs as pack_runs

    each = {}
    measure = pack_runs.Footprint.of

    def measured(model, batch, precision):
        each["footprint"] = measure(model, batch, precision)
        return each["footprint"]

    monkeypatch.setattr(pack_runs.Footprint, "of", measured)
    monkeypatch.setattr(pack_runs, "free_memory", lambda device: int(2.5 * each["footprint"].total / pack_runs.FIT))
    result = invoke("train", "--model", "gmrf", "--beta", "0.1,1", "--seed", "0,1", "--pack-size", "4", "--out", tmp_path,
                    *TINY)
    assert result.exit_code == 0, result.output
    assert "packs of 2 need" in result.output and "; 2 packs" in result.output
    assert len(list(tmp_path.glob("*/metrics.json"))) == 4


def test_a_member_takes_its_parameters_four_times_and_its_activations():
    import torch

    from mrfbench.models import build_model
    from mrfbench.pack_sizing import member_bytes

    model = build_model("gmrf")
    parameters = sum(p.numel() * 4 for p in model.parameters())
    small, large = (member_bytes(model, torch.rand(n, 4, 2)) for n in (64, 512))
    assert 4 * parameters < small < large < 4 * parameters + 8 * (small - 4 * parameters) + 1


def test_a_pack_on_a_cpu_steps_as_many_members_at_once_as_keep_its_largest_tensor_within_its_budget(monkeypatch):
    import torch

    import mrfbench.pack_sizing as sizing
    from mrfbench.models import build_model

    model, batch = build_model("gmrf"), torch.rand(64, 4, 2)
    footprint = sizing.Footprint.of(model, batch)
    assert 0 < sum(footprint.activations) < footprint.total and footprint.largest >= max(footprint.activations)
    monkeypatch.setattr(sizing, "CPU_CHUNK_BYTES", int(2.5 * footprint.largest))
    assert sizing.pack_chunk(model, batch) == 2
    monkeypatch.setattr(sizing, "CPU_CHUNK_BYTES", footprint.largest // 2)
    assert sizing.pack_chunk(model, batch) == 1


def test_a_batch_that_is_a_view_of_its_split_counts_as_the_batch():
    import torch

    from mrfbench.models import build_model
    from mrfbench.pack_sizing import Footprint

    model = build_model("gmrf", n_modalities=5, modality_dim=3 * 784, architecture="conv", latent_dim=4,
                        reconstruction="mean")  # its convolutions save their input as they are given it
    split = torch.rand(200, 5, 3 * 784)
    assert Footprint.of(model, split[:8]) == Footprint.of(model, split[:8].clone())


def test_a_pack_run_a_chunk_at_a_time_holds_the_activations_of_one_chunk():
    from mrfbench.pack_sizing import Footprint

    member = Footprint(state=10, activations=(4, 6), largest=6)  # bytes
    assert member.pack_bytes(8, None) == 160 and member.pack_bytes(8, 2) == 100 and member.pack_bytes(1, 2) == 20
    assert member.capacity(100, None) == 5 and member.capacity(100, 2) == 8 and member.capacity(100, 10) == 5
    assert member.pack_bytes(member.capacity(100, 2), 2) <= 100 < member.pack_bytes(member.capacity(100, 2) + 1, 2)


def test_members_trained_a_chunk_at_a_time_are_written_as_runs(tmp_path, monkeypatch):
    import mrfbench.pack_runs as pack_runs
    import mrfbench.pack_sizing as sizing

    chunks = []

    class Recorded(pack_runs.Pack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            chunks.append((len(self), self.chunk))

    monkeypatch.setattr(pack_runs, "Pack", Recorded)
    monkeypatch.setattr(sizing, "CPU_CHUNK_BYTES", 1)  # one member per forward
    result = invoke("train", "--model", "gmrf", "--beta", "0.1,1", "--seed", "0,1", "--pack-size", "4", "--out", tmp_path,
                    *TINY)
    assert result.exit_code == 0, result.output
    assert chunks == [(4, 1)] and len(list(tmp_path.glob("*/metrics.json"))) == 4


def test_sample_never_writes_over_another_runs_files(pack_dir, tmp_path):
    target = pack_dir / MEMBERS[1] / "checkpoint.pt"
    before = target.read_bytes()
    result = invoke("sample", pack_dir / MEMBERS[0], "--out", target, "--n", "10")
    assert result.exit_code == 2 and "lies inside the run" in result.output + result.stderr
    assert target.read_bytes() == before


def test_a_pack_slower_than_its_members_alone_trains_them_one_by_one(tmp_path, monkeypatch):
    import mrfbench.pack_runs as pack_runs

    monkeypatch.setattr(pack_runs, "step_times", lambda model, batch, k, chunk, precision: (1.0, 0.1))  # packed: 1 s, alone: 0.1
    result = invoke("train", "--model", "mopoe", "--beta", "0.1,1", "--out", tmp_path, *TINY)
    assert result.exit_code == 0, result.output
    assert "the members train one by one; 2 packs" in result.output
    monkeypatch.setattr(pack_runs, "step_times", lambda model, batch, k, chunk, precision: (0.1, 1.0))
    result = invoke("train", "--model", "mopoe", "--beta", "0.1,1", "--overwrite", "--out", tmp_path, *TINY)
    assert result.exit_code == 0 and "packs of 2 need" in result.output and "one by one" not in result.output


def test_step_times_leave_the_model_and_the_random_state_alone():
    import torch

    from mrfbench.models import build_model
    from mrfbench.pack_sizing import pack_chunk, step_times

    model = build_model("gmrf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.rand(64, 4, 2)
    state = torch.get_rng_state()
    packed, alone = step_times(model, batch, 3, pack_chunk(model, batch))
    assert packed > 0 and alone > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and torch.equal(state, torch.get_rng_state())
