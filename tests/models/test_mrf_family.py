"""The MRF family's draws stay those recorded before its prior parts took over sampling: a loss, prior
draws and conditional draws of each member at one seed, to float32 rounding (``fixtures/mrf_family_draws.json``;
regenerate with ``python tests/models/test_mrf_family.py`` only for a change meant to alter them)."""

import json
import sys
from pathlib import Path

import pytest
import torch

from mrfbench.models import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "mrf_family_draws.json"
FAST_MH = {"mh_chains": 64, "mh_burn_in": 10, "mh_thin": 2, "collapse_samples": 128, "pcd_chains": 32}
VARIANTS = {
    "gmrf": ("gmrf", {}),
    "gmrf-mean": ("gmrf", {"conditional_missing": "mean"}),
    "almrf": ("almrf", {}),
    "almrf-exact": ("almrf", {"conditional": "exact"}),
    "almrf-mean": ("almrf", {"conditional_missing": "mean"}),
    "nnmrf": ("nnmrf", FAST_MH),
    "nnmrf-sample": ("nnmrf", {**FAST_MH, "conditional_latent": "sample"}),
}


def draws(name: str) -> dict[str, list]:
    """One seeded model's loss, 6 prior draws and 2 conditional draws of 3 tuples given modalities 0 and 2."""
    model, options = VARIANTS[name]
    torch.manual_seed(0)
    net = build_model(model, hidden=16, **options)
    x = torch.rand(8, 4, 2)
    loss = net.loss(x).loss
    torch.manual_seed(1)
    sample = net.sample(6)
    torch.manual_seed(2)
    conditional = net.conditional_sample(x[:3], [0, 2], 2)
    return {"loss": [loss.item()], "sample": sample.flatten().tolist(), "conditional": conditional.flatten().tolist()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_losses_and_draws_are_those_recorded(name):
    recorded = json.loads(FIXTURE.read_text())[name]
    for key, values in draws(name).items():
        torch.testing.assert_close(torch.tensor(values), torch.tensor(recorded[key]), rtol=1e-6, atol=1e-6)



def test_the_family_samples_through_its_prior_parts_alone():
    """One sampling interface (``sample``, ``sample_missing``) on the prior parts: no member overrides it."""
    from mrfbench.models.almrf import ALMRFMVAE
    from mrfbench.models.gmrf import GMRFMVAE
    from mrfbench.models.mrf import MRFMVAE
    from mrfbench.models.mrf_family import EnergyPriorMVAE
    from mrfbench.models.nnmrf import NNMRFMVAE

    for member in (GMRFMVAE, ALMRFMVAE, EnergyPriorMVAE, NNMRFMVAE, MRFMVAE):
        assert not {"sample_latents", "sample_missing"} & set(vars(member)), member.__name__


if __name__ == "__main__" and sys.argv[1:] == []:
    FIXTURE.write_text(json.dumps({name: draws(name) for name in VARIANTS}) + "\n")


@pytest.mark.parametrize("name", ["gmrf", "nnmrf"])
def test_a_checkpoint_from_before_the_parts_loads(name):
    """State dicts saved before the family was built from parts (``LEGACY_KEYS``) load into the parts."""
    from mrfbench.models.mrf_family import LEGACY_KEYS

    torch.manual_seed(0)
    saved = build_model(name).state_dict()
    renamed = {}
    for key, value in saved.items():
        old = next((o for o, n in LEGACY_KEYS.items() if key.startswith(n)), None)
        renamed[key if old is None else old + key[len(LEGACY_KEYS[old]):]] = value
    assert set(renamed) != set(saved)
    model = build_model(name)
    model.load_state_dict(renamed)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in saved.items())
