"""A real two-node Ray cluster on this machine: a head and a worker node started with `ray start`, a small
sweep joined to it with --address, trials spread over both nodes, both nodes shut down afterwards."""

import json
import os
import socket
import subprocess
import sys

import pytest

from mrfbench.sweep import results_records


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sweep_runs_trials_on_two_nodes(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    # `ray start --head` turns on token authentication; every process joining the cluster must use it too
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "RAY_AUTH_MODE": "token"}
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    try:
        subprocess.run([*ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
                       check=True, capture_output=True, env=env, timeout=180)
        subprocess.run([*ray_cli, "start", f"--address={address}", "--num-cpus=1"],
                       check=True, capture_output=True, env=env, timeout=180)
        space = tmp_path / "space.yaml"
        space.write_text("dataset: copula\nepochs: 1\nseeds: 4\nparams:\n  beta: {grid: [1.0]}\nmodels:\n  gmrf: {}\n")
        out = tmp_path / "sweep"
        proc = subprocess.run(
            [sys.executable, "-m", "mrfbench", "sweep", "--out", str(out), "--space", str(space), "--grid",
             "--address", address, "--cpus-per-trial", "1", "--results-dir", str(tmp_path / "results")],
            capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        nodes = {r["node_id"] for r in results_records(out)}
        print("trials ran on nodes:", sorted(nodes))
        assert len(results_records(out)) == 4 and len(nodes) == 2
        assert json.loads((out / "sweep.json").read_text())["address"] == address
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)
