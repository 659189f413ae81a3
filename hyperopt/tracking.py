"""Experiment trackers: a local JSONL/JSON run folder and Weights & Biases.

A tracker has four calls (``log_config``, ``log``, ``summary``, ``finish``) and is a
context manager. The local files are the contract that ``hyperopt.report`` reads::

    run_dir/config.yaml     resolved config
    run_dir/metrics.jsonl   one JSON object per outer step ({"step": 0, "outer_loss": ...})
    run_dir/summary.json    final/best metrics, status, timings
    run_dir/wandb/          the wandb run (offline by default)

JSON has no NaN: non-finite floats are written as ``null`` and read back as NaN.

Example::

    with MultiTracker(JsonlTracker(run_dir), WandbTracker(run_dir, job_type="implicit")) as t:
        t.log_config(config)
        for step in range(steps):
            t.log(step, {"outer_loss": loss, "hparam/l2reg": l2reg})
        t.summary({"status": "completed", ...})
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "JsonlTracker",
    "MultiTracker",
    "Tracker",
    "TrackingError",
    "TrackingWarning",
    "WandbTracker",
    "read_metrics",
    "read_summary",
    "run_labels",
    "to_builtin",
]

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"

_log = logging.getLogger(__name__)


class TrackingError(OSError):
    """A run folder (or the wandb run inside it) cannot be written."""


class TrackingWarning(UserWarning):
    """Tracking degraded but the run goes on (e.g. wandb fell back to offline)."""


@runtime_checkable
class Tracker(Protocol):
    """Receives a run's config, per-step metrics and final summary."""

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def summary(self, summary: Mapping[str, Any]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


# ----------------------------------------------------------------------------- values


def to_builtin(value: Any, *, nan: Any = None) -> Any:
    """Converts JAX/NumPy values to JSON-able Python values.

    0-d arrays and NumPy scalars become ``int``/``float``/``bool``, larger arrays nested
    lists, mappings dicts; non-finite floats become ``nan`` (``None`` for JSON).
    """
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v, nan=nan) for k, v in value.items()}
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes):  # also OmegaConf lists
        return [to_builtin(v, nan=nan) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # np.float64 is a float: convert it too
        return float(value) if math.isfinite(value) else nan
    if hasattr(value, "__array__") or isinstance(value, np.generic):
        array = np.asarray(value)
        if array.ndim > 0:
            return [to_builtin(v, nan=nan) for v in array.tolist()]
        return to_builtin(array.item(), nan=nan)
    return str(value)


def _null_to_nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, list):
        return [_null_to_nan(v) for v in value]
    if isinstance(value, dict):
        return {k: _null_to_nan(v) for k, v in value.items()}
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _dumps(value: Any) -> str:
    return json.dumps(to_builtin(value), allow_nan=False)


