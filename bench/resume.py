"""A single run's training state, kept beside its folder while it trains, so that `mrfbench train` stopped
midway continues where it was when run again."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mrfbench.errors import UsageError
from mrfbench.runs import save_checkpoint

SAVE_EVERY_S = 300.0  # a stopped run loses at most this much training (and its last epoch is always saved)
SAME_RUN = ("model", "model_config", "dataset", "dataset_config")  # with the training settings but the device


def state_file(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.state.pt"


def _identity(config: dict) -> dict:
    return {**{k: config.get(k) for k in SAME_RUN}, "train": {k: v for k, v in config["train"].items() if k != "device"}}


def load_state(run_dir: Path, config: dict, overwrite: bool) -> dict | None:
    """The training state of an interrupted run of ``config`` at ``run_dir`` (None: none, or ``overwrite``
    asks to start again). A state of other settings is refused rather than continued or lost."""
    path = state_file(run_dir)
    if not path.exists():
        return None
    if overwrite:
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        identity, state = saved["identity"], saved["state"]
    except Exception as err:  # a damaged file: torch raises many types
        raise UsageError(f"cannot read the interrupted run's state {path} ({type(err).__name__}); pass --overwrite "
                         "to start the run again") from None
    if identity != _identity(config):
        changed = sorted(k for k in identity if identity[k] != _identity(config).get(k))
        raise UsageError(f"{run_dir} holds an interrupted run with other settings ({', '.join(changed)} differ); "
                         "run it again as it was to continue it, or pass --overwrite to start again")
    return state


class StateSaver:
    """Saves the training state of ``config``'s run at ``run_dir`` after an epoch, at most every
    ``SAVE_EVERY_S`` seconds and always after the last one (scoring, which follows, may be stopped too)."""

    def __init__(self, run_dir: Path, config: dict, epochs: int):
        self.path, self.identity, self.epochs = state_file(run_dir), _identity(config), epochs
        self.saved_at = time.monotonic()

    def __call__(self, epoch: int, snapshot) -> None:
        if epoch == self.epochs or time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            save_checkpoint(self.path, {"identity": self.identity, "state": snapshot()})
            self.saved_at = time.monotonic()

    def finished(self) -> None:
        self.path.unlink(missing_ok=True)
