"""Run directories: atomic writes of config, metrics and checkpoint, and clear errors when reading them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mrfbench.errors import ERROR_LOG_PREFIX, UsageError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "checkpoint.pt"
PAIRPLOT_FILE = "pairplot.png"
SAMPLE_GRID_FILE = "samples.png"  # image data: inputs of modality 0, then generations of the others
CURVE_CSV, CURVE_PLOT = "learning_curve.csv", "learning_curve.png"  # a run scored while training (`--score-every`)
LOSS_PLOT = "curves.png"  # the training and validation losses over epochs
RUN_FILES = (CONFIG_FILE, METRICS_FILE, HISTORY_FILE, CHECKPOINT_FILE, PAIRPLOT_FILE, SAMPLE_GRID_FILE, CURVE_CSV,
             CURVE_PLOT, LOSS_PLOT)
CURVES_PREFIX = "events.out.tfevents"  # TensorBoard scalars of `mrfbench train`



def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through a temporary sibling (``.NAME.PID-XXXX.tmp``) renamed into place, with the
    permissions a plain ``open`` would give (mkstemp's are 0600). Temporaries of ``path`` that a killed
    writer left are removed first."""
    _remove_orphaned_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_orphaned_temporaries(path: Path) -> None:
    """The temporary siblings of ``path`` whose writing process is gone (killed mid-write)."""
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for tmp in path.parent.iterdir():
            pid = tmp.name[len(prefix):].partition("-")[0]
            if tmp.name.startswith(prefix) and tmp.name.endswith(".tmp") and pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as null, so that strict JSON readers accept it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON (NaN and infinities as null) atomically: readers see the old file or the new one,
    never a partial one."""
    atomic_write(path, lambda h: h.write(json.dumps(strict_json(obj), indent=2, allow_nan=False).encode()))


class Curves:
    """A run's TensorBoard record in ``folder``: each epoch's losses as it ends (on disk within a second, so
    `tensorboard` shows them live), then its settings as hparams with its final figures, and its pictures."""

    def __init__(self, folder: Path, history: list[dict] = ()):
        from tensorboardX import SummaryWriter

        self.folder, self.writer = Path(folder), SummaryWriter(str(folder), flush_secs=1)
        for record in history:  # a continued run's epochs before it stopped
            self.epoch(record)

    def epoch(self, record: dict) -> None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["epoch"])

    def finish(self, settings: dict[str, str], figures: dict[str, float], pictures: list[Path]) -> None:
        """The run's settings as hparams beside its final figures, and its pictures; closes the record."""
        import numpy as np
        from PIL import Image

        self.writer.add_hparams(settings, {f"final/{k}": v for k, v in figures.items()}, name=".")
        for picture in pictures:
            if picture.exists():
                image = np.asarray(Image.open(picture).convert("RGB"))
                self.writer.add_image(picture.stem, image, dataformats="HWC")
        self.writer.close()


def save_checkpoint(path: Path, payload: dict) -> None:
    atomic_write(path, lambda h: torch.save(payload, h))


def require_writable(path: Path, refusal: str | None = None) -> None:
    """``path``, a folder, can be written (a read-only filesystem refuses even root): else one line (``refusal``,
    by default "cannot write to output directory PATH"), before any work is done whose result could not be kept."""
    if not os.access(path, os.W_OK):
        raise UsageError(f"{refusal or f'cannot write to output directory {path}'}: it is read-only")


