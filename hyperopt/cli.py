"""``hyperopt-run``: the Hydra application (the only module that imports Hydra).

    hyperopt-run                                             # the default experiment
    hyperopt-run experiment=distill_digits mode=unrolled outer.learning_rate=0.05
    hyperopt-run -m mode=implicit,unrolled experiment=svm_digits hydra/launcher=joblib
    hyperopt-run search=tpe search.trials=50 experiment=logistic_breast_cancer  # a black-box baseline

Each run writes into its output folder: ``config.yaml`` (resolved), ``metrics.jsonl``
(one line per outer step), ``summary.json``, ``model.npz`` (the returned model: the
problem's readout arrays, e.g. ``coef`` (and ``intercept``) or ``W``/``b``, refit at the
chosen hyperparameters on train ∪ val; ``hparam_<name>``; for regression ``y_mean`` and
``y_scale``, since targets were standardized), ``checkpoint.pkl`` and, with the wandb
logger, an offline wandb run under ``wandb/``. The run returns the final validation loss,
so a Hydra sweeper (e.g. Optuna) can minimize it.

Before Hydra starts, :func:`run_main` checks the command line as Hydra will compose it
(:func:`check_overrides`): a typo, a bad value, a required value left out or an output folder
that cannot be written is one line and exit status 2, before anything runs or is written.
JAX, scikit-learn (data loading), optax and the outer loop are imported inside the functions
that use them, so that ``--help`` and a rejected command need little more than Hydra (measured:
``hyperopt-run solver.maxiter=0`` costs 0.8 CPU-seconds instead of 4.9; ``import hyperopt``
imports its solvers, and with them JAX, on first use).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import platform
import resource
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from hyperopt import tracking

if TYPE_CHECKING:
    from hyperopt.bilevel import Bilevel, FitResult, StopRule

__all__ = ["ConfigError", "build", "build_bilevel", "check_config", "check_overrides", "final_line",
           "fit_options", "help_text", "run", "run_guarded", "run_main"]

PROG = "hyperopt-run"
# hyperopt.bilevel.REFITS and StopRule's fields, spelled out so that checking a command line
# does not import JAX (tests/test_cli_errors.py checks that they agree)
REFITS = ("train_val", "train")
STARTS = ("auto", "path", "init")
STOP_KEYS = ("xtol", "ftol", "gtol", "window")


class ConfigError(ValueError):
    """A configuration value outside what is allowed."""


def _config_dir() -> str:
    """``configs/`` of a source checkout / editable install, else the wheel's copy."""
    source = Path(__file__).resolve().parents[1] / "configs"
    if (source / "config.yaml").is_file():
        return str(source)
    return str(Path(__file__).resolve().parent / "configs")


# ---------------------------------------------------------------------------------------
# Validation: one line per bad value, naming it and what is allowed
# ---------------------------------------------------------------------------------------

def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _cv_folds_ok(v) -> bool:
    if isinstance(v, str):
        return v != ""
    return _positive_int(v) and v >= 2 or (isinstance(v, int) and not isinstance(v, bool) and v == 0)


def _check(cfg: DictConfig, key: str, ok, allowed: str, optional: bool = False) -> None:
    value = OmegaConf.select(cfg, key, default="__missing__")
    if value == "__missing__" or (optional and value is None):
        return
    try:
        good = ok(value)
    except (TypeError, ValueError):  # e.g. a number where a list belongs
        good = False
    if not good:
        raise ConfigError(f"{key}={value!r}; allowed: {allowed}")


