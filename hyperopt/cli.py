"""``hyperopt-run``: the Hydra application (the only module that imports Hydra).

    hyperopt-run                                             # the default experiment
    hyperopt-run experiment=distill_digits mode=unrolled outer.learning_rate=0.05
    hyperopt-run -m mode=implicit,unrolled experiment=svm_digits hydra/launcher=joblib

Each run writes into its output folder: ``config.yaml`` (resolved), ``metrics.jsonl``
(one line per outer step), ``summary.json``, ``model.npz`` (the returned model: the
problem's readout arrays, e.g. ``coef`` (and ``intercept``) or ``W``/``b``, refit at the
chosen hyperparameters on train ∪ val; ``hparam_<name>``; for regression ``y_mean`` and
``y_scale``, since targets were standardized), ``checkpoint.pkl`` and, with the wandb
logger, an offline wandb run under ``wandb/``. The run returns the final validation loss,
so a Hydra sweeper (e.g. Optuna) can minimize it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import platform
import resource
import signal
import sys
import warnings
from pathlib import Path

import hydra
import jax
import numpy as np
import optax
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import hyperopt
from hyperopt import compile_cache, tracking
from hyperopt.bilevel import REFITS, Bilevel, FitResult, StopRule, fit, model_arrays
from hyperopt.checkpoint import FolderLock, FolderLockedError, load_checkpoint, save_checkpoint
from hyperopt.data import DataError
from hyperopt.folds import load_folds
from hyperopt.linear_solve import LinearSolveError
from hyperopt.problems.base import solver_class

__all__ = ["ConfigError", "build", "build_bilevel", "check_config", "check_overrides", "final_line",
           "fit_options", "run", "run_guarded", "run_main"]

PROG = "hyperopt-run"


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
    if not ok(value):
        raise ConfigError(f"{key}={value!r}; allowed: {allowed}")


def check_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for the first value outside what is allowed."""
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
    _check(cfg, "eval_every", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
           "an integer >= 0 (0: test metrics only at the end)")
    _check(cfg, "stop", lambda v: isinstance(v, DictConfig) and set(v) <= set(StopRule._fields),
           f"null or a mapping with keys {', '.join(StopRule._fields)}", optional=True)
    for key in ("xtol", "ftol", "gtol"):
        _check(cfg, f"stop.{key}", lambda v: _positive(v) or v == 0, "a number >= 0")
    _check(cfg, "stop.window", _positive_int, "a positive integer")
    _check(cfg, "compile_cache", lambda v: isinstance(v, str) and v != "", "auto, a folder, or null",
           optional=True)
    _check(cfg, "hparam_penalty", lambda v: _positive(v) or v == 0, "a number >= 0")
    _check(cfg, "patience", _positive_int, "a positive integer or null", optional=True)
    _check(cfg, "checkpoint_every", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    _check(cfg, "resume", lambda v: v in ("auto", True, False), "auto, true, false")
    _check(cfg, "inner_tol", lambda v: v == "auto" or (not isinstance(v, str) and len(v) == 3
           and _positive(v[0]) and _positive(v[1]) and 0 < v[2] <= 1),
           "null or [initial > 0, final > 0, decay in (0, 1]], or auto", optional=True)
    for key in ("init_l2reg", "init_l1reg"):
        _check(cfg, f"problem.{key}", _positive, "a positive number")
    _check(cfg, "problem.l2reg", _positive, "a positive number")
    _check(cfg, "logger.mode", lambda v: v in ("online", "offline", "disabled"),
           "online, offline, disabled or null", optional=True)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

class _Progress:
    """A live status line on a terminal; silent when stderr is not a TTY."""

    def __init__(self, steps: int):
        self.steps, self.enabled = steps, sys.stderr.isatty()

    def update(self, record: dict) -> None:
        if self.enabled:
            sys.stderr.write(f"\rstep {record['step'] + 1}/{self.steps}  "
                             f"outer loss {record['outer_loss']:.5g}  "
                             f"inner iters {record['inner_iterations']}  "
                             f"{record['step_time'] * 1e3:.1f} ms/step ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _warn_once(seen: set, key: str, message: str) -> None:
    if key not in seen:
        seen.add(key)
        print(f"{PROG}: warning: {message}", file=sys.stderr)


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
    summary = {
        "problem": labels["problem"], "dataset": labels["dataset"], "mode": labels["mode"],
        "solver": labels["solver"], "steps": result.state.step, "best_step": result.state.best_step,
        "status": result.status, "final": result.final_metrics, "best": result.best_metrics,
        "hparams": result.best_hparams,
        "final_hparams": {k: np.asarray(v).tolist()
                          for k, v in bilevel.problem.hparams(result.state.theta).items()},
        "stop_reason": result.stop_reason,
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
        "versions": {"hyperopt": hyperopt.__version__, "jax": jax.__version__,
                     "optax": optax.__version__, "python": platform.python_version()},
    }
    if data.image_shape is not None and hasattr(bilevel.problem, "images"):
        summary["image_shape"] = list(data.image_shape)
        summary["image_labels"] = np.asarray(bilevel.problem.image_labels(data.n_classes)).tolist()
    return summary


def build(cfg: DictConfig):
    """Dataset, :class:`~hyperopt.bilevel.Bilevel` and run labels from a composed config."""
    data = instantiate(cfg.dataset, seed=cfg.seed, dtype=cfg.precision)
    bilevel = build_bilevel(cfg)
    bilevel.problem.check_data(data)
    labels = {"problem": bilevel.problem.name, "dataset": data.name, "mode": cfg.mode.name,
              "solver": solver_class(bilevel.make_solver).__name__}
    labels.update(tracking.run_labels({k: {"name": v} for k, v in labels.items()}))
    return data, bilevel, labels


def build_bilevel(cfg: DictConfig, cv_folds=None) -> Bilevel:
    """The :class:`~hyperopt.bilevel.Bilevel` of a composed config (``cv_folds`` replaces the
    config's folds, e.g. for data that are not a config's dataset)."""
    problem = instantiate(cfg.problem, _convert_="all")
    linear_solve = cfg.mode.get("linear_solve") or {}
    make_solver = functools.partial(
        instantiate(cfg.solver, _convert_="all"), implicit_diff=cfg.mode.implicit_diff,
        implicit_diff_solve=instantiate(linear_solve) if "_target_" in linear_solve else None)
    bilevel = Bilevel(problem=problem, make_solver=make_solver,
                      optimizer=instantiate(cfg.outer, _convert_="all"),
                      hparam_penalty=cfg.hparam_penalty, cv_folds=_cv(cfg) if cv_folds is None else cv_folds,
                      inner_tol=cfg.inner_tol if cfg.inner_tol in (None, "auto") else tuple(cfg.inner_tol))
    bilevel.inner  # noqa: B018 - fails early (one line) when the problem cannot use the solver
    return bilevel


def fit_options(cfg: DictConfig) -> dict:
    """The keyword arguments of :func:`~hyperopt.bilevel.fit` that a config sets."""
    return {"patience": cfg.patience, "min_delta": cfg.min_delta, "seed": cfg.seed,
            "stop": _stop_rule(cfg), "refit": cfg.refit, "eval_every": cfg.eval_every}


def _cv(cfg: DictConfig):
    """What defines the outer loss's folds: a splitter, fold ids from a file, or cv_folds."""
    if cfg.get("cv_splitter") is not None:
        if cfg.cv_folds not in (0, "auto"):
            raise ConfigError(f"cv_folds={cfg.cv_folds!r} and cv_splitter are both set; allowed: one "
                              "of them (cv_folds=auto with a splitter)")
        return instantiate(cfg.cv_splitter, _convert_="all")
    if isinstance(cfg.cv_folds, str) and cfg.cv_folds != "auto":
        return load_folds(cfg.cv_folds)
    return cfg.cv_folds


def _stop_rule(cfg: DictConfig) -> StopRule | None:
    stop = cfg.get("stop")
    return None if stop is None else StopRule(**OmegaConf.to_container(stop))


def _enable_compile_cache(cfg: DictConfig) -> None:
    value = cfg.get("compile_cache")
    if value is None:
        compile_cache.disable()
    else:
        compile_cache.enable(None if value == "auto" else value)


def _lock_output(out_dir: Path) -> FolderLock:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return FolderLock(out_dir).__enter__()  # creating the lock file also proves we can write
    except OSError as e:
        raise tracking.TrackingError(f"output folder {out_dir} is not writable: {e.strerror or e}") from None


def _resume_state(cfg: DictConfig, out_dir: Path):
    """The checkpointed state to continue from, or None for a fresh start."""
    loaded = load_checkpoint(out_dir) if cfg.resume in ("auto", True) else None
    earlier = (out_dir / "metrics.jsonl").exists()
    if loaded is None and earlier and cfg.resume is False:
        raise ConfigError(f"resume=false but {out_dir} already holds a run; allowed: "
                          "resume=auto (continue it) or another hydra.run.dir")
    if loaded is None and cfg.resume is True:
        raise ConfigError(f"resume=true but {out_dir} holds no checkpoint; allowed: "
                          "resume=auto (start fresh when there is none)")
    if loaded is not None:
        print(f"{PROG}: resuming {out_dir} from step {loaded[0].step}", file=sys.stderr)
        return loaded[0]
    if earlier:  # killed before its first checkpoint: start over, in a clean log
        print(f"{PROG}: {out_dir} holds an unfinished run with no checkpoint; starting over",
              file=sys.stderr)
    return None


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
    seen: set = set()
    # sqrt(eps): well above what the default solves reach, so a warning means the implicit
    # system was really not solved (dense solves of ill-conditioned systems are judged by
    # their backward error instead, in hyperopt.linear_solve)
    residual_bar = float(np.sqrt(np.finfo(cfg.precision).eps))

    def on_step(state, record):
        tracker.log(record["step"], record)
        progress.update(record)
        if not record["inner_converged"]:
            _warn_once(seen, "inner", f"inner solver stopped at solver.maxiter={cfg.solver.maxiter}"
                       f" with error {record['inner_error']:.3g} > tol {record['inner_tol']:.3g} "
                       f"(outer step {record['step']}; recorded per step as inner_converged); "
                       "hypergradients may be inaccurate")
        residual = record["linear_residual"]
        if residual is not None and not residual <= residual_bar:
            _warn_once(seen, "linear", f"implicit linear solve residual {residual:.3g} at outer "
                       f"step {record['step']} (recorded per step as linear_residual)")
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            save_checkpoint(out_dir, state)

    return on_step


def run(cfg: DictConfig) -> float:
    """Runs one experiment from a composed config; returns the final validation loss."""
    check_config(cfg)
    logging.getLogger("jax").setLevel(logging.WARNING)  # Hydra sets the root logger to INFO
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    jax.config.update("jax_enable_x64", cfg.precision == "float64")
    _enable_compile_cache(cfg)  # before the first compilation of the process
    data, bilevel, labels = build(cfg)

    with _lock_output(out_dir):
        state = _resume_state(cfg, out_dir)
        if state is not None and (out_dir / "summary.json").exists() and (
                state.step >= cfg.steps or tracking.read_summary(out_dir).get("status") == "converged"):
            print(f"{PROG}: {out_dir} already holds a finished run ({state.step} steps); nothing "
                  "to do (raise steps= to continue it)", file=sys.stderr)
            return float(tracking.read_summary(out_dir).get("final", {}).get("val_loss", math.inf))
        progress = _Progress(cfg.steps)
        with _stop_on_sigint() as stop:  # before anything is written: Ctrl-C always ends cleanly
            tracker = _make_trackers(cfg, out_dir, labels, state.step if state else 0)
            try:
                tracker.log_config(OmegaConf.to_container(cfg, resolve=True) | {"run": labels})
                with warnings.catch_warnings():
                    warnings.simplefilter("once")
                    result = fit(bilevel, data, cfg.steps, state=state, **fit_options(cfg),
                                 callback=_on_step(cfg, out_dir, tracker, progress),
                                 should_stop=lambda: stop["requested"])
                progress.close()
                if cfg.checkpoint_every or result.status == "interrupted":
                    save_checkpoint(out_dir, result.state)
                if result.status == "diverged":
                    print(f"{PROG}: warning: outer loop diverged (non-finite or exploding outer "
                          "loss); the best hyperparameters so far are kept in summary.json",
                          file=sys.stderr)
                summary = _summary(result, labels, bilevel, data)
                if result.model is not None:
                    np.savez(out_dir / MODEL_FILE, **_model_file(result, data))
                    summary["returned"]["model_file"] = MODEL_FILE
                if "image_shape" in summary:
                    images = np.asarray(bilevel.problem.images(result.state.best_theta))
                    np.save(out_dir / "images.npy", images.reshape(images.shape[0], -1))  # (k, d)
                tracker.summary(summary)
            finally:
                tracker.finish()

    print(final_line(summary, out_dir))
    if result.status == "interrupted":
        sys.exit(130)
    return float(result.final_metrics.get("val_loss", math.inf))


MODEL_FILE = "model.npz"


def _model_file(result: FitResult, data) -> dict:
    """The arrays of ``model.npz``: the returned model, its hyperparameters, the target scale."""
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
    return (f"{PROG}: {summary['status']} after {summary['steps']} steps "
            f"({summary['total_time']:.1f} s, {summary['compile_time']:.1f} s compiling{cached}): "
            f"val loss {fmt(initial.get('val_loss'))} -> {fmt(returned.get('val_loss'))}, "
            f"test loss {fmt(initial.get('test_loss'))} -> {fmt(returned.get('test_loss'))}; "
            f"{_short(summary['hparams'])}; output {out_dir}")


def _short(hparams: dict) -> str:
    parts = []
    for name, value in hparams.items():
        value = np.asarray(value)
        parts.append(f"{name}={float(value):.4g}" if value.size == 1 else
                     f"{name}=<{value.size} values, mean {value.mean():.4g}>")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# Entry point: user errors become one line and a non-zero exit, not a traceback
# ---------------------------------------------------------------------------------------

USER_ERRORS = (ConfigError, DataError, FolderLockedError, tracking.TrackingError, LinearSolveError,
               ValueError, TypeError, FileNotFoundError, PermissionError)


def _root_cause(error: BaseException) -> BaseException:
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def run_guarded(cfg: DictConfig) -> float:
    """:func:`run`, with user errors turned into one line on stderr and exit status 2."""
    try:
        return run(cfg)
    except (InstantiationException, *USER_ERRORS) as error:
        cause = _root_cause(error)
        if cfg.get("debug") or not isinstance(cause, USER_ERRORS):
            raise
        text = str(cause).strip()
        message = text.splitlines()[0] if text else type(cause).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="config")
def _app(cfg: DictConfig) -> float:
    return run_guarded(cfg)


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(_config_dir()) / group).glob("*.yaml"))


def check_overrides(args: list[str]) -> None:
    """Checks command-line overrides before Hydra composes them, so that an unknown group
    option or key is one line (Hydra's own messages span a screen). Raises ConfigError."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    root = Path(_config_dir())
    is_group = lambda key: not key.startswith("_") and (root / key).is_dir()
    first_choices, keys = [], []
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_add() or o.is_delete() or o.package:
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if is_group(key):
            options = _group_options(key) + (["null"] if key == "experiment" else [])
            for value in values:
                if value not in options:
                    raise ConfigError(f"{key}={value}; allowed: {', '.join(options)}")
            first_choices.append(f"{key}={values[0]}")
        else:
            keys.append(key)
    if not keys:
        return
    with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=first_choices)
    for key in keys:
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            top = ", ".join(k for k in cfg if k != "hydra")
            raise ConfigError(f"unknown key {key!r}; allowed: existing keys ({top}, and their "
                              f"sub-keys), or +{key}=... to add a new one")


def run_main() -> None:
    """Console script ``hyperopt-run``."""
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # noqa: BLE001 - anything else: let Hydra report it in its own words
        pass
    _app()
