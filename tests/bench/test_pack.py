"""Packed training against single runs: every model (and objective or factorised variant) on a small copula
set, 20 steps of a 4-epoch run. The fixture holds the single runs' step and validation losses as recorded
before packs existed (``python tests/bench/test_pack.py`` records it anew: only on code known to train as the
reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mrfbench.datasets import get_dataset
from mrfbench.models import MODELS, build_model
from mrfbench.pack import Pack, PackData, member_generators, train_pack
from mrfbench.training import TrainConfig, seed_everything, train

FIXTURE = Path(__file__).parent / "fixtures" / "single_run_step_losses.json"
CASES = {
    "gmrf": ("gmrf", {}),
    "gmrf_sparse": ("gmrf", {"sparsity": 0.3}),
    "almrf": ("almrf", {"likelihood_scale": "optimal"}),  # as recorded, before its default became learned
    "almrf_learned": ("almrf", {}),
    "nnmrf": ("nnmrf", {"pcd_sweeps": 2}),
    "mvae": ("mvae", {}),
    "mvae_factorised": ("mvae", {"specific_dim": 2}),
    "mopoe": ("mopoe", {}),
    "mopoe_laplace_factorised": ("mopoe", {"dist": "laplace", "specific_dim": 2}),
    "mmvae": ("mmvae", {}),
    "mmvae_iwae": ("mmvae", {"objective": "iwae", "n_samples": 3}),
    "mmvae_dreg": ("mmvae", {"objective": "dreg", "n_samples": 3}),
    "mmvaeplus": ("mmvaeplus", {"n_samples": 3}),
}
SEED, BETA, EPOCHS, BATCH = 3, 0.5, 4, 64  # 320 training tuples: 5 steps an epoch, 20 in all


def case_data() -> dict[str, torch.Tensor]:
    return get_dataset("copula", n_train=5 * BATCH, n_val=100, n_test=16).splits()


def train_config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": EPOCHS, "batch_size": BATCH, "seed": SEED, "device": "cpu", **changes})


def single_run(case: str, data: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """The training step losses and the validation losses of ``case`` trained as ``mrfbench train`` does."""
    name, options = CASES[case]
    seed_everything(SEED)
    model = build_model(name, beta=BETA, **options)
    steps: list[float] = []
    original = model.loss

    def spy(x, beta_scale=1.0):
        out = original(x, beta_scale)
        if model.training:
            steps.append(float(out.loss.detach()))
        return out

    model.loss = spy
    result = train(model, data["train"], data["val"], train_config())
    return {"steps": steps, "val": [record["val_loss"] for record in result.history]}


def build_member(case: str, seed: int, beta: float):
    """A model built as a single run builds it, and the CPU generator state its training starts from."""
    name, options = CASES[case]
    seed_everything(seed)
    model = build_model(name, beta=beta, **options)
    return model, torch.get_rng_state()


def make_pack(case: str, settings: list[tuple[int, float, float]], chunk: int | None = None) -> Pack:
    """A pack of ``case`` with members (seed, beta, learning rate), ``chunk`` of them per forward (all)."""
    built = [build_member(case, seed, beta) for seed, beta, _ in settings]
    return Pack([model for model, _ in built], [train_config(seed=seed, lr=lr) for seed, _, lr in settings],
                [member_generators(seed, state, torch.device("cpu")) for (seed, _, _), (_, state) in zip(settings, built)],
                chunk)


def pack_step_losses(pack: Pack, data, config: TrainConfig) -> tuple[list[list[float]], list]:
    """Train ``pack``; each step's member losses and the members' results."""
    steps = []
    losses = pack.chunk_losses

    def spy(rows, *args, **kwargs):
        out = losses(rows, *args, **kwargs)
        if pack.template.training:
            if rows.start == 0:
                steps.append([])
            steps[-1].extend(out[0].detach().tolist())
        return out

    pack.chunk_losses = spy
    results = train_pack(pack, data, config)
    return steps, results


@pytest.fixture(scope="module")
def data():
    return case_data()


@pytest.fixture(scope="module")
def reference():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def singles(data):
    """Each case's single run on this machine, trained on first use."""
    runs: dict[str, dict[str, list[float]]] = {}

    def run(case: str) -> dict[str, list[float]]:
        if case not in runs:
            runs[case] = single_run(case, data)
        return runs[case]

    return run