def check_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for the first value outside what is allowed."""
    missing = sorted(OmegaConf.missing_keys(cfg))  # `???` in a config file: the user must say
    if missing:
        raise ConfigError(f"{missing[0]} is required (??? in its config file); allowed: give it on "
                          f"the command line, {missing[0]}=VALUE")
    _check(cfg, "steps", _positive_int, "a positive integer")
    _check(cfg, "precision", lambda v: v in ("float32", "float64"), "float32, float64")
    _check(cfg, "solver.maxiter", _positive_int, "a positive integer")
    _check(cfg, "solver.tol", _positive, "a positive number or null", optional=True)
    _check(cfg, "solver.stepsize", lambda v: isinstance(v, (int, float)) and math.isfinite(v),
           "a finite number (<= 0 for a line search)")
    _check(cfg, "solver.history_size", _positive_int, "a positive integer")
    lr = OmegaConf.select(cfg, "outer.learning_rate")
    if not isinstance(lr, DictConfig):
        _check(cfg, "outer.learning_rate", _positive, "a positive finite number")
    _check(cfg, "cv_folds", _cv_folds_ok, "0 (hold-out) or an integer >= 2, auto, or a file of fold ids")
    _check(cfg, "cv_splitter", lambda v: isinstance(v, DictConfig) and "_target_" in v,
           "null or a splitter config with _target_ (e.g. sklearn.model_selection.KFold)", optional=True)
    _check(cfg, "refit", lambda v: v in REFITS, ", ".join(REFITS))
    _check(cfg, "start", lambda v: v in STARTS, ", ".join(STARTS), optional=True)
    _check(cfg, "blas_threads", _positive_int, "a positive integer or null (the BLAS library's own)",
           optional=True)
    if cfg.get("start") == "path":  # before the run folder is made: only the lasso has a path
        target = str(OmegaConf.select(cfg, "problem._target_", default=""))
        if not target.endswith("Lasso") or OmegaConf.select(cfg, "problem.init_l1reg") is not None:
            name = target.rsplit(".", 1)[-1].lower() or "?"
            raise ConfigError(f"start='path': problem {name!r} has no regularization path here (or its "
                              "start is given explicitly); allowed: auto, init")
    _check(cfg, "eval_every", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
           "an integer >= 0 (0: test metrics only at the end)")
    _check(cfg, "stop", lambda v: isinstance(v, DictConfig) and set(v) <= set(STOP_KEYS),
           f"null or a mapping with keys {', '.join(STOP_KEYS)}", optional=True)
    _check(cfg, "stop.xtol", lambda v: v == "auto" or _positive(v) or v == 0,
           "auto (the problem's: 1e-2 for the lasso, else 1e-3) or a number >= 0")
    for key in ("ftol", "gtol"):
        _check(cfg, f"stop.{key}", lambda v: _positive(v) or v == 0, "a number >= 0")
    _check(cfg, "stop.window", _positive_int, "a positive integer")
    _check(cfg, "compile_cache", lambda v: isinstance(v, str) and v != "", "auto, a folder, or null",
           optional=True)
    _check(cfg, "hparam_penalty", lambda v: _positive(v) or v == 0, "a number >= 0")
    _check(cfg, "population", _positive_int, "a positive integer (1: one run)")
    _check(cfg, "population_range", lambda v: not isinstance(v, str) and len(v) == 2 and _positive(v[0])
           and _positive(v[1]) and v[0] <= v[1], "[low, high] with 0 < low <= high")
    _check(cfg, "shard_data", lambda v: isinstance(v, bool), "true, false")
    _check(cfg, "distributed", lambda v: isinstance(v, bool), "true, false")
    _check(cfg, "patience", _positive_int, "a positive integer or null", optional=True)
    _check(cfg, "checkpoint_every", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    _check(cfg, "resume", lambda v: v in ("auto", True, False), "auto, true, false")
    _check(cfg, "inner_tol", lambda v: v == "auto" or (not isinstance(v, str) and len(v) == 3
           and _positive(v[0]) and _positive(v[1]) and 0 < v[2] <= 1),
           "null or [initial > 0, final > 0, decay in (0, 1]], or auto", optional=True)
    for key in ("init_l2reg", "init_l1reg"):  # null: relative to the data (init_ratio)
        _check(cfg, f"problem.{key}", _positive, "a positive number or null", optional=True)
    _check(cfg, "problem.init_ratio", _positive, "a positive number")
    _check(cfg, "problem.l2reg", _positive, "a positive number")
    _check(cfg, "logger.mode", lambda v: v in ("online", "offline", "disabled"),
           "online, offline, disabled or null", optional=True)
    _check_search(cfg)


def _check_search(cfg: DictConfig) -> None:
    """search=random|tpe: the trials, the bounds, and Optuna for TPE."""
    if _search(cfg) is None:
        return
    _check(cfg, "search.trials", _positive_int, "a positive integer")
    _check(cfg, "search.low", _positive, "a positive number")
    _check(cfg, "search.high", lambda v: _positive(v) and v > cfg.search.low, "a number > search.low")
    _check(cfg, "search.startup_trials", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
           "an integer >= 0")
    if _search(cfg) == "tpe":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("search=tpe needs Optuna, which is not installed; allowed: pip install "
                              "optuna (or pip install -e \".[optuna]\"), or search=random") from None


def _search(cfg: DictConfig) -> str | None:
    """The black-box search of a run (random, tpe), or None for the gradient-based outer loop."""
    name = OmegaConf.select(cfg, "search.name", default="none")
    return None if name in (None, "none") else name


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

def _shows_progress() -> bool:
    """On a terminal, except in the jobs of a parallel sweep (their bars would interleave)."""
    if not sys.stderr.isatty():
        return False
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return True
    return HydraConfig.get().launcher._target_.endswith(".BasicLauncher")  # one job at a time


class _Progress:
    """A live progress bar on a terminal (tqdm): outer step, outer loss, inner iterations, rate
    and time left. Silent when stderr is not a terminal (logs, pipes, files)."""

    def __init__(self, steps: int, done: int = 0):
        self.steps, self.timed = steps, False
        self.bar = self._bar(done, "compiling the first step", leave=False)

    def _bar(self, done: int, postfix: str, **options):
        from tqdm import tqdm

        return tqdm(total=self.steps, initial=done, desc=PROG, unit="step", file=sys.stderr,
                    dynamic_ncols=True, disable=not _shows_progress(), postfix=postfix, **options)

    def update(self, record: dict) -> None:
        postfix = f"outer loss {record['outer_loss']:.5g}, inner iters {record['inner_iterations']}"
        if not self.timed:  # the first step includes compiling: rate and time left count from here
            self.bar.close()
            self.bar, self.timed = self._bar(record["step"] + 1, postfix), True
        else:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)

    def write(self, message: str) -> None:
        """A line on stderr that does not break the bar."""
        if self.bar.disable:
            print(message, file=sys.stderr)
        else:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _warn_once(seen: set, key: str, write, message: str) -> None:
    if key not in seen:
        seen.add(key)
        write(f"{PROG}: warning: {message}")


def _show_warnings_once(progress: _Progress):
    """A ``warnings.showwarning`` that prints one line per kind of warning and run (the library
    warns per call, e.g. a LinearSolveWarning at every outer step, each with its own numbers)."""
    seen: set = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()
        _warn_once(seen, category.__name__, progress.write, f"{category.__name__}: {text[0] if text else ''}")

    return show


def _sweep_group(cfg: DictConfig, labels: dict) -> str | None:
    if cfg.logger.get("group"):
        return cfg.logger.group
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{labels['group']}-{Path(hc.sweep.dir).name}"
    return labels["group"]


def _make_trackers(cfg: DictConfig, out_dir: Path, labels: dict, resume_step: int | None):
    trackers = [tracking.JsonlTracker(out_dir, resume_step=resume_step)]
    if cfg.logger.name == "wandb":
        trackers.append(tracking.WandbTracker(
            out_dir, project=cfg.logger.project, mode=cfg.logger.mode, entity=cfg.logger.entity,
            group=_sweep_group(cfg, labels), job_type=labels["job_type"],
            tags=[*labels["tags"], *cfg.logger.tags], name=out_dir.name,
            init_timeout=cfg.logger.init_timeout))
    return tracking.MultiTracker(*trackers)


def _summary(result: FitResult, labels: dict, bilevel: Bilevel, data) -> dict:
    import jax
    import optax

    import hyperopt

    summary = {
        "problem": labels["problem"], "dataset": labels["dataset"], "mode": labels["mode"],
        "solver": labels["solver"], "steps": result.state.step, "best_step": result.state.best_step,
        "status": result.status, "final": result.final_metrics, "best": result.best_metrics,
        "hparams": result.best_hparams,
        "final_hparams": {k: np.asarray(v).tolist()
                          for k, v in bilevel.problem.hparams(result.state.theta).items()},
        "stop_reason": result.stop_reason,
        "data": {"n_train": data.n_train, "n_val": data.n_val, "n_test": data.n_test,
                 "n_features": data.n_features, "sparse": data.sparse, "nnz": data.nnz},
        "initial": result.initial or {},
        "returned": {"refit": result.refit, "hparams": result.best_hparams,
                     "val_loss": result.best_metrics.get("val_loss"), **(result.model_metrics or {})},
        "warnings": list(result.warnings),
        "total_time": result.total_time, "compile_time": result.compile_time,
        "compile": result.compile,
        # XLA's temporary buffers of the compiled step: per run, comparable across modes
        "peak_memory_mb": result.compiled_temp_mb,
        # the process's peak RSS: shared by all runs of a sweep in one process
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # the devices the data were split across (shard_data=true), and those the process saw
        "devices": {"data": result.devices, "visible": jax.device_count(),
                    "processes": jax.process_count(), "platform": jax.default_backend()},
        "versions": {"hyperopt": hyperopt.__version__, "jax": jax.__version__,
                     "optax": optax.__version__, "python": platform.python_version()},
    }
    if result.path:  # start=path: the penalties tried before the first outer step, and their losses
        summary["path"] = result.path
    if result.population is not None:  # every member: where it started, its best, its loss
        summary["population"] = result.population
        summary["best_member"] = result.best_member
    if data.image_shape is not None and hasattr(bilevel.problem, "images"):
        summary["image_shape"] = list(data.image_shape)
        summary["image_labels"] = np.asarray(bilevel.problem.image_labels(data.n_classes)).tolist()
    return summary


def _file_task(cfg: DictConfig, problem) -> dict:
    """A data file has no task of its own: a problem made for one task decides it (integer prices
    are a regression target for ridge, not classes); else (or with +dataset.task=...) it is inferred."""
    if cfg.dataset.get("name") != "file" or cfg.dataset.get("task") is not None or len(problem.tasks) != 1:
        return {}
    return {"task": problem.tasks[0]}


def build(cfg: DictConfig):
    """Dataset, :class:`~hyperopt.bilevel.Bilevel` and run labels from a composed config."""
    from hyperopt.problems.base import solver_class

    bilevel = build_bilevel(cfg)
    problem = bilevel.problem
    data = instantiate(cfg.dataset, seed=cfg.seed, dtype=cfg.precision, **_file_task(cfg, problem))
    problem.check_data(data)
    labels = {"problem": problem.name, "dataset": data.name, "mode": _search(cfg) or cfg.mode.name,
              "solver": solver_class(bilevel.make_solver).__name__}
    if _search(cfg) is not None:  # a problem the search cannot take fails before anything is written
        from hyperopt.search import search_space

        search_space(problem, data, cfg.search.low, cfg.search.high)
    labels.update(tracking.run_labels({k: {"name": v} for k, v in labels.items()}))
    return data, bilevel, labels


def build_bilevel(cfg: DictConfig, cv_folds=None) -> Bilevel:
    """The :class:`~hyperopt.bilevel.Bilevel` of a composed config (``cv_folds`` replaces the
    config's folds, e.g. for data that are not a config's dataset)."""
    from hyperopt.bilevel import Bilevel

    problem = instantiate(cfg.problem, _convert_="all")
    folds = _cv(cfg) if cv_folds is None else cv_folds
    if isinstance(folds, int) and folds and not problem.supports_cv:  # before the run writes anything
        raise ConfigError(f"cv_folds={folds}: problem {problem.name!r} has no cross-validated "
                          "outer loss; allowed: 0 or auto")
    linear_solve = cfg.mode.get("linear_solve") or {}
    make_solver = functools.partial(
        instantiate(cfg.solver, _convert_="all"), implicit_diff=cfg.mode.implicit_diff,
        implicit_diff_solve=instantiate(linear_solve) if "_target_" in linear_solve else None)
    bilevel = Bilevel(problem=problem, make_solver=make_solver,
                      optimizer=instantiate(cfg.outer, _convert_="all"),
                      hparam_penalty=cfg.hparam_penalty, cv_folds=folds,
                      inner_tol=cfg.inner_tol if cfg.inner_tol in (None, "auto") else tuple(cfg.inner_tol))
    bilevel.inner  # noqa: B018 - fails early (one line) when the problem cannot use the solver
    return bilevel


def fit_options(cfg: DictConfig) -> dict:
    """The keyword arguments of :func:`~hyperopt.bilevel.fit` that a config sets."""
    return {"patience": cfg.patience, "min_delta": cfg.min_delta, "seed": cfg.seed,
            "stop": _stop_rule(cfg), "refit": cfg.refit, "eval_every": cfg.eval_every,
            "population": cfg.get("population", 1),
            "population_range": tuple(cfg.get("population_range", (0.01, 100.0))),
            "shard_data": cfg.get("shard_data", False), "program_key": program_key(cfg),
            "start": cfg.get("start") or "auto", "blas_threads": cfg.get("blas_threads", 1)}


# Settings that never change a compiled program (where the run logs, when it checkpoints; the
# seed, which changes the splits and random starts: arguments, not the program — a problem's
# own seed field is part of fit's key through the problem itself).
_NOT_IN_PROGRAMS = ("hydra", "logger", "checkpoint_every", "resume", "debug", "compile_cache", "steps",
                    "patience", "min_delta", "stop", "eval_every", "distributed", "seed", "start",
                    "blas_threads")


def program_key(cfg: DictConfig) -> str:
    """What :func:`~hyperopt.bilevel.fit` keys its stored programs by: the composed config
    without the settings that only steer the host-side loop or the logging."""
    keep = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in _NOT_IN_PROGRAMS}
    # JSON, not YAML: the same content in 0.1 ms instead of 12 (paid by every run)
    return json.dumps(keep, sort_keys=True, default=str)


def _optimize(cfg: DictConfig, bilevel: Bilevel, data, state, **hooks) -> FitResult:
    """The gradient-based outer loop (search=none), or the black-box search of search=random|tpe
    (same splits, inner solver, refit and outputs; trials instead of outer steps)."""
    if _search(cfg) is None:
        from hyperopt.bilevel import fit

        if (state is not None and not isinstance(state, list) and isinstance(state.opt_state, dict)
                and "settings" in state.opt_state):
            raise ConfigError(f"the output folder holds a search={state.opt_state['settings']['sampler']} "
                              "run; allowed: the same search=..., or another hydra.run.dir")
        return fit(bilevel, data, cfg.steps, state=state, **fit_options(cfg), **hooks)
    from hyperopt.search import search

    if cfg.get("population", 1) != 1 or cfg.get("shard_data", False):
        raise ConfigError(f"search={cfg.search.name} with population={cfg.get('population', 1)}, "
                          f"shard_data={str(cfg.get('shard_data', False)).lower()}; allowed: population=1 "
                          "and shard_data=false (they apply to gradient-based runs, search=none)")
    return search(bilevel, data, cfg.search.trials, cfg.search.name, seed=cfg.seed, low=cfg.search.low,
                  high=cfg.search.high, startup_trials=cfg.search.get("startup_trials", 10), state=state,
                  refit=cfg.refit, blas_threads=cfg.get("blas_threads", 1), **hooks)


def _budget(cfg: DictConfig) -> int:
    """Outer steps, or the trials of a search."""
    return cfg.steps if _search(cfg) is None else cfg.search.trials


def _cv(cfg: DictConfig):
    """What defines the outer loss's folds: a splitter, fold ids from a file, or cv_folds."""
    if cfg.get("cv_splitter") is not None:
        if cfg.cv_folds not in (0, "auto"):
            raise ConfigError(f"cv_folds={cfg.cv_folds!r} and cv_splitter are both set; allowed: one "
                              "of them (cv_folds=auto with a splitter)")
        return instantiate(cfg.cv_splitter, _convert_="all")
    if isinstance(cfg.cv_folds, str) and cfg.cv_folds != "auto":
        from hyperopt.folds import load_folds

        return load_folds(cfg.cv_folds)
    return cfg.cv_folds


