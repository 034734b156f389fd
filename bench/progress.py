"""Rich progress of a sweep as a whole, fed by a Ray Tune callback: the stage and models running, trials
done and failed, the best score of each model in each stage."""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune import Callback
from rich.progress import Progress

from mrfbench.sweep.records import mark_stopped, write_results_table


class SweepProgress(Callback):
    """Keeps counts of trials and the best score so far and shows them on a rich progress bar."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.done, self.failed = progress, 0, 0
        self.running: dict[str, str] = {}  # trial id -> "model stage"
        self.best: dict[str, float] = {}  # "model stage" -> best score
        self.task = progress.add_task("sweep", total=total, status="")

    def __getstate__(self) -> dict:
        """Ray pickles its run config with the callbacks; the live display stays in this process."""
        return {**self.__dict__, "progress": None}

    def _show(self) -> None:
        if self.progress is None:
            return
        running = ", ".join(sorted(set(self.running.values()))) or "-"
        best = "  ".join(f"{key} {score:.3g}" for key, score in sorted(self.best.items())) or "-"
        status = f"running {len(self.running)} ({running})  failed {self.failed}  best score: {best}"
        self.progress.update(self.task, completed=self.done + self.failed, status=status)

    @staticmethod
    def _label(trial) -> str:
        spec = trial.config.get("trial", {})
        return f"{spec.get('model', '?')} {spec.get('stage', '')}"

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = self._label(trial)
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        label = self.running.pop(trial.trial_id, self._label(trial))
        result = trial.last_result or {}
        if result.get("failed"):
            self.failed += 1
            self._show()
            return
        self.done += 1
        if "train_wall_time_s" in result and math.isfinite(result.get("score", math.nan)):  # scored, not stopped by ASHA
            self.best[label] = min(self.best.get(label, math.inf), result["score"])
        self._show()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.pop(trial.trial_id, None)
        self.failed += 1
        self._show()


class ResultsTable(Callback):
    """Rewrites the sweep's ``results.csv`` each time a trial ends (one the scheduler stopped is marked so)."""

    def __init__(self, sweep_dir):
        self.sweep_dir = sweep_dir

    def on_trial_complete(self, iteration, trials, trial, **info):
        mark_stopped(Path(trial.local_path), trial.last_result or {})
        write_results_table(self.sweep_dir)

    def on_trial_error(self, iteration, trials, trial, **info):
        write_results_table(self.sweep_dir)
