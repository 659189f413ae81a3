"""Black-box baselines: random search and Optuna's TPE over the penalties of a :class:`Bilevel`.

What a user would pick instead of hypergradients, run inside the application on equal terms:
the same inner solver and tolerance, the same splits and folds (``cv_folds``), the same refit
of the returned model on train ∪ val, the same outputs. A trial solves the inner problem at
one value of the hyperparameters (cold start, to the final inner tolerance) and measures the
outer loss, in **one compiled program for all trials**: the hyperparameters are arguments,
never constants, so no trial compiles anything (``FitResult.compile["compiles_during_trials"]``
counts XLA compilations in the trial loop, and is 0).

The search space: every hyperparameter ``λ = exp(θ)`` (each coordinate of a per-feature
penalty on its own) log-uniform in ``[low, high]``. Features are standardized (and regression
targets too, see :mod:`hyperopt.data`), so the default range 1e-6 … 1e2 spans the useful
penalties of ridge, logistic regression and the lasso (above λ_max = max|Xᵀy|/n ≤ ~1 a lasso
is all zeros). Problems whose hyperparameters are not penalties (dataset distillation's
images) cannot be searched this way.

* ``random``: coordinates drawn from ``numpy.random.default_rng((seed, trial))``: trial ``i``
  is the same draw whether the run was resumed or not.
* ``tpe``: Optuna's :class:`optuna.samplers.TPESampler` (current Optuna, ``pip install
  optuna``), ``startup_trials`` random trials first. The sampler is seeded per trial from
  ``(seed, trial)`` and sees the finished trials, so a resumed search (its trials replayed
  into a new study) asks for the same next trial as an uninterrupted one.

The search's state is an :class:`~hyperopt.bilevel.OuterState` (``step`` = trials done, its
``opt_state`` the list of finished trials), so it is checkpointed and resumed like a run.

Example:
    >>> bl = Bilevel(problem=Ridge(), make_solver=LBFGS, optimizer=optax.adam(0.1))
    >>> result = random_search(bl, load_dataset("diabetes"), trials=30, seed=0)
    >>> result.best_hparams["l2reg"], result.model_metrics["test_loss"]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import compile_cache
from hyperopt.bilevel import (
    REFITS,
    Bilevel,
    FitResult,
    OuterState,
    Splits,
    _blas_limited,
    _refit_data,
    _temp_mb,
    _warm_refit,
    hparam_log,
    make_splits,
    over_folds,
)
from hyperopt.data import Dataset

__all__ = ["SAMPLERS", "SearchSpace", "TrialInfo", "evaluate", "random_search", "search", "search_space",
           "tpe_search"]

SAMPLERS = ("random", "tpe")
DEFAULT_LOW, DEFAULT_HIGH = 1e-6, 1e2


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The coordinates searched: one per entry of every hyperparameter, log-uniform.

    ``names``: ``"l2reg"`` for a scalar, ``"l2reg[3]"`` for entry 3 of a vector; ``low``,
    ``high``: the bounds of λ per coordinate, shape (coordinates,).
    """

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtype: Any
    bounds: dict = dataclasses.field(default_factory=dict)  # {name: (low, high)} per hyperparameter

    def theta(self, values: np.ndarray) -> Any:
        """θ = log λ (the problem's hyperparameter pytree) for λ per coordinate, on device."""
        log = np.log(np.asarray(values, np.float64))
        sizes = np.cumsum([0, *(math.prod(s) for s in self.shapes)])
        leaves = [jax.device_put(log[a:b].reshape(s).astype(self.dtype))  # no op to compile
                  for a, b, s in zip(sizes[:-1], sizes[1:], self.shapes, strict=True)]
        return jax.tree.unflatten(self.treedef, leaves)


Bound = float | Mapping[str, float]


