"""What a sweep's driver does as trials end, as Ray Tune callbacks: a line per finished trial above a
compact bar on a terminal, the results table rewritten, and (``--mlflow``) each trial logged to MLflow."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ray.tune import Callback
from rich.progress import Progress

from mrfbench.runs import read_json_object
from mrfbench.sweeps.records import mark_died, mark_stopped, write_results_table


class SweepProgress(Callback):
    """A line per finished trial (model, stage, seeds, its figures or why it failed, its time, runs done of
    all, a pack's members each one, and the ETA), printed as it ends, above a compact bar on a terminal and
    alone in a log; keeps the best score of each model in each stage. A resumed sweep counts the runs it
    ``finished`` before, (done, failed), and times what is left by this sitting's runs alone."""

    def __init__(self, progress: Progress, total: int, finished: tuple[int, int] = (0, 0)):
        self.progress, self.total, self.done, self.failed = progress, total, 0, 0
        self.before = sum(finished)
        self.running: dict[str, str] = {}  # trial id -> "model stage"
        self.best: dict[str, float] = {}  # "model stage" -> best score
        self.started_at = time.monotonic()
        self.task = progress.add_task("sweep", total=total, completed=self.before, status="")

    def __getstate__(self) -> dict:
        """Ray pickles its run config with the callbacks; the live display stays in this process."""
        return {**self.__dict__, "progress": None}

    def _show(self) -> None:
        if self.progress is not None:
            status = f"{len(self.running)} running" + (f", {self.failed} failed" if self.failed else "")
            self.progress.update(self.task, completed=self.before + self.done + self.failed, status=status)

    def _line(self, trial, outcome: str) -> None:
        """The finished trial's line, printed above the bar."""
        if self.progress is None:
            return
        now = self.done + self.failed
        elapsed = time.monotonic() - self.started_at
        left = self.total - self.before - now
        eta = f", ETA {_duration(elapsed / now * left)}" if now and left > 0 else ""
        self.progress.console.print(f"[{self.before + now}/{self.total}] {_describe(trial)}: {outcome}{eta}",
                                    highlight=False, markup=False, soft_wrap=True)

    @staticmethod
    def _label(trial) -> str:
        spec = trial.config.get("trial", {})
        return f"{spec.get('model', '?')} {spec.get('stage', '')}"

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = self._label(trial)
        self._show()

    @staticmethod
    def _runs(trial) -> int:
        from mrfbench.sweeps.trial import TrialSpec

        return TrialSpec(**trial.config["trial"]).runs if "trial" in trial.config else 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        label = self.running.pop(trial.trial_id, self._label(trial))
        result = trial.last_result or {}
        if result.get("failed"):
            self.failed += self._runs(trial)
            self._show()
            self._line(trial, "failed (its reason: trial.json)")
            return
        self.done += self._runs(trial)
        scored = "train_wall_time_s" in result and math.isfinite(result.get("score", math.nan))
        if scored:  # not stopped by ASHA
            self.best[label] = min(self.best.get(label, math.inf), result["score"])
        self._show()
        self._line(trial, _figures(trial, result) if scored else "stopped early by ASHA")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.pop(trial.trial_id, None)
        self.failed += self._runs(trial)
        self._show()
        self._line(trial, "failed (its worker ended)")


def _describe(trial) -> str:
    """A trial as people read it (``trial_name``), or its id where it has no spec."""
    from mrfbench.sweeps.trial import trial_name

    return trial_name(trial.config) if "trial" in trial.config else str(trial.trial_id)


def _figures(trial, result: dict) -> str:
    """The score and the figures behind it, and the training time."""
    from mrfbench.evaluators import get_evaluator

    parts = [f"{key} {result[key]:.4g}" for key in get_evaluator(trial.config["trial"]["dataset"]).score_parts
             if key in result]
    return ", ".join([f"score {result['score']:.4g}", *parts]) + f" ({_duration(result['train_wall_time_s'])} training)"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class ResultsTable(Callback):
    """Rewrites the sweep's ``results.csv`` each time a trial ends (one the scheduler stopped is marked so)."""

    def __init__(self, sweep_dir):
        self.sweep_dir = sweep_dir

    def on_trial_complete(self, iteration, trials, trial, **info):
        mark_stopped(Path(trial.local_path), trial.last_result or {})
        write_results_table(self.sweep_dir)

    def on_trial_error(self, iteration, trials, trial, **info):
        mark_died(Path(trial.local_path), died_reason(trial))
        write_results_table(self.sweep_dir)


def died_reason(trial) -> str:
    """Why Tune lost a trial, in one line: its worker died (a kill, or the out-of-memory killer) or raised
    past the trial's own guard."""
    error = trial.get_error() if hasattr(trial, "get_error") else None
    text = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else "no error message"
    died = error is not None and type(error).__name__ in ("RayActorError", "ActorDiedError", "WorkerCrashedError")
    return (f"its worker process died, likely killed or out of memory ({text[:200]})" if died or error is None
            else f"{type(error).__name__}: {text[:200]}")


class MlflowTrials(Callback):
    """Logs each finished trial (each member of a pack) to MLflow at ``uri``, in the experiment named after
    the sweep, with its stage, seed and trial name as tags (``mrfbench.tracking.log_run``)."""

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment

    def on_trial_complete(self, iteration, trials, trial, **info):
        from mrfbench.sweeps.records import PACK_MEMBER, TRIAL_FILE
        from mrfbench.sweeps.trial import trial_name
        from mrfbench.tracking import log_run

        folder = Path(trial.local_path)
        for record_file in [folder / TRIAL_FILE, *sorted(folder.glob(f"{PACK_MEMBER}/{TRIAL_FILE}"))]:
            record = read_json_object(record_file) if record_file.is_file() else {}
            if record.get("status") == "ok" and (record_file.parent / "run").is_dir():
                name = f"{trial_name(trial.config)} / seed {record['seed']}"
                log_run(self.uri, self.experiment, record_file.parent / "run", name,
                        tags={"stage": record["stage"], "seed": str(record["seed"])}, figures=record.get("metrics"))


class FinalStudy(Callback):
    """Rewrites the final stage's Optuna study each time one of its trials ends, so it can be watched."""

    def __init__(self, sweep_dir, storage_url: str, name: str):
        self.sweep_dir, self.storage_url, self.name = sweep_dir, storage_url, name

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.config.get("trial", {}).get("stage") == "final":
            from mrfbench.sweeps.studies import record_final_study

            record_final_study(Path(self.sweep_dir), self.storage_url, self.name)
