"""What a sweep needs of the Ray cluster it runs on, checked before any trial starts: a node that a trial
fits, and, on a cluster joined by ``--address``, the sweep folder on a filesystem every node shares (a trial
writes its run and record there from whichever node runs it, and the driver reads them back)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mrfbench.errors import UsageError, first_line

SHARED_CHECK_TIMEOUT_S = 120.0


def check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """A trial must fit one node of the cluster (Tune would otherwise wait for it forever)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for flag, asked, kind in (("--cpus-per-trial", cpus_per_trial, "CPU"), ("--gpus-per-trial", gpus_per_trial, "GPU")):
        most = max((node.get(kind, 0.0) for node in nodes), default=0.0)
        if asked > most:
            raise UsageError(f"{flag} {asked:g} is more than any node of the Ray cluster has ({most:g} {kind}s): "
                             "no trial could start")


def reads(path: str) -> str | None:
    """The text of ``path`` as this process sees it (None where it cannot be read)."""
    try:
        return Path(path).read_text()
    except OSError:
        return None


def check_shared_folder(folder: Path) -> None:
    """Every node that can run a trial sees ``folder`` as this process does: a token written here is read
    back on each node by a task pinned to it; a node that reads something else is named, in one line."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token, probe = secrets.token_hex(16), folder / f".mrfbench-shared-{os.getpid()}"
    probe.write_text(token)
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive") and node["Resources"].get("CPU", 0) > 0]
        task = ray.remote(num_cpus=0)(reads)
        pending = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                   .remote(str(probe)) for node in nodes]
        try:
            seen = ray.get(pending, timeout=SHARED_CHECK_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise UsageError(f"the Ray cluster's nodes did not answer within {SHARED_CHECK_TIMEOUT_S:.0f} s whether "
                             f"they see the sweep folder {folder}") from None
        except ray.exceptions.RayError as err:  # e.g. mrfbench not importable on a node
            raise UsageError(f"a Ray node could not check that it sees the sweep folder {folder} "
                             f"({type(err).__name__}: {first_line(err)})") from None
    finally:
        probe.unlink(missing_ok=True)
    blind = [node["NodeManagerAddress"] for node, text in zip(nodes, seen) if text != token]
    if blind:
        raise UsageError(f"the sweep folder {folder} is not shared with the Ray node(s) at {', '.join(blind)}: trials "
                         "write their runs there from whichever node runs them; give --out on a filesystem every "
                         "node mounts at the same path (NFS, say)")
