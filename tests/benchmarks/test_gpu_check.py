"""The GPU check script's steps, run on the CPU at a tiny size so that the script cannot rot between the
sessions that are lent a GPU."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("gpu_check.sh")


@pytest.mark.slow
def test_the_gpu_check_runs_its_steps_on_the_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_TINY": "1", "GPU_CHECK_INSTALL": "0",
           "GPU_CHECK_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "first-step losses match" in out, out
    assert "speed-up" in out and "gmrf          64    2" in out, out
    assert "gmrf: 4 runs" in out and "mopoe: 4 runs" in out, out
    assert "copula leaderboard" in out and (tmp_path / "grid" / "leaderboard.md").exists(), out