def _stop_rule(cfg: DictConfig) -> StopRule | None:
    from hyperopt.bilevel import StopRule

    stop = cfg.get("stop")
    if stop is None:
        return None
    rule = OmegaConf.to_container(stop)
    if rule.get("xtol") == "auto":
        rule["xtol"] = None  # the problem's (Problem.stop_xtol)
    return StopRule(**rule)


def _enable_compile_cache(cfg: DictConfig) -> None:
    from hyperopt import compile_cache

    value = cfg.get("compile_cache")
    if value is None:
        compile_cache.disable()
    else:
        compile_cache.enable(None if value == "auto" else value)


def _lock_output(out_dir: Path):
    from hyperopt.checkpoint import FolderLock

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return FolderLock(out_dir).__enter__()  # creating the lock file also proves we can write
    except OSError as e:
        raise tracking.TrackingError(f"output folder {out_dir} is not writable: {e.strerror or e}") from None


def _resume_state(cfg: DictConfig, out_dir: Path):
    """The checkpointed state to continue from, or None for a fresh start."""
    from hyperopt.checkpoint import load_checkpoint

    loaded = load_checkpoint(out_dir) if cfg.resume in ("auto", True) else None
    earlier = (out_dir / "metrics.jsonl").exists()
    if loaded is None and earlier and cfg.resume is False:
        raise ConfigError(f"resume=false but {out_dir} already holds a run; allowed: "
                          "resume=auto (continue it) or another hydra.run.dir")
    if loaded is None and cfg.resume is True:
        raise ConfigError(f"resume=true but {out_dir} holds no checkpoint; allowed: "
                          "resume=auto (start fresh when there is none)")
    if loaded is not None:
        size = 1 if not isinstance(loaded[0], list) else len(loaded[0])
        if size != cfg.population:
            raise ConfigError(f"population={cfg.population} but {out_dir} holds a checkpoint of "
                              f"population={size}; allowed: population={size} or another hydra.run.dir")
        print(f"{PROG}: resuming {out_dir} from step {_state_step(loaded[0])}", file=sys.stderr)
        return loaded[0]
    if earlier:  # killed before its first checkpoint: start over, in a clean log
        print(f"{PROG}: {out_dir} holds an unfinished run with no checkpoint; starting over",
              file=sys.stderr)
    return None