def search_space(problem, data: Dataset, low: Bound = DEFAULT_LOW, high: Bound = DEFAULT_HIGH) -> SearchSpace:
    """The search space of ``problem``'s hyperparameters on ``data``.

    ``low``/``high``: the bounds of every penalty, or a mapping from a hyperparameter's name to
    its bounds (e.g. ``low={"l1reg": 1e-4, "l2reg": 1e-3}`` for the elastic net; a name left
    out keeps the default).

    >>> search_space(Lasso(elastic_net=True), data, low={"l2reg": 1e-3}).names
    ('l1reg', 'l2reg')

    Raises:
      ValueError: bad bounds, or hyperparameters that are not ``exp(θ)`` (not penalties).
    """
    theta0 = problem.init_hparams(data)
    leaves, treedef = jax.tree.flatten(theta0)
    # A probe θ with distinct entries: hparams(θ) must be exp(θ), leaf by leaf, in order.
    sizes = [int(np.size(leaf)) for leaf in leaves]
    probe = np.linspace(-1.0, 1.0, sum(sizes) + 1)[1:]
    offsets = np.cumsum([0, *sizes])
    probe_leaves = [jnp.asarray(probe[a:b].reshape(np.shape(leaf)), leaf.dtype)
                    for a, b, leaf in zip(offsets[:-1], offsets[1:], leaves, strict=True)]
    hparams = problem.hparams(jax.tree.unflatten(treedef, probe_leaves))
    values = [np.asarray(v) for v in hparams.values()]
    exp_of = len(values) == len(leaves) and all(
        v.shape == np.shape(p) and np.allclose(v, np.exp(np.asarray(p)), rtol=1e-5)
        for v, p in zip(values, probe_leaves, strict=False))
    if not exp_of:
        raise ValueError(f"search: problem {problem.name!r} has hyperparameters that are not penalties "
                         f"({', '.join(hparams)}); allowed: problems with penalties lambda = exp(theta) "
                         "(ridge, logistic, lasso, svm_dual), or the gradient-based search (search=none)")
    bounds = {}
    for name in hparams:
        lo, hi = (_bound(b, name, default) for b, default in ((low, DEFAULT_LOW), (high, DEFAULT_HIGH)))
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise ValueError(f"search bounds of {name}: low={lo!r}, high={hi!r}; allowed: 0 < low < high")
        bounds[name] = lo, hi
    for bound in (low, high):
        unknown = set(bound) - set(hparams) if isinstance(bound, Mapping) else set()
        if unknown:
            raise ValueError(f"search bounds for {', '.join(sorted(unknown))}; allowed: {', '.join(hparams)}")
    names, lows, highs = [], [], []
    for name, v in zip(hparams, values, strict=True):
        names += [name] if v.ndim == 0 else [f"{name}[{i}]" for i in range(v.size)]
        lows += [bounds[name][0]] * v.size
        highs += [bounds[name][1]] * v.size
    return SearchSpace(tuple(names), np.array(lows), np.array(highs), treedef,
                       tuple(np.shape(leaf) for leaf in leaves), leaves[0].dtype, bounds)


def _bound(bound: Bound, name: str, default: float) -> float:
    return float(bound.get(name, default) if isinstance(bound, Mapping) else bound)


class TrialInfo(NamedTuple):
    """What one trial measures (the fields of :class:`~hyperopt.bilevel.StepInfo` that a
    trial has)."""

    outer_loss: jax.Array  # data term + hyperparameter penalty
    data_loss: jax.Array  # the (hold-out or k-fold) validation loss alone
    hparams: dict
    inner_iterations: jax.Array
    inner_error: jax.Array
    inner_converged: jax.Array
    val_metrics: dict  # hold-out: the problem's metrics on the validation split


def evaluate(bilevel: Bilevel, theta, splits: Splits, tol) -> tuple[TrialInfo, Any]:
    """One trial, pure: the inner problems of every fold solved from a cold start at ``theta``
    to ``tol``, and the outer loss. Returns ``(TrialInfo, inner solutions)`` (one per fold)."""
    params, states = bilevel.inner_solve(theta, splits.cold_params, splits, tol)
    losses = over_folds(lambda p, fold: bilevel._outer_objective(p, theta, splits, fold),
                        params, jnp.arange(splits.n_folds))
    loss = losses.mean()
    val_metrics = {}
    if splits.val is not None:  # hold-out: as the gradient-based step reports it
        first = jax.tree.map(lambda p: p[0], params)
        readout = bilevel.problem.readout(first, theta, *splits.inner, splits.inner_w[0])
        val_metrics = bilevel.problem.metrics(readout, theta, *splits.val)
    info = TrialInfo(loss + bilevel.penalty(theta), loss, bilevel.problem.hparams(theta),
                     jnp.max(states.iter_num), jnp.max(states.error), jnp.all(states.converged), val_metrics)
    return info, params


