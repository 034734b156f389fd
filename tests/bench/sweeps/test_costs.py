"""What a training tuple costs each model of a stage, measured before it starts to order its jobs."""

import torch

from mrfbench.sweeps.costs import tuple_seconds


def test_tuple_times_rank_the_models_and_leave_the_random_state_alone():
    state = torch.get_rng_state()
    seconds, skipped = tuple_seconds("copula", {}, {"gmrf": {"batch_size": 128}, "nnmrf": {"batch_size": 128},
                                                    "mvae": {"batch_size": 128, "latent_dim": -1}})
    assert set(seconds) == {"gmrf", "nnmrf"} and all(s > 0 for s in seconds.values())
    assert seconds["nnmrf"] > 1.5 * seconds["gmrf"]  # its sampled log-partition gradient: about 4x a GMRF step
    assert len(skipped) == 1 and skipped[0].startswith("mvae (")  # a config it cannot build keeps its place
    assert torch.equal(torch.get_rng_state(), state)