def _state_step(state) -> int:
    """The step a state (or a population's list of states) has reached."""
    return max(m.step for m in state) if isinstance(state, list) else state.step


@contextlib.contextmanager
def _stop_on_sigint():
    """Yields a flag set by Ctrl-C, so that the outer loop stops after saving."""
    stop = {"requested": False}

    def on_sigint(signum, frame):
        stop["requested"] = True
        print(f"\n{PROG}: interrupted; saving a checkpoint and stopping", file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not in the main thread (some launchers)
        previous = None
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _on_step(cfg: DictConfig, out_dir: Path, tracker, progress: _Progress):
    """The per-step callback: log, show progress, warn once per kind of fault, checkpoint."""
    from hyperopt.checkpoint import save_checkpoint

    seen: set = set()

    def on_step(state, record):
        tracker.log(record["step"], record)
        progress.update(record)
        if not record["inner_converged"]:
            where, what = (("trial", "that trial's loss") if "trial" in record else
                           ("outer step", "hypergradients"))
            _warn_once(seen, "inner", progress.write,
                       f"inner solver stopped at solver.maxiter={cfg.solver.maxiter}"
                       f" with error {record['inner_error']:.3g} > tol {record['inner_tol']:.3g} "
                       f"({where} {record['step']}; recorded per step as inner_converged); "
                       f"{what} may be inaccurate")
        # an implicit linear solve that fell short: fit's LinearSolveWarning, shown once
        # a population's state is the list of its members' states
        if cfg.checkpoint_every and (record["step"] + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(out_dir, state)

    return on_step


def run(cfg: DictConfig) -> float:
    """Runs one experiment from a composed config; returns the final validation loss."""
    check_config(cfg)
    import jax

    from hyperopt.checkpoint import save_checkpoint

    logging.getLogger("jax").setLevel(logging.WARNING)  # Hydra sets the root logger to INFO
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    jax.config.update("jax_enable_x64", cfg.precision == "float64")
    if cfg.get("distributed"):  # one process per host, started by the cluster (e.g. srun)
        jax.distributed.initialize()
        if jax.process_index() > 0:  # the same run on every process: only process 0 owns the folder
            out_dir = out_dir / f"process{jax.process_index()}"
    _enable_compile_cache(cfg)  # before the first compilation of the process
    data, bilevel, labels = build(cfg)
    # refuse a bad start (e.g. a lasso penalty at or above λ_max) before anything is written
    bilevel.problem.init_hparams(data)

    with _lock_output(out_dir):
        state = _resume_state(cfg, out_dir)
        finished = lambda: tracking.read_summary(out_dir).get("status") == "converged"
        if state is not None and (out_dir / "summary.json").exists() and (
                _state_step(state) >= _budget(cfg) or finished()):
            more = "search.trials" if _search(cfg) else "steps"
            print(f"{PROG}: {out_dir} already holds a finished run ({_state_step(state)} "
                  f"{more.split('.')[-1]}); nothing to do (raise {more}= to continue it)", file=sys.stderr)
            return float(tracking.read_summary(out_dir).get("final", {}).get("val_loss", math.inf))
        with _stop_on_sigint() as stop:  # before anything is written: Ctrl-C always ends cleanly
            done = _state_step(state) if state else 0
            tracker = _make_trackers(cfg, out_dir, labels, done)
            progress = _Progress(_budget(cfg), done=done)  # after wandb's own lines
            try:
                tracker.log_config(OmegaConf.to_container(cfg, resolve=True) | {"run": labels})
                with warnings.catch_warnings():  # restores the filters and showwarning after
                    warnings.simplefilter("always")
                    warnings.showwarning = _show_warnings_once(progress)
                    result = _optimize(cfg, bilevel, data, state,
                                       callback=_on_step(cfg, out_dir, tracker, progress),
                                       should_stop=lambda: stop["requested"])
                progress.close()  # before the lines below, which would break the bar
                if cfg.checkpoint_every or result.status == "interrupted":
                    save_checkpoint(out_dir, result.members or result.state)
                if result.status == "diverged":
                    print(f"{PROG}: warning: outer loop diverged (non-finite or exploding outer "
                          "loss); the best hyperparameters so far are kept in summary.json",
                          file=sys.stderr)
                summary = _summary(result, labels, bilevel, data)
                if _search(cfg) is not None:
                    summary.update(search=_search(cfg), trials=result.state.step)
                if result.model is not None:
                    np.savez(out_dir / MODEL_FILE, **_model_file(result, data))
                    summary["returned"]["model_file"] = MODEL_FILE
                if "image_shape" in summary:
                    images = np.asarray(bilevel.problem.images(result.state.best_theta))
                    np.save(out_dir / "images.npy", images.reshape(images.shape[0], -1))  # (k, d)
                tracker.summary(summary)
            finally:
                progress.close()
                tracker.finish()

    print(final_line(summary, out_dir))
    if result.status == "interrupted":
        sys.exit(130)
    return float(result.final_metrics.get("val_loss", math.inf))


MODEL_FILE = "model.npz"


def _model_file(result: FitResult, data) -> dict:
    """The arrays of ``model.npz``: the returned model, its hyperparameters, the target scale."""
    from hyperopt.bilevel import model_arrays

    arrays = model_arrays(result.model)
    arrays.update({f"hparam_{k}": np.asarray(v) for k, v in result.best_hparams.items()})
    if data.task == "regression":
        arrays.update(y_mean=np.asarray(data.y_mean), y_scale=np.asarray(data.y_scale))
    return arrays


def final_line(summary: dict, out_dir) -> str:
    """The line ``hyperopt-run`` ends with: status, time, validation and test loss at the
    initial hyperparameters and at the returned ones (numbers from ``summary``)."""
    initial, returned = summary.get("initial") or {}, summary.get("returned") or {}
    fmt = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    cached = " from cache" if (summary.get("compile") or {}).get("from_cache") else ""
    unit = "trials" if summary.get("search") else "steps"
    return (f"{PROG}: {summary['status']} after {summary['steps']} {unit} "
            f"({summary['total_time']:.1f} s, {summary['compile_time']:.1f} s compiling{cached}): "
            f"val loss {fmt(initial.get('val_loss'))} -> {fmt(returned.get('val_loss'))}, "
            f"test loss {fmt(initial.get('test_loss'))} -> {fmt(returned.get('test_loss'))}; "
            f"{_short(summary['hparams'])}{_member(summary)}; output {out_dir}")


def _member(summary: dict) -> str:
    population = summary.get("population")
    return f" (member {summary['best_member']} of a population of {len(population)})" if population else ""


def _short(hparams: dict) -> str:
    parts = []
    for name, value in hparams.items():
        value = np.asarray(value)
        parts.append(f"{name}={float(value):.4g}" if value.size == 1 else
                     f"{name}=<{value.size} values, mean {value.mean():.4g}>")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# Inside Hydra: user errors become one line and exit status 2, not a traceback
# ---------------------------------------------------------------------------------------

def _user_errors() -> tuple[type[BaseException], ...]:
    """What bad input causes once a run has started (run() imported these modules by then)."""
    from hyperopt.checkpoint import FolderLockedError
    from hyperopt.linear_solve import LinearSolveError

    return (ValueError, TypeError, FileNotFoundError, PermissionError, tracking.TrackingError,
            FolderLockedError, LinearSolveError, ConfigKeyError, ConfigAttributeError)


def _root_cause(error: BaseException) -> BaseException:
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _one_line(error: BaseException) -> str:
    full_key = getattr(error, "full_key", None) if isinstance(error, OmegaConfBaseException) else None
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)) and full_key:
        return (f"the run needs the config key '{full_key}', which is missing; allowed: keep it "
                f"(override its value rather than removing it with ~{full_key})")
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return f"{full_key}: {line}" if full_key else line


