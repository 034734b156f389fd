import numpy as np
import torch

from mrfbench.datasets import get_dataset
from mrfbench.evaluate import EvalConfig
from mrfbench.evaluators.copula import _conditional


class LawSampler(torch.nn.Module):
    """A stand-in model whose conditional generations come from the exact copula law: given what is
    observed (``uses_observed``), or ignoring it (exact unconditional samples: right marginals, no link)."""

    def __init__(self, law, uses_observed: bool):
        super().__init__()
        self.law, self.uses_observed, self.rng = law, uses_observed, np.random.default_rng(1)

    def conditional_sample(self, x, observed, n_per, diagnostics=None):
        (k,) = observed
        if self.uses_observed:
            out = self.law.conditional_sample(x[:, k].numpy(), k, n_per, self.rng)
        else:
            out = self.law.sample(len(x) * n_per, self.rng).reshape(len(x), n_per, *x.shape[1:])
        return torch.as_tensor(out, dtype=torch.float32)


def test_per_tuple_conditional_w1_sees_what_the_pooled_one_cannot():
    """Pooled over tuples (the paper's figure), a model that ignores the observed modality stays within a
    few noise floors of the exact conditional law; per tuple it is far above the floor, the exact law on it."""
    dataset = get_dataset("copula", n_train=16, n_val=16, n_test=400, seed=0)
    test, config = dataset.splits()["test"], EvalConfig(n_per_tuple=20)
    scores = {uses: _conditional(LawSampler(dataset.law, uses), dataset, test, config, np.random.default_rng(0),
                                 torch.device("cpu")) for uses in (True, False)}
    exact, ignoring = scores[True], scores[False]
    floor = exact["per_tuple"]["floor"]["wasserstein_mean"]
    assert abs(exact["per_tuple"]["wasserstein_mean"] - floor) < 0.1 * floor
    assert ignoring["per_tuple"]["wasserstein_mean"] > 3 * floor
    assert ignoring["wasserstein_mean"] - exact["wasserstein_mean"] < 3 * exact["floor"]["wasserstein_mean"]


def test_the_scores_of_an_mcmc_model_hold_its_samplers_acceptance_rates():
    """The NN-MRF's Metropolis-Hastings acceptance, unconditional and given each modality, comes back with
    the scores it was drawn for (nothing is left on the model); a model without MCMC reports none."""
    from mrfbench.evaluators.copula import evaluate_copula
    from mrfbench.models import build_model

    dataset = get_dataset("copula", n_train=16, n_val=16, n_test=20, seed=0)
    test, config = dataset.splits()["test"], EvalConfig(n_unconditional=500, n_per_tuple=2, n_joint=500, n_tau=200,
                                                         n_projections=10)
    shape = {"n_modalities": 4, "modality_dim": 2}
    torch.manual_seed(0)
    nnmrf = build_model("nnmrf", **shape, mh_chains=64, mh_burn_in=10, mh_thin=1, collapse_samples=64)
    scores, _ = evaluate_copula(nnmrf, dataset, test, config, torch.device("cpu"))
    assert set(scores["sampler"]) == {"mh_acceptance_unconditional", *(f"mh_acceptance_given_{k}" for k in range(4))}
    assert all(0 < rate <= 1 for rate in scores["sampler"].values()) and not hasattr(nnmrf, "sampler_diagnostics")
    scores, _ = evaluate_copula(build_model("gmrf", **shape), dataset, test, config, torch.device("cpu"))
    assert "sampler" not in scores
