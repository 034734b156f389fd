"""Rich progress of a sweep as a whole, fed by a Ray Tune callback: trials done, running, failed, best."""

from __future__ import annotations

import math

from ray.tune import Callback
from rich.progress import Progress


class SweepProgress(Callback):
    """Keeps counts of trials and the best score so far and shows them on a rich progress bar."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.running, self.done, self.failed, self.best = progress, 0, 0, 0, math.inf
        self.task = progress.add_task("sweep", total=total, status="")

    def __getstate__(self) -> dict:
        """Ray pickles its run config with the callbacks; the live display stays in this process."""
        return {**self.__dict__, "progress": None}

    def _show(self) -> None:
        if self.progress is None:
            return
        best = "-" if math.isinf(self.best) else f"{self.best:.2f}"
        status = f"running {self.running}  done {self.done}  failed {self.failed}  best score {best}"
        self.progress.update(self.task, completed=self.done + self.failed, status=status)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running -= 1
        score = (trial.last_result or {}).get("score", math.nan)
        if math.isfinite(score):
            self.done += 1
            self.best = min(self.best, score)
        else:
            self.failed += 1
        self._show()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running -= 1
        self.failed += 1
        self._show()