def run_guarded(cfg: DictConfig) -> float:
    """:func:`run`, with user errors turned into one line on stderr and exit status 2."""
    try:
        return run(cfg)
    except Exception as error:
        cause = _root_cause(error)
        user_error = isinstance(cause, ConfigError) or isinstance(cause, _user_errors())
        if not user_error:
            raise
        if cfg.get("debug"):  # the traceback of the cause (Hydra shows a failed _target_ compactly)
            raise cause from None
        print(f"{PROG}: error: {_one_line(cause)}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="config")
def _app(cfg: DictConfig) -> float:
    return run_guarded(cfg)


# ---------------------------------------------------------------------------------------
# Before Hydra: --help, and the command line checked the way Hydra will compose it
# ---------------------------------------------------------------------------------------

PURPOSE = ("tunes hyperparameters by gradient descent on a validation loss, with hypergradients "
           "through the inner solver (implicit or unrolled)")
# The README's quick start shows the same two commands (tests/test_readme_commands.py checks).
QUICK_START = (
    ("hyperopt-run", "the default experiment: the ridge penalty on diabetes"),
    ("hyperopt-run dataset=file dataset.path=data.csv dataset.target=price",
     "your own data (CSV, NPZ or svmlight)"),
)
# Flags after which Hydra reads another config or only prints information: left to Hydra.
_HYDRA_ONLY_FLAGS = ("hydra_help", "info", "shell_completion", "config_path", "config_name",
                     "config_dir", "experimental_rerun")
# At most this many jobs of a sweep are composed and checked: all of a small sweep; of a larger
# one, jobs that cover each swept value (Hydra composes every job itself before launching any).
_JOBS_CHECKED = 16
_WRITABLE = "allowed: a folder that can be created and written"


def _description(path: Path) -> str:
    """A config file's one-line description: its first comment line (after ``# @package``)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text.removesuffix(".")
    return ""


def _config_groups(order: list[str]) -> list[str]:
    """The config groups (folders of configs/), top-level ones in ``order``, nested after their parent."""
    root = Path(_config_dir())
    groups = [d.relative_to(root).as_posix() for d in root.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))]
    rank = lambda group: order.index(group.split("/")[0]) if group.split("/")[0] in order else len(order)
    return sorted(groups, key=lambda group: (rank(group), group))


def _top_level_options() -> list[tuple[str, str]]:
    """``(key=default, comment)`` for each top-level value of config.yaml, as written there."""
    options = []
    for line in (Path(_config_dir()) / "config.yaml").read_text().splitlines():
        key, colon, rest = line.partition(":")
        value, _, comment = rest.partition("#")
        if colon and key.isidentifier() and key not in ("defaults", "hydra") and value.strip():
            options.append((f"{key}={value.strip()}", comment.strip()))
    return options


def help_text() -> str:
    """``hyperopt-run --help``: purpose, quick start, one line per experiment and group option
    (from each config file's first comment), the top-level options with their defaults, flags."""
    root = Path(_config_dir())
    defaults = {group: option for entry in OmegaConf.load(root / "config.yaml").defaults
                if isinstance(entry, DictConfig) for group, option in entry.items()}
    groups = _config_groups(list(defaults))
    options = {group: [(f"{group}={path.stem}" + (" *" if defaults.get(group) == path.stem else ""),
                        _description(path)) for path in sorted((root / group).glob("*.yaml"))]
               for group in groups}
    width = 2 + max(len(option) for rows in options.values() for option, _ in rows)
    table = lambda rows: [f"  {left:<{width}}{right}".rstrip() for left, right in rows]
    command_width = 2 + max(len(command) for command, _ in QUICK_START)
    return "\n".join([
        f"{PROG}: {PURPOSE}", "",
        f"usage: {PROG} [-m] [experiment=NAME] [GROUP=OPTION ...] [KEY=VALUE ...]", "",
        "quick start:",
        *(f"  {command:<{command_width}}# {comment}" for command, comment in QUICK_START), "",
        "experiments (each sets the dataset, problem, solver and settings of one result):",
        *table(options.pop("experiment", [])), "",
        "config groups (* marks the default):",
        *table([row for rows in options.values() for row in rows]), "",
        "options (KEY=VALUE, with their defaults):",
        *table([*_top_level_options(), ("GROUP.KEY=VALUE", "any key of a group, e.g. solver.maxiter=100 "
                                        "outer.learning_rate=0.05 (--cfg job lists them)")]), "",
        "flags:",
        *table([("-m, --multirun", "a sweep, one job per combination: -m mode=implicit,unrolled"),
                ("--cfg job", "print the composed config instead of running"),
                ("-h, --help", "this help (--hydra-help: Hydra's own flags)"),
                ("--version", f"{PROG}'s version")]), "",
        "Each run writes config.yaml, metrics.jsonl, summary.json and checkpoint.pkl into",
        "outputs/DATE/TIME (hydra.run.dir=...), a sweep into multirun/DATE/TIME/N",
        "(hydra.sweep.dir=...); hyperopt-report FOLDER compares the runs. More: README.md.",
    ])


def _parse_command_line(args: list[str]):
    """Hydra's own parser of flags and overrides, with its errors as one-line ConfigErrors."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str):
        if "unrecognized arguments" in message and "=" in message:  # an override after a flag
            raise ConfigError(f"{message}; allowed: the flags first, then the overrides, e.g. "
                              f"{PROG} -m KEY=VALUE ...")
        raise ConfigError(f"{message}; allowed: the flags and overrides of {PROG} --help")

    parser.error = error
    return parser.parse_args(args)


def _hydra_message(error: Exception) -> str:
    """Hydra's (or OmegaConf's) message of several lines, as one."""
    from hydra.errors import OverrideParseException

    if isinstance(error, OverrideParseException):
        reason = error.message.splitlines()[1] if len(error.message.splitlines()) > 1 else error.message
        return (f"cannot parse {error.override!r} ({reason.strip()}); allowed: key=value, group=option, "
                "+key=value (add), ~key (remove), a,b or range(...) with -m")
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options:
        return f"{error.missing_cfg_file}; allowed: {', '.join(error.options)}"
    lines = [line.strip() for line in str(error).splitlines()]
    keep = [line for line in lines if line and "HYDRA_FULL_ERROR" not in line
            and not line.startswith(("full_key:", "object_type=", "reference_type="))]
    return " ".join(keep) or type(error).__name__


def _is_group(loader, key: str) -> bool:
    parent, _, name = key.rpartition("/")
    return name in loader.list_groups(parent)


def _check_group_option(o, loader) -> None:
    """The option (each option of a sweep) of a config group exists."""
    key = o.key_or_group
    if o.is_delete() or not _is_group(loader, key):
        return
    if o.is_sweep_override():
        values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else []
    else:
        value = o.value()
        values = [value] if isinstance(value, str) else []
    options = loader.get_group_options(key) + (["null"] if key == "experiment" else [])
    for value in values:
        if value not in options:
            extras = " (more with the extras: pip install -e \".[joblib]\" or \".[submitit]\")" \
                if key == "hydra/launcher" else ""
            raise ConfigError(f"{key}={value}; allowed: {', '.join(options)}{extras}")


def _has_key(tree, dotted: str) -> bool:
    for part in dotted.split("."):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return False
    return True


def _check_keys(overrides, loader) -> None:
    """Every overridden key exists (``???`` values and interpolations count) once the groups
    are chosen: a clearer message than Hydra's, asked for when Hydra could not compose."""
    from hydra import compose

    keys = [o.key_or_group for o in overrides if not _is_group(loader, o.key_or_group)
            and not (o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None)]
    if not keys:
        return
    groups = [o for o in overrides if _is_group(loader, o.key_or_group)]
    first = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
             if o.is_sweep_override() and o.is_discrete_sweep() else o.input_line
             for o in groups if not (o.is_sweep_override() and not o.is_discrete_sweep())]
    try:
        tree = OmegaConf.to_container(compose("config", overrides=first, return_hydra_config=True),
                                      resolve=False)
    except (HydraException, OmegaConfBaseException):
        return  # the groups themselves do not compose: Hydra's message says why
    for key in keys:
        if _has_key(tree, key):
            continue
        parent = key.rpartition(".")[0]
        while parent and not _has_key(tree, parent):
            parent = parent.rpartition(".")[0]
        node = functools.reduce(lambda t, part: t[part], parent.split("."), tree) if parent else tree
        known = [k for k in node if not k.startswith("_") and k != "hydra"] if isinstance(node, dict) else []
        where = f"the keys of {parent}" if parent else "the top-level keys"
        raise ConfigError(f"unknown key {key!r}; allowed: {where} ({', '.join(known)}, and their "
                          f"sub-keys), or +{key}=... to add a new one")