def _atomic_write(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` so readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TrackingError(f"cannot write {path}: {e.strerror or e}") from e


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl``: one dict per line, ``null`` read back as NaN.

    A half-written last line (a run killed mid-write) is skipped; a bad line elsewhere
    raises ``ValueError`` naming the file and line.
    """
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
        rows.append(_null_to_nan(row))
    return rows


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads ``summary.json`` with ``null`` metric values read back as NaN."""
    path = Path(run_dir) / SUMMARY_FILE
    summary = json.loads(path.read_text(encoding="utf-8"))
    for key in ("final", "best"):
        if isinstance(summary.get(key), dict):
            summary[key] = _null_to_nan(summary[key])
    return summary


def run_labels(config: Mapping[str, Any]) -> dict[str, Any]:
    """wandb ``group``/``job_type``/``tags`` from a resolved config, so runs group by mode.

    >>> run_labels({"problem": {"name": "ridge"}, "dataset": {"name": "diabetes"},
    ...             "mode": {"name": "implicit"}, "solver": {"name": "lbfgs"}})["job_type"]
    'implicit'
    """

    def name(key: str) -> str | None:
        value = config.get(key)
        value = value.get("name") if isinstance(value, Mapping) else value
        return None if value is None else str(value)

    problem, dataset, mode, solver = (name(k) for k in ("problem", "dataset", "mode", "solver"))
    group = "-".join(p for p in (problem, dataset) if p) or None
    tags = tuple(t for t in (mode, problem, dataset, solver) if t)
    return {"group": group, "job_type": mode, "tags": tags}


# ----------------------------------------------------------------------------- JSONL


class JsonlTracker(Tracker):
    """Writes ``metrics.jsonl``, ``summary.json`` and ``config.yaml`` into ``run_dir``.

    Each ``log`` appends and flushes one line, so a killed run keeps every step it
    logged. The file is opened in append mode: a resumed run continues it. Pass
    ``resume_step=k`` (or call ``truncate(k)``) when resuming from a checkpoint taken at
    step ``k`` to drop the lines with ``step >= k`` that the checkpoint does not cover.

    Raises:
        TrackingError: ``run_dir`` cannot be created or written.
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.summary_path = self.run_dir / SUMMARY_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"cannot create run folder {self.run_dir}: {e.strerror or e}") from e
        self._file = None
        if resume_step is not None:
            self.truncate(resume_step)
        else:
            self._drop_partial_last_line()
        self._open()

    def _open(self) -> None:
        try:
            self._file = open(self.metrics_path, "a", encoding="utf-8")
        except OSError as e:
            raise TrackingError(f"cannot write {self.metrics_path}: {e.strerror or e}") from e

    def _drop_partial_last_line(self) -> None:
        # A run killed mid-write leaves a line without "\n"; appending would glue the
        # next step onto it.
        try:
            with open(self.metrics_path, "rb+") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise TrackingError(f"cannot write {self.metrics_path}: {e.strerror or e}") from e

    def truncate(self, step: int) -> int:
        """Drops logged lines with ``step >= step``; returns how many lines remain."""
        was_open = self._file is not None
        self.finish()
        kept = []
        if self.metrics_path.exists():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # half-written line from a killed run
                if isinstance(row, dict) and row.get("step", -1) < step:
                    kept.append(line)
            _atomic_write(self.metrics_path, "".join(line + "\n" for line in kept))
        if was_open:
            self._open()
        return len(kept)

    def log_config(self, config: Mapping[str, Any]) -> None:
        import yaml  # a dependency of wandb and omegaconf; only needed here

        text = yaml.safe_dump(to_builtin(config), sort_keys=False)
        _atomic_write(self.run_dir / CONFIG_FILE, text)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._file is None:
            raise TrackingError(f"{self.metrics_path} is closed (finish() was called)")
        line = _dumps({"step": int(step), **{k: v for k, v in metrics.items() if k != "step"}})
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as e:
            raise TrackingError(f"cannot write {self.metrics_path}: {e.strerror or e}") from e

    def summary(self, summary: Mapping[str, Any]) -> None:
        _atomic_write(self.summary_path, json.dumps(to_builtin(summary), indent=2) + "\n")

    def finish(self, exit_code: int = 0) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ----------------------------------------------------------------------------- wandb

_MODES = {
    "online": "online",
    "offline": "offline",
    "disabled": "disabled",
    "run": "online",
    "dryrun": "offline",
}

# Set after the first failed online init in this process. Hydra's basic launcher runs
# every sweep job in one process: later jobs go straight to offline instead of each
# waiting out the timeout again (and warning again).
_online_failure: str | None = None


class WandbTracker(Tracker):
    """Logs to Weights & Biases; the wandb folder lives in ``run_dir/wandb``.

    Args:
      run_dir: the run's output folder.
      project, entity, group, name: as in ``wandb.init``.
      mode: ``"online"``, ``"offline"`` or ``"disabled"``; default ``$WANDB_MODE`` or
        ``"offline"`` (no account needed; sync later with ``wandb sync``).
      job_type, tags: put the mode (implicit/unrolled), problem and dataset here so the
        workspace groups by them; ``run_labels(config)`` builds them from a config.
      init_timeout: seconds an online ``wandb.init`` may take. If it fails (no network,
        bad key) the run logs offline instead, with one ``TrackingWarning``.

    ``"disabled"`` never imports or starts wandb: nothing is written, no process runs.
    Each new tracker finishes the previous wandb run (``reinit="finish_previous"``).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        project: str = "hyperopt",
        mode: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: Iterable[str] = (),
        name: str | None = None,
        entity: str | None = None,
        init_timeout: float = 15.0,
    ):
        requested = mode or os.environ.get("WANDB_MODE") or "offline"
        if requested not in _MODES:
            raise ValueError(f"wandb mode must be online, offline or disabled, got {requested!r}")
        self.run_dir = Path(run_dir)
        self.mode = _MODES[requested]
        self.run = None
        self.sync_dir: Path | None = None  # run_dir/wandb/offline-run-*, None when disabled
        if self.mode == "disabled":
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"cannot create run folder {self.run_dir}: {e.strerror or e}") from e
        kwargs = dict(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            tags=list(tags) or None,
            name=name,
        )
        self.run = self._init(kwargs, init_timeout)
        if self.run is not None:
            self.sync_dir = Path(self.run.settings.sync_dir)

    def _init(self, kwargs: dict[str, Any], init_timeout: float):
        global _online_failure
        import wandb

        if self.mode == "online" and _online_failure is None:
            settings = wandb.Settings(init_timeout=init_timeout, login_timeout=init_timeout)
            try:
                return self._wandb_init(wandb, "online", kwargs, settings)
            except Exception as e:  # any failure here means "no server"
                _online_failure = _first_line(e)
                run = self._wandb_init(wandb, "offline", kwargs, None)
                self.mode = "offline"
                warnings.warn(
                    f"wandb online failed: {_online_failure}; logging offline to "
                    f"{run.settings.sync_dir}; sync later with "
                    f"`wandb sync {run.settings.sync_dir}`",
                    TrackingWarning,
                    stacklevel=3,
                )
                return run
        if self.mode == "online":
            self.mode = "offline"
            run = self._wandb_init(wandb, "offline", kwargs, None)
            _log.info(
                "wandb online failed earlier in this process (%s); logging offline to %s",
                _online_failure,
                run.settings.sync_dir,
            )
            return run
        return self._wandb_init(wandb, self.mode, kwargs, None)

    def _wandb_init(self, wandb, mode: str, kwargs: dict[str, Any], settings):
        try:
            return wandb.init(
                dir=str(self.run_dir),
                mode=mode,
                reinit="finish_previous",
                settings=settings,
                **kwargs,
            )
        except Exception as e:
            if mode == "online":
                raise
            raise TrackingError(f"wandb {mode} init failed in {self.run_dir}: {_first_line(e)}") from e

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.config.update(to_builtin(config), allow_val_change=True)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self.run is not None:
            values = to_builtin(metrics, nan=math.nan)
            # unrolled runs log linear_residual=None: leave the key out rather than log null
            values = {k: v for k, v in values.items() if v is not None and k != "step"}
            self.run.log(values, step=int(step))

    def summary(self, summary: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(to_builtin(summary, nan=math.nan))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=exit_code)


# ----------------------------------------------------------------------------- fan-out


class MultiTracker(Tracker):
    """Sends every call to each of ``trackers``, in order."""

    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log_config(self, config: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_config(config)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log(step, metrics)

    def summary(self, summary: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.summary(summary)

    def finish(self, exit_code: int = 0) -> None:
        # finish every tracker even if one fails, then report the first failure
        errors = []
        for tracker in self.trackers:
            try:
                tracker.finish(exit_code=exit_code)
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