def writable_folder(path: Path, what: str) -> None:
    """Make ``path`` (and its parents) and check it can be written, else one line naming ``what`` it was to hold."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot write {what} into {path}: {err.strerror or err}") from None
    require_writable(path, f"cannot write {what} into {path}")


def _check_replaceable(path: Path, overwrite: bool) -> None:
    """``path`` may receive a run: absent, empty, an unfinished run, or a finished one with ``overwrite``."""
    if not path.exists():
        return
    if not path.is_dir():
        raise UsageError(f"cannot write to output directory {path}: it is a file")
    require_writable(path)
    if (path / METRICS_FILE).exists() and not overwrite:
        raise UsageError(f"{path} already holds a finished run; pass --overwrite or choose another --out")
    foreign = sorted(p.name for p in path.iterdir()
                     if p.name not in RUN_FILES and not p.name.startswith((ERROR_LOG_PREFIX, CURVES_PREFIX)))
    if foreign:
        raise UsageError(f"{path} holds files that are not a run's ({', '.join(foreign[:3])}); choose another --out")


STAGED, REPLACED = "partial", "old"  # a run being written: .NAME.partial-PID; the one it replaces: .NAME.old-PID


def _sibling(path: Path, role: str, pid: int | str) -> Path:
    return path.parent / f".{path.name}.{role}-{pid}"


@contextlib.contextmanager
def run_lock(path: Path):
    """Hold the run directory ``path`` for one writer: a second process is refused with a clear message.
    Holding the lock, finish what a killed writer left (see ``_recover``). The lock file beside the run is
    removed when the writer is done (one a killed writer left is taken over: its lock died with it)."""
    lock_file = path.parent / f".{path.name}.lock"
    try:
        handle = open(lock_file, "a")
    except OSError as err:
        raise UsageError(f"cannot write to output directory {path}: {err.strerror or err}") from None
    held = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = _same_file(handle, lock_file)  # not one a finishing writer has just removed
        except BlockingIOError:
            pass
        if not held:
            raise UsageError(f"another mrfbench process is writing {path}; wait for it or choose another --out")
        _recover(path)
        yield
    finally:
        if held:
            lock_file.unlink(missing_ok=True)
        handle.close()


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _siblings(path: Path, role: str) -> dict[str, Path]:
    """The staging folders of ``role`` beside ``path`` (exactly ``.NAME.role-PID``), by writer pid."""
    prefix = f".{path.name}.{role}-"
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return {}
    return {p.name[len(prefix):]: p for p in entries
            if p.name.startswith(prefix) and p.name[len(prefix):].isdigit() and p.is_dir()}


def recover(path: Path) -> None:
    """Before reading the run at ``path``: if a writer was killed while moving it into place, finish the
    move (a writer still at work holds the lock and is left alone; with nothing left over, no lock is taken)."""
    path = Path(path)
    if _siblings(path, STAGED) or _siblings(path, REPLACED):
        with contextlib.suppress(UsageError):
            with run_lock(path):
                pass


def _recover(path: Path) -> None:
    """What a killed writer left beside ``path`` (the caller holds the lock, so no writer is alive): a run
    it had begun to move into place (the old one set aside, the new one not yet moved) is moved in; the
    old run set aside, and a run killed before it was complete, are removed."""
    staged, replaced = _siblings(path, STAGED), _siblings(path, REPLACED)
    for pid, old in replaced.items():
        if not path.exists():
            (staged.pop(pid) if pid in staged else old).rename(path)
        shutil.rmtree(old, ignore_errors=True)
    for work in staged.values():
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def staged_run(path: Path, overwrite: bool, staging: Path | None = None):
    """Write a run into a hidden sibling and move it to ``path`` only when it is complete, so an interrupted
    run (or --overwrite) never leaves new files beside old ones. Yields the staging directory. A run that
    fails is kept at ``path`` for inspection, unless that would replace a finished run. ``staging``: a
    folder on the same filesystem to stage in instead (where ``path``'s folder is copied elsewhere while
    the run is written, as a Tune trial's is)."""
    path = Path(path)
    if Path(os.path.abspath(path)) in (Path.cwd(), *Path.cwd().parents):
        raise UsageError(f"--out {path} is the working folder or holds it; a run is written into a folder of its "
                         "own (e.g. --out runs/NAME)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot write to output directory {path}: {err.strerror or err}") from None
    with run_lock(path):
        try:
            _check_replaceable(path, overwrite)
            if staging is None:
                work = _sibling(path, STAGED, os.getpid())
                work.mkdir()
            else:
                staging.mkdir(parents=True, exist_ok=True)
                work = Path(tempfile.mkdtemp(prefix=f".{path.name}.{STAGED}-{os.getpid()}-", dir=staging))
        except OSError as err:
            raise UsageError(f"cannot write to output directory {path}: {err.strerror or err}") from None
        try:
            yield work
        except BaseException:
            if (path / METRICS_FILE).exists():
                shutil.rmtree(work, ignore_errors=True)
            else:
                _publish(work, path)
            raise
        _publish(work, path)


def _publish(work: Path, path: Path) -> None:
    """Move the finished staging directory to ``path``, replacing what is there."""
    if path.exists():
        old = _sibling(path, REPLACED, os.getpid())
        path.rename(old)
        work.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(path)


def is_staging(path: Path) -> bool:
    """Whether ``path`` lies inside a run being written (or left by a killed writer)."""
    return any(part.startswith(".") and (f".{STAGED}-" in part or f".{REPLACED}-" in part) for part in Path(path).parts)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"missing {path.name} in {path.parent}: not a mrfbench run directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"corrupt {path}: {err}") from None


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object (config.json, metrics.json, trial.json)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise UsageError(f"corrupt {path}: expected a JSON object, got {type(value).__name__}")
    return value


def load_checkpoint(path: Path, device: torch.device) -> dict:
    if not path.exists():
        raise UsageError(f"missing checkpoint {path}; was the run finished?")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types on a damaged file
        raise UsageError(f"corrupt checkpoint {path}: {type(err).__name__}") from None


def check_one_run(folder: Path, config: dict, metrics: dict | None = None, checkpoint: dict | None = None) -> None:
    """A run's files describe one run: what ``metrics.json`` states of the model (its name, data set, capacity
    and beta) and the checkpoint's config are ``config.json``'s. Else the folder holds files of different
    runs, and is refused."""
    def canonical(value) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    stated = {"model": config.get("model"), "dataset": config.get("dataset"), "capacity": config.get("capacity"),
              "beta": (config.get("model_config") or {}).get("beta")}
    differ = [f"{METRICS_FILE}'s {key}" for key, value in stated.items()
              if key in (metrics or {}) and canonical(metrics[key]) != canonical(value)]
    saved = (checkpoint or {}).get("config")
    if isinstance(saved, dict):
        differ += [f"the checkpoint's {key}" for key in ("model", "dataset", "model_config")
                   if canonical(saved.get(key)) != canonical(config.get(key))]
    if differ:
        raise UsageError(f"the files of run {folder} are not of one run ({', '.join(differ)} not its {CONFIG_FILE}'s); "
                         "train it again, or put each run's files back in their own folder")


def is_finished_run(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run: its config beside its metrics."""
    return (folder / CONFIG_FILE).is_file() and (folder / METRICS_FILE).is_file()


def require_run_dir(path: Path) -> Path:
    path = Path(path)
    recover(path)
    if not path.is_dir():
        raise UsageError(f"run directory {path} does not exist")
    return path