def _compose(job: list[str], overrides, loader) -> DictConfig:
    """The config of one job (overrides as strings), or a ConfigError that says what is wrong."""
    from hydra import compose

    try:
        return compose("config", overrides=job, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        _check_keys(overrides, loader)
        raise ConfigError(_hydra_message(error)) from None


def _jobs(overrides, basic_sweeper: bool) -> list[list[str]]:
    """The overrides of each job of a sweep (all of them up to _JOBS_CHECKED), as Hydra's basic
    sweeper will split them; another sweeper (e.g. Optuna) picks its own values."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    swept = [o for o in overrides if o.is_sweep_override()]
    if not swept or not basic_sweeper:
        return [fixed]
    for o in swept:
        if not o.is_discrete_sweep():
            raise ConfigError(f"{o.input_line}: Hydra's basic sweeper runs lists of values; allowed: "
                              "a,b, range(...), choice(...), glob(...), or hydra/sweeper=optuna")
    values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in swept]
    combos = list(itertools.islice(itertools.product(*values), _JOBS_CHECKED + 1))
    if len(combos) > _JOBS_CHECKED:
        firsts = [v[0] for v in values]
        combos = [firsts] + [[*firsts[:i], v, *firsts[i + 1:]] for i, vs in enumerate(values) for v in vs[1:]]
    return [fixed + list(combo) for combo in combos[:_JOBS_CHECKED]]


def _check_output_folder(key: str, folder: str) -> None:
    """The folder exists and can be written, or can be created; the check creates nothing."""
    path = Path(folder).absolute()
    existing = path
    try:
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{key}={folder}: {existing} is a file, not a folder; {_WRITABLE}")
        Path(tempfile.mkdtemp(prefix=".write-check-", dir=existing)).rmdir()
    except OSError as error:
        action = "write in" if existing == path else "create a folder in"
        raise ConfigError(f"{key}={folder}: cannot {action} {existing} ({error.strerror or error}); "
                          f"{_WRITABLE}") from None


def check_overrides(args: list[str]) -> None:
    """Checks a command line the way Hydra will run it, before anything runs or is written:
    flags, the override syntax, group options, keys, sweeps (every job of a ``-m`` sweep), values
    left required (``???``), :func:`check_config` and the output folder. Raises
    :class:`ConfigError` with one line; Hydra's own messages span a screen.

    >>> check_overrides(["dataset=nope"])
    Traceback (most recent call last):
    hyperopt.cli.ConfigError: dataset=nope; allowed: breast_cancer, diabetes, digits, file, ...
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = _parse_command_line(args)
    if flags.help or any(getattr(flags, name, None) for name in _HYDRA_ONLY_FLAGS):
        return
    with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            overrides = OverridesParser.create(config_loader=loader).parse_overrides(flags.overrides)
        except HydraException as error:
            raise ConfigError(_hydra_message(error)) from None
        for o in overrides:
            _check_group_option(o, loader)
        cfg = _compose([o.input_line for o in overrides if not o.is_sweep_override()], overrides, loader)
        multirun = flags.multirun or cfg.hydra.mode == RunMode.MULTIRUN  # -m, or hydra.mode=MULTIRUN
        for o in (o for o in overrides if o.is_sweep_override()):
            key = o.key_or_group
            if not multirun:
                raise ConfigError(f"{o.input_line} is a sweep; allowed: -m (--multirun) to run one job "
                                  f"per value, {key}=[a,b] for a list, or quotes for a string: {key}='a,b'")
            if o.is_hydra_override():
                raise ConfigError(f"{o.input_line}: Hydra's own settings take one value in a sweep; "
                                  "allowed: sweeps over the run's settings")
        jobs = _jobs(overrides, cfg.hydra.sweeper._target_.endswith(".BasicSweeper")) if multirun else [None]
        for job in jobs:
            if job is not None:
                cfg = _compose(job, overrides, loader)
            if flags.cfg:  # --cfg prints the config: nothing runs
                continue
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations
            try:
                check_config(task)
            except OmegaConfBaseException as error:
                raise ConfigError(_one_line(error)) from None
    if not flags.cfg:
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        with contextlib.suppress(OmegaConfBaseException):  # else: only Hydra's run resolves it
            folder = str(OmegaConf.select(cfg, key))
            _check_output_folder(key, folder)


def run_main() -> None:
    """Console script ``hyperopt-run``: ``--help``, the command-line check, then Hydra."""
    args = sys.argv[1:]
    if "--version" in args:
        from importlib.metadata import version

        print(f"{PROG} {version('hyperopt-jax')} (Hydra {hydra.__version__})")
        return
    try:
        if _parse_command_line(args).help:
            print(help_text())
            return
        check_overrides(args)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # noqa: BLE001 - a case the check does not know: Hydra reports it itself
        pass
    _app()
