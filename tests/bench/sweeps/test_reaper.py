"""The watchdog of a sweep's driver: what the driver started ends with it, whichever way it ends."""

import subprocess
import sys
import threading
import time
from pathlib import Path

from mrfbench.sweeps.reaper import descendants, watch


def running(pid: int, start: int) -> bool:
    """The same process (not a reused PID), not a zombie."""
    try:
        state, *fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return state != "Z" and fields[18] == str(start)


def test_once_the_driver_is_gone_its_processes_end_and_tunes_copies_of_its_trials_go(tmp_path):
    staged = tmp_path / "artifacts" / "2026-12-07_09-08-04" / "final" / "driver_artifacts" / "trial_00000"
    staged.mkdir(parents=True)
    (staged / "checkpoint.pt").write_bytes(b"a copy of a trial")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    driver = subprocess.Popen([sys.executable, "-c", f"import subprocess, time; subprocess.Popen({sleeper!r}); time.sleep(60)"])
    outsider = subprocess.Popen(sleeper)  # not the driver's
    try:
        deadline = time.monotonic() + 30
        while not (children := descendants(driver.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children, "the driver started no process"
        watching = threading.Thread(target=watch, args=(driver.pid, tmp_path / "artifacts", 0.1, 1.0))
        watching.start()
        time.sleep(0.5)  # the watchdog has noted the driver's child
        driver.kill()
        driver.wait()
        watching.join(timeout=20)
        assert not watching.is_alive() and not (tmp_path / "artifacts").exists()
        assert not any(running(*child) for child in children.items()) and outsider.poll() is None
    finally:
        outsider.kill()