# ----------------------------------------------------------------------------- samplers

def _trial_seed(seed: int, trial: int) -> int:
    return int(np.random.SeedSequence([seed, trial]).generate_state(1)[0])


class _Random:
    def __init__(self, space: SearchSpace, seed: int, history: list, **_):
        self.space, self.seed = space, seed

    def ask(self, trial: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, trial])
        return np.exp(rng.uniform(np.log(self.space.low), np.log(self.space.high)))

    def tell(self, values: np.ndarray, loss: float) -> None:
        pass


class _TPE:
    """Optuna's TPE; the finished trials (``history``) are replayed into a new study."""

    def __init__(self, space: SearchSpace, seed: int, history: list, startup_trials: int = 10):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.space, self.seed, self.startup_trials = optuna, space, seed, startup_trials
        self.distributions = {name: optuna.distributions.FloatDistribution(float(lo), float(hi), log=True)
                              for name, lo, hi in zip(space.names, space.low, space.high, strict=True)}
        self.study = optuna.create_study(direction="minimize")
        for record in history:
            self.study.add_trial(self._frozen(record["values"], record["loss"]))
        self.pending = None

    def _frozen(self, values, loss):
        TrialState = self.optuna.trial.TrialState
        finite = loss is not None and math.isfinite(loss)
        return self.optuna.trial.create_trial(
            params=dict(zip(self.space.names, map(float, values), strict=True)),
            distributions=self.distributions, value=float(loss) if finite else None,
            state=TrialState.COMPLETE if finite else TrialState.FAIL)

    def ask(self, trial: int) -> np.ndarray:
        self.study.sampler = self.optuna.samplers.TPESampler(
            seed=_trial_seed(self.seed, trial), n_startup_trials=self.startup_trials)
        self.pending = self.study.ask(self.distributions)
        return np.array([self.pending.params[name] for name in self.space.names])

    def tell(self, values: np.ndarray, loss: float) -> None:
        if math.isfinite(loss):
            self.study.tell(self.pending, loss)
        else:
            self.study.tell(self.pending, state=self.optuna.trial.TrialState.FAIL)


_SAMPLER_CLASSES = {"random": _Random, "tpe": _TPE}


# ----------------------------------------------------------------------------- the search

def _search_state(state: OuterState | None, settings: dict) -> list:
    """The finished trials of a resumed search (after checking it is the same search)."""
    if state is None:
        return []
    held = state.opt_state if isinstance(state.opt_state, dict) else {}
    if held.get("settings") != settings:
        what = (f"search with {held['settings']}" if "settings" in held else "gradient-based run")
        raise ValueError(f"the state to resume is a {what}, not this search ({settings}); allowed: "
                         "the same search settings, or another output folder (hydra.run.dir=...)")
    return list(held["trials"])


