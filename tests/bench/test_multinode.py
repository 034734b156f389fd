"""A real two-node Ray cluster on this machine: a head and a worker node started with `ray start`, a small
sweep joined to it with --address, trials spread over both nodes. The test stops exactly the Ray processes
it started (those under its own --temp-dir), never every Ray on the host: a bystander cluster started
beside it is still alive afterwards."""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mrfbench.sweeps import results_records

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
SMALL = ["--n-train", "256", "--n-val", "64", "--n-test", "32", "--n-unconditional", "2000", "--n-per-tuple", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_under(temp_dir: str) -> set[int]:
    """Processes whose command line names ``temp_dir`` (every process of a Ray node started with it)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids - {os.getpid()}


def stop_ray_under(temp_dir: str, timeout: float = 5.0) -> None:
    """Terminate the Ray processes started with ``temp_dir``, then kill what remains after ``timeout`` (some of
    Ray's processes outlive a SIGTERM for good)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids_under(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids_under(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)


def start_node(temp_dir: str, env: dict, *args: str, hiding: Path | None = None) -> None:
    """`ray start`; with ``hiding``, in a mount namespace of its own where that folder is an empty tmpfs: a
    node that does not share the folder's filesystem with this one, as another machine would not."""
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", f'mount -t tmpfs none "{hiding}" && exec "$@"',
              "sh"] if hiding else []
    subprocess.run([*prefix, *RAY_CLI, "start", f"--temp-dir={temp_dir}", *args],
                   check=True, capture_output=True, env=env, timeout=180)


def can_hide_folders() -> bool:
    """Whether this process may make mount namespaces (root, or CAP_SYS_ADMIN)."""
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_sweep_on_two_nodes_with_declared_gpus_places_packs_on_both_and_falls_back_to_the_cpu(tmp_path):
    """Two nodes that declare 2 GPUs each (they have none): half a GPU per trial admits 8 trials at once (the
    CPUs would admit 16); the trials spread over both nodes, each sees one GPU id of its node in
    CUDA_VISIBLE_DEVICES, finds no CUDA, and trains on the CPU. Stopping the test's cluster leaves a bystander
    cluster beside it running."""
    # token authentication with a token of the test's own (the user's ~/.ray is left alone); every process
    # joining the cluster uses it
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # short temp dirs: Ray's unix socket paths must stay under 108 characters
    ours, bystander = tempfile.mkdtemp(prefix="mrfgpu-"), tempfile.mkdtemp(prefix="mrfother-")
    port, bystander_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    try:
        start_node(bystander, env, "--head", f"--port={bystander_port}", "--num-cpus=0",
                   "--include-dashboard=false")
        start_node(ours, env, "--head", f"--port={port}", "--num-cpus=4", "--num-gpus=2", "--include-dashboard=false")
        start_node(ours, env, f"--address={address}", "--num-cpus=4", "--num-gpus=2")
        space = tmp_path / "space.yaml"
        betas = ", ".join(str(0.1 * (i + 1)) for i in range(10))
        space.write_text(f"dataset: copula\nepochs: 1\nseeds: 2\nparams:\n  beta: {{grid: [{betas}]}}\nmodels:\n  gmrf: {{}}\n")
        out = tmp_path / "sweep"
        proc = subprocess.run(
            [sys.executable, "-m", "mrfbench", "sweep", "--out", str(out), "--space", str(space), "--grid",
             "--address", address, "--cpus-per-trial", "0.25", "--gpus-per-trial", "0.5", "--device", "auto", *SMALL],
            capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = results_records(out)
        assert len(records) == 20 and all(r["status"] == "ok" for r in records)  # 10 packs of 2 seeds
        nodes = {r["node_id"] for r in records}
        print("trials ran on nodes:", sorted(nodes))
        assert len(nodes) == 2
        assert all(r["cuda_visible_devices"] in ("0", "1") for r in records)
        for record in records:
            metrics = json.loads(next(out.glob(f"final/*/seed{record['seed']}/run/metrics.json")).read_text())
            assert metrics["training"]["device"] == "cpu"
        spans = sorted({(r["started"], r["finished"]) for r in records})
        assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) <= 8  # the declared GPUs' limit
        assert json.loads((out / "sweep.json").read_text())["address"] == address
        stop_ray_under(ours)
        assert not pids_under(ours)
        with socket.create_connection(("127.0.0.1", bystander_port), timeout=10):
            pass  # the other cluster's head still answers
    finally:
        for temp_dir in (ours, bystander):
            stop_ray_under(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not can_hide_folders(), reason="a node without the shared folder needs a mount namespace (root)")
def test_a_sweep_refuses_a_cluster_whose_nodes_do_not_share_its_folder(tmp_path):
    """A worker node that sees another filesystem at the sweep folder's path (here: a mount namespace with an
    empty tmpfs there) would write its trials where the driver never reads them: refused in one line before
    any trial, and the folder the sweep would have made is not left behind."""
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ours, port = tempfile.mkdtemp(prefix="mrfnfs-"), free_port()
    address = f"127.0.0.1:{port}"
    try:
        start_node(ours, env, "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false")
        start_node(ours, env, f"--address={address}", "--num-cpus=1", hiding=tmp_path)
        out = tmp_path / "sweep"
        proc = subprocess.run(
            [sys.executable, "-m", "mrfbench", "sweep", "--out", str(out), "--space", "copula_quick", "--grid",
             "--address", address, "--epochs", "1"], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert re.search(f"the sweep folder {out} is not shared with the Ray node.s. at [0-9.]+: ", proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    finally:
        stop_ray_under(ours)
        shutil.rmtree(ours, ignore_errors=True)
