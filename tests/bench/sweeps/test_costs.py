"""A stage's epoch times, measured before it starts to order its jobs."""

import torch

from mrfbench.sweeps.costs import epoch_seconds


def test_epoch_times_rank_the_models_and_leave_the_random_state_alone():
    state = torch.get_rng_state()
    seconds = epoch_seconds("copula", {"n_train": 512, "n_val": 64, "n_test": 64},
                            {"gmrf": {"batch_size": 128}, "nnmrf": {"batch_size": 128}})
    assert set(seconds) == {"gmrf", "nnmrf"} and all(s > 0 for s in seconds.values())
    assert seconds["nnmrf"] > 1.5 * seconds["gmrf"]  # its sampled log-partition gradient: about 4x a GMRF step
    assert torch.equal(torch.get_rng_state(), state)