@_blas_limited
def search(bilevel: Bilevel, data: Dataset, trials: int, sampler: str = "random", *, seed: int = 0,
           low: Bound = DEFAULT_LOW, high: Bound = DEFAULT_HIGH, startup_trials: int = 10,
           state: OuterState | None = None, refit: str = "train_val",
           callback: Callable[[OuterState, dict], None] | None = None,
           should_stop: Callable[[], bool] | None = None, blas_threads: int | None = 1) -> FitResult:
    """Evaluates ``trials`` hyperparameter values drawn by ``sampler``, then refits the best.

    Args:
      bilevel: the problem and inner solver (its outer optimizer is not used); its
        ``cv_folds`` and ``hparam_penalty`` define the outer loss, as for :func:`fit`.
      data: a :class:`~hyperopt.data.Dataset`.
      trials: number of trials (status ``"completed"`` when all ran).
      sampler: ``"random"`` or ``"tpe"`` (needs ``optuna``).
      seed: the splits' and folds' seed, and the sampler's.
      low, high: every penalty λ is searched log-uniformly in ``[low, high]`` (numbers, or
        mappings by hyperparameter name, see :func:`search_space`).
      startup_trials: TPE's random trials before it models the loss.
      state: an :class:`OuterState` of this search to resume from (a checkpoint).
      refit, callback, should_stop, blas_threads: as for :func:`~hyperopt.bilevel.fit`.

    Returns:
      A :class:`~hyperopt.bilevel.FitResult`: one history record per trial (``step`` and
      ``trial`` its index, the hyperparameters, ``outer_loss``, ``val_loss``, the best so
      far, ``step_time``, ``time``), the best trial's hyperparameters, the model refit there
      and its test metrics.

    Example:
      >>> result = tpe_search(bl, data, trials=50, seed=0)
      >>> result.state.best_step, result.best_hparams
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if not (isinstance(trials, int) and trials > 0):
        raise ValueError(f"trials={trials!r}; allowed: a positive integer")
    if refit not in REFITS:
        raise ValueError(f"refit={refit!r}; allowed: {', '.join(REFITS)}")
    space = search_space(bilevel.problem, data, low, high)
    splits = make_splits(bilevel.problem, data, bilevel.cv_folds, seed)
    if refit == "train" and splits.n_folds > 1:
        raise ValueError("refit='train' needs a hold-out outer loss (cv_folds=0); with k folds "
                         "the returned model is refit on train ∪ val (refit='train_val')")
    settings = {"sampler": sampler, "seed": seed, "bounds": {k: list(v) for k, v in space.bounds.items()}}
    if sampler == "tpe":
        settings["startup_trials"] = startup_trials
    history_trials = _search_state(state, settings)
    theta0 = bilevel.problem.init_hparams(data)
    if state is None:
        state = OuterState(step=0, theta=theta0, opt_state={"settings": settings, "trials": []},
                           inner_params=splits.cold_params, best_theta=theta0, best_loss=math.inf,
                           best_step=-1, step_scale=1.0)
    drawer = _SAMPLER_CLASSES[sampler](space, seed, history_trials, startup_trials=startup_trials)
    dtype = data.X_train.dtype
    tol = jnp.asarray(bilevel.final_tol(dtype), dtype)
    X_refit, y_refit = _refit_data(bilevel, data, refit)
    refit_cold = bilevel.problem.init_params(data, n_samples=y_refit.shape[0])

    # Two compiled programs, both before the first trial: a trial, and the refit.
    with compile_cache.CompileWatch() as watch:
        t0 = time.perf_counter()
        trial_l = jax.jit(lambda theta, splits, tol: evaluate(bilevel, theta, splits, tol)).lower(
            theta0, splits, tol)
        refit_l = jax.jit(bilevel.refit_model).lower(theta0, refit_cold, X_refit, y_refit,
                                                     data.X_test, data.y_test, tol)
        t1 = time.perf_counter()
        trial_c = trial_l.compile()
        t2 = time.perf_counter()
        refit_c = refit_l.compile()
        t3 = time.perf_counter()
    compile_time = t3 - t0

    history, status, stop_reason = [], "completed", f"ran all {trials} trials"
    start = time.perf_counter()
    with compile_cache.CompileWatch() as loop_watch:
        while state.step < trials:
            index = state.step
            values = drawer.ask(index)
            theta = space.theta(values)
            t = time.perf_counter()
            info, params = jax.block_until_ready(trial_c(theta, splits, tol))
            step_time = time.perf_counter() - t
            loss = float(info.outer_loss)
            drawer.tell(values, loss)
            improved = math.isfinite(loss) and loss < state.best_loss
            metrics = {f"val_{k}": float(v) for k, v in info.val_metrics.items()}
            if splits.n_folds > 1:
                metrics["val_loss"] = float(info.data_loss)  # the k-fold (out-of-fold) loss
            best_metrics = {"outer_loss": loss, **metrics} if improved else state.best_metrics
            record = {
                "step": index, "trial": index, "outer_loss": loss, **metrics,
                "best_outer_loss": loss if improved else state.best_loss,
                "best_val_loss": (best_metrics or {}).get("val_loss", math.nan),
                "best_trial": index if improved else state.best_step,
                "step_time": step_time,
                "inner_iterations": int(info.inner_iterations),
                "inner_error": float(info.inner_error),
                "inner_converged": bool(info.inner_converged),
                "inner_tol": float(tol),
                **hparam_log(jax.device_get(info.hparams)),
                "time": time.perf_counter() - start,
            }
            finished = [*state.opt_state["trials"],
                        {"values": [float(v) for v in values], "loss": loss if math.isfinite(loss) else None}]
            state = state._replace(
                step=index + 1, theta=theta, opt_state={"settings": settings, "trials": finished},
                best_theta=theta if improved else state.best_theta,
                best_loss=loss if improved else state.best_loss,
                best_step=index if improved else state.best_step, best_metrics=best_metrics,
                best_params=params if improved else state.best_params)
            history.append(record)
            if callback is not None:
                callback(state, record)
            if should_stop is not None and should_stop():
                status, stop_reason = "interrupted", "interrupted"
                break
    compile_info = {"trace_s": t1 - t0, "trial_s": t2 - t1, "refit_s": t3 - t2,
                    "cache_dir": str(compile_cache.enabled_dir() or "") or None,
                    "cache": watch.as_dict(), "from_cache": watch.from_cache,
                    "compiles_during_trials": loop_watch.compiles}

    model = model_metrics = initial = None
    if state.best_step >= 0:
        model, _, metrics = refit_c(state.best_theta, _warm_refit(refit_cold, state.best_params),
                                    X_refit, y_refit, data.X_test, data.y_test, tol)
        model, model_metrics = jax.device_get(model), {k: float(v) for k, v in metrics.items()}
        # what tuning is compared with: the problem's initial hyperparameters (not a trial)
        info0, _ = trial_c(theta0, splits, tol)
        _, _, metrics0 = refit_c(theta0, refit_cold, X_refit, y_refit, data.X_test, data.y_test, tol)
        val0 = info0.data_loss if splits.n_folds > 1 else info0.val_metrics.get("loss", math.nan)
        initial = {"hparams": {k: np.asarray(v).tolist() for k, v in bilevel.problem.hparams(theta0).items()},
                   "val_loss": float(val0), **{k: float(v) for k, v in metrics0.items()}}
    best_metrics = dict(state.best_metrics or {})
    best_metrics.update(model_metrics or {})
    best_hparams = {k: np.asarray(v).tolist() for k, v in bilevel.problem.hparams(state.best_theta).items()}
    return FitResult(state, history, best_hparams, history[-1] if history else {}, best_metrics, status,
                     compile_time, time.perf_counter() - start + compile_time, _temp_mb(trial_c),
                     stop_reason=stop_reason, model=model, model_metrics=model_metrics,
                     initial=initial, refit=refit, compile=compile_info)


def random_search(bilevel: Bilevel, data: Dataset, trials: int, seed: int = 0, **options) -> FitResult:
    """:func:`search` with ``sampler="random"``.

    >>> result = random_search(Bilevel(Ridge(), LBFGS, optax.adam(0.1)), data, trials=30)
    """
    return search(bilevel, data, trials, "random", seed=seed, **options)


def tpe_search(bilevel: Bilevel, data: Dataset, trials: int, seed: int = 0, **options) -> FitResult:
    """:func:`search` with ``sampler="tpe"`` (Optuna's TPE; ``pip install optuna``).

    >>> result = tpe_search(Bilevel(Ridge(), LBFGS, optax.adam(0.1)), data, trials=30)
    """
    return search(bilevel, data, trials, "tpe", seed=seed, **options)