@pytest.mark.parametrize("case", CASES)
def test_single_runs_train_as_recorded(case, singles, reference):
    """The first step to float rounding; every later one within the rounding that 20 steps of training grow
    from another CPU's kernels (MoPoE and MMVAE: up to 4e-5 on an AVX-512 machine, against a fixture that
    runs on an AVX2 machine matched exactly)."""
    run, recorded = singles(case), reference[case]
    assert run["steps"][0] == pytest.approx(recorded["steps"][0], rel=1e-5)
    for key in ("steps", "val"):
        assert run[key] == pytest.approx(recorded[key], rel=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_a_pack_of_one_trains_as_the_single_run(case, data, singles):
    """Bit for bit: a pack of one runs the single run's arithmetic."""
    steps, results = pack_step_losses(make_pack(case, [(SEED, BETA, 1e-3)]), PackData.of([data]), train_config())
    assert [s[0] for s in steps] == singles(case)["steps"]
    assert [r["val_loss"] for r in results[0].history] == singles(case)["val"]


@pytest.mark.parametrize("case", CASES)
def test_each_member_starts_as_its_single_run(case, data):
    settings = [(SEED, BETA, 1e-3), (SEED + 1, 2.0, 3e-3), (SEED + 2, 0.1, 1e-4)]
    pack = make_pack(case, settings)
    for k, (seed, beta, _) in enumerate(settings):
        for name, value in build_member(case, seed, beta)[0].named_parameters():
            assert torch.equal(pack.params.stacked[name][k], value), name
    first_steps, _ = pack_step_losses(pack, PackData.of([data] * 3), train_config(epochs=1))
    for k, (seed, beta, lr) in enumerate(settings):
        single = build_member(case, seed, beta)[0]
        first = []
        original = single.loss
        single.loss = lambda x, scale=1.0: first.append(float(original(x, scale).loss.detach())) or original(x, scale)
        seed_everything(seed)
        build_model(CASES[case][0], beta=beta, **CASES[case][1])  # the global generator where the run starts
        train(single, data["train"], data["val"], train_config(seed=seed, lr=lr, epochs=1))
        assert first_steps[0][k] == pytest.approx(first[0], rel=1e-5)


@pytest.mark.parametrize("case", ["gmrf", "nnmrf", "mopoe", "mmvaeplus"])
def test_a_pack_in_chunks_trains_as_in_one(case, data):
    settings = [(SEED, BETA, 1e-3), (SEED + 1, 2.0, 3e-3), (SEED + 2, 0.1, 1e-4)]
    whole, whole_results = pack_step_losses(make_pack(case, settings), PackData.of([data] * 3), train_config(epochs=2))
    pack = make_pack(case, settings, chunk=2)
    assert [(rows.start, rows.stop) for rows in pack.chunks()] == [(0, 2), (2, 3)]
    chunked, chunked_results = pack_step_losses(pack, PackData.of([data] * 3), train_config(epochs=2))
    assert len(chunked) == len(whole) == 10
    for step_whole, step_chunked in zip(whole, chunked):
        assert step_chunked == pytest.approx(step_whole, rel=1e-5)
    for a, b in zip(whole_results, chunked_results):
        assert [r["val_loss"] for r in b.history] == pytest.approx([r["val_loss"] for r in a.history], rel=1e-5)


@pytest.mark.parametrize("chunk", [None, 2])
def test_a_member_that_goes_nan_fails_alone(data, chunk):
    pack = make_pack("gmrf", [(SEED, BETA, 1e-3), (SEED + 1, BETA, 1e-3), (SEED + 2, BETA, 1e-3)], chunk)
    with torch.no_grad():
        pack.params.stacked["prior_net.log_diag"][1].fill_(float("nan"))
    _, results = pack_step_losses(pack, PackData.of([data] * 3), train_config(epochs=2))
    assert results[1].failure == "non-finite training loss at epoch 1" and not results[1].history
    for k in (0, 2):
        assert results[k].failure is None and len(results[k].history) == 2
        assert all(torch.isfinite(v).all() for v in results[k].best_state.values())
    assert all(torch.isfinite(v[1]).all() for v in pack.params.stacked.values())  # frozen at its initial state


IMAGE_SETTINGS = {  # small versions of the image networks: MNIST-3's MLPs and PolyMNIST's convolutions
    "mlp": (3, 784, {"architecture": "mlp", "hidden": 64, "mlp_layers": 4, "latent_dim": 4, "reconstruction": "mean"}),
    "conv": (5, 3 * 784, {"architecture": "conv", "latent_dim": 4, "reconstruction": "mean"}),
}
CHEAPER = {"nnmrf": {"pcd_sweeps": 1, "n_importance": 2}, "mmvaeplus": {"n_samples": 2}}


@pytest.mark.parametrize("architecture", IMAGE_SETTINGS)
@pytest.mark.parametrize("name", sorted(name for name, cls in MODELS.items() if not cls.experimental))
def test_image_networks_pack_with_each_member_starting_as_its_single_run(architecture, name):
    m, f, options = IMAGE_SETTINGS[architecture]
    options = {**options, **CHEAPER.get(name, {})}

    def built(seed):
        seed_everything(seed)
        return build_model(name, n_modalities=m, modality_dim=f, beta=0.5 + seed, **options)

    models, generators = [], []
    for seed in (0, 1):
        models.append(built(seed))
        generators.append(member_generators(seed, torch.get_rng_state(), torch.device("cpu")))
    x = torch.rand(2, 8, m, f)
    pack = Pack(models, [train_config(seed=seed) for seed in (0, 1)], generators)
    loss, _ = pack.losses(x, pack.betas.float(), "fp32")
    loss.sum().backward()
    for seed in (0, 1):
        single = built(seed)
        alone = single.loss(x[seed]).loss
        alone.backward()
        assert float(loss[seed].detach()) == pytest.approx(float(alone.detach()), rel=1e-5)
        # the same gradients, to float rounding, which a parameter whose gradient is a small difference of
        # large terms (MMVAE+'s DReG) shows relative to the model's largest gradient rather than its own
        scale = max(float(param.grad.abs().max()) for param in single.parameters())
        for param_name, param in single.named_parameters():
            torch.testing.assert_close(pack.params.stacked[param_name].grad[seed], param.grad, rtol=1e-4, atol=1e-4 * scale)


if __name__ == "__main__":  # records the fixture (run it only on code known to train as the reference)
    data = case_data()
    FIXTURE.write_text(json.dumps({case: single_run(case, data) for case in CASES}, indent=1) + "\n")
