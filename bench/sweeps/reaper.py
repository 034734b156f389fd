"""Ends the Ray processes a sweep's driver started when the driver dies without shutting Ray down (kill -9,
the out-of-memory killer): Ray's dashboard and runtime-env agents would otherwise outlive it by minutes. A
watchdog process started beside the driver notes the driver's descendants every second; once the driver is
gone it ends those still running, known by their PIDs and start times (never by name, so nothing it did not
see start is touched), and removes the copy of every trial that Tune staged in the Ray session the driver
started. Linux (``/proc``); elsewhere no watchdog starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, int] | None:
    """A process's parent PID and start time (clock ticks after boot), None once it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """The processes below ``root``, each PID with its start time."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            started[int(entry.name)] = stat[1]
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in started and pid not in found:
            found[pid] = started[pid]
            todo.extend(children.get(pid, []))
    return found


def _alive(noted: dict[int, int]) -> list[int]:
    return [pid for pid, start in noted.items() if (stat := _stat(pid)) is not None and stat[1] == start]


def watch(driver: int, staged: Path | None = None, every: float = 1.0, grace: float = 5.0) -> None:
    """Note ``driver``'s descendants until it is gone, then end those still running (SIGTERM, and SIGKILL
    after ``grace`` seconds) and remove ``staged``, where Tune kept its copies of the driver's trials."""
    first = _stat(driver)
    noted: dict[int, int] = {}
    while first is not None and (stat := _stat(driver)) is not None and stat[1] == first[1]:
        noted.update(descendants(driver))
        noted.pop(os.getpid(), None)  # the watchdog is the driver's child too
        time.sleep(every)
    for how, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pid in _alive(noted):
            try:
                os.kill(pid, how)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while _alive(noted) and time.monotonic() < deadline:
            time.sleep(0.2)
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


def staged_trials() -> Path | None:
    """Where Tune stages a copy of each trial (``artifacts/`` of the Ray session), where this process started
    that Ray; None where it joined one (the session is the cluster's)."""
    import ray

    node = ray._private.worker._global_node  # Ray Train finds its staging folder the same way
    return Path(node.get_session_dir_path()) / "artifacts" if node is not None and node.head else None


def start_reaper(staged: Path | None = None) -> None:
    """Start the watchdog of this process (in a session of its own, so a Ctrl-C of the sweep spares it)."""
    if PROC.joinpath("self", "stat").exists():
        subprocess.Popen([sys.executable, "-m", "mrfbench.sweeps.reaper", str(os.getpid()), *([str(staged)] if staged else [])],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
