import math

import pytest
import torch

from mrfbench.datasets import get_dataset
from mrfbench.errors import UsageError
from mrfbench.models import MODELS, build_model
from mrfbench.training import TrainConfig, resolve_device, resolve_precision, train


@pytest.fixture(scope="module")
def data():
    return get_dataset("copula", n_train=256, n_val=64, n_test=16).splits()


def test_kl_warmup_ramps_beta_and_validation_uses_the_full_beta(data):
    model = build_model("gmrf", beta=2.0)
    seen = []
    original = model.loss

    def spy(x, beta_scale=1.0):
        seen.append((model.training, model.config.beta * beta_scale))
        return original(x, beta_scale)

    model.loss = spy
    train(model, data["train"], data["val"], TrainConfig(epochs=4, batch_size=64, kl_warmup=0.5))
    train_betas = [b for training, b in seen if training]
    assert train_betas == pytest.approx([2.0 * s / 8 for s in range(8)] + [2.0] * 8)  # 16 steps, half warm-up
    assert all(b == 2.0 for training, b in seen if not training)


@pytest.mark.parametrize(("schedule", "final_lr"), [("cosine", 0.0), ("constant", 1e-2)])
def test_lr_schedules(data, schedule, final_lr):
    result = train(build_model("gmrf"), data["train"], data["val"],
                   TrainConfig(epochs=2, batch_size=128, lr=1e-2, lr_schedule=schedule))
    assert result.history[0]["lr"] == pytest.approx(1e-2 if schedule == "constant" else 5e-3)
    assert result.history[-1]["lr"] == pytest.approx(final_lr, abs=1e-9)


def test_non_finite_loss_fails_the_run_with_its_reason(data):
    model = build_model("gmrf")
    with torch.no_grad():
        model.prior_net.log_diag.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite training loss at epoch 1"):
        train(model, data["train"], data["val"], TrainConfig(epochs=1))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(lr=0.0), dict(lr_schedule="step"),
                                 dict(kl_warmup=-0.1), dict(kl_warmup=1.0)])
def test_invalid_train_config(bad):
    with pytest.raises(UsageError):
        TrainConfig(**bad)


@pytest.mark.parametrize("name", sorted(name for name, cls in MODELS.items() if cls.bf16_refused is None and not cls.experimental))
def test_image_models_train_under_bf16_autocast(name):
    torch.manual_seed(0)
    x = torch.rand(48, 3, 784)
    model = build_model(name, n_modalities=3, modality_dim=784, architecture="conv", latent_dim=4)
    result = train(model, x, x[:16], TrainConfig(epochs=1, batch_size=16, precision="bf16"))
    assert math.isfinite(result.history[0]["train_loss"]) and math.isfinite(result.best_val_loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay fp32


@pytest.mark.parametrize("name", ["gmrf", "mvae"])
def test_a_run_resumed_from_its_snapshot_trains_step_for_step_as_one_that_was_not_stopped(data, name, tmp_path):
    config = TrainConfig(epochs=4, batch_size=64, kl_warmup=0.3)

    def run(resume=None, keep_after=None):
        torch.manual_seed(0)
        model = build_model(name)
        kept = {}

        def on_epoch(epoch, record, snapshot):
            if epoch == keep_after:
                torch.save(snapshot(), tmp_path / "state.pt")  # as a sweep's checkpoint does
                kept["state"] = torch.load(tmp_path / "state.pt", weights_only=False)

        return model, train(model, data["train"], data["val"], config, on_epoch, resume), kept

    whole, whole_result, kept = run(keep_after=2)
    resumed, resumed_result, _ = run(resume=kept["state"])
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r["val_loss"] for r in resumed_result.history] == [r["val_loss"] for r in whole_result.history]
    assert resumed_result.best_epoch == whole_result.best_epoch and len(resumed_result.history) == 4


def test_a_run_whose_outputs_overflow_fails_as_a_numerical_failure(data):
    """Finite weights that compute non-finite distribution parameters: the run's numerical failure with a
    one-line reason, not the distribution's ValueError."""
    model = build_model("gmrf", n_modalities=4, modality_dim=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1e30)
    with pytest.raises(FloatingPointError, match="computed non-finite values at epoch 1"):
        train(model, data["train"][:64], data["val"][:32], TrainConfig(epochs=1, batch_size=64, kl_warmup=0.0))


def test_bf16_falls_back_to_fp32_with_a_line_where_the_device_has_no_native_bfloat16(monkeypatch, capsys):
    import mrfbench.training

    cpu = torch.device("cpu")
    monkeypatch.setattr(mrfbench.training, "native_bf16", lambda device: False)
    assert resolve_precision("bf16", cpu) == "fp32"
    assert "no native bfloat16, so the run trains in fp32" in capsys.readouterr().err
    assert resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(mrfbench.training, "native_bf16", lambda device: True)
    assert resolve_precision("bf16", cpu) == "bf16"
    assert capsys.readouterr().err == ""
