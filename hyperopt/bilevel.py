"""The outer loop: hypergradient steps on hyperparameters with an optax optimizer.

One outer step solves the inner problem (warm-started from the previous solution),
evaluates the outer loss, computes its hypergradient, and applies an optax update to the
unconstrained hyperparameters ``theta`` — all in **one compiled program**:

* implicit mode: the inner solve runs to tolerance without being differentiated; the
  hypergradient is :func:`hyperopt.root_vjp` on the solver's optimality condition, which
  also returns the linear system's residual for the logs;
* unrolled mode: ``jax.grad`` through the solver's unrolled iterations. It always starts
  cold: a warm start that has already converged would freeze the iterate and give a zero
  derivative.

Hold-out and k-fold outer losses share one code path: the inner and outer splits carry
per-sample weights with a leading fold axis (one fold for hold-out; see
:mod:`hyperopt.folds`), and the folds are solved one after the other by a ``lax.map``
(:func:`over_folds`): each fold's solver stops at its own iteration count (under
``vmap`` all folds run as long as the slowest), and tracing the step does not go
through JAX's batching rules, which doubled its tracing time.

What :func:`fit` does by default, and why:

* **inner tolerance, loose to tight** (``inner_tol="auto"``, implicit mode): early outer
  steps only need the direction of the hypergradient, so the inner solves start at 1e-4
  and tighten ×0.1 per step to the solver's own tolerance (1e-10 in float64, 1e-4 in
  float32); the run stops only once that final tolerance is reached, so the chosen
  hyperparameters are those of exact hypergradients.
* **an outer stopping rule** (:class:`StopRule`): status ``"converged"`` when, at the final
  inner tolerance, the optimizer's updates of θ stayed below ``xtol`` and the outer loss
  changed by less than ``ftol`` (relative) for ``window`` steps in a row.
* **the model it hands back** is refit at the chosen hyperparameters on train ∪ val
  (``refit="train_val"``, as scikit-learn's CV estimators do) and its test metrics are
  computed once, at the end.

Example:
    >>> bl = Bilevel(problem=Logistic(), make_solver=LBFGS, optimizer=lbfgs_backtracking())
    >>> result = fit(bl, load_dataset("breast_cancer"), steps=50)
    >>> result.best_hparams["l2reg"], result.status, result.model_metrics["test_loss"]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import re
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperopt import compile_cache, linop
from hyperopt.data import Dataset
from hyperopt.folds import fold_masks, is_holdout, resolve_cv
from hyperopt.implicit_diff import root_vjp
from hyperopt.linear_solve import LinearSolveWarning
from hyperopt.problems.base import InnerSolver, Problem, SolverFactory
from hyperopt.solvers.base import default_tol

__all__ = [
    "AUTO_INNER_TOL", "DEFAULT_STOP", "REFITS", "STARTS", "Bilevel", "DivergenceWarning",
    "FitResult", "OuterState", "Splits", "StepInfo", "StopRule", "ZeroHypergradientWarning",
    "blas_threads_limit", "fit",
    "make_splits",
    "model_arrays", "over_folds",
]

REFITS = ("train_val", "train")
# inner_tol="auto": (initial, decay); the final tolerance is the solver's own.
AUTO_INNER_TOL = (1e-4, 0.1)
STARTS = ("auto", "path", "init")


class DivergenceWarning(RuntimeWarning):
    """An outer step was rejected: non-finite or sharply increasing outer loss."""


class ZeroHypergradientWarning(RuntimeWarning):
    """The hypergradient was exactly zero for several steps: the hyperparameters cannot move."""


class Splits(NamedTuple):
    """Inner (training) and outer (validation) data with fold weights.

    ``inner``/``outer`` are ``(X, y)``; ``inner_w``/``outer_w`` have shape (folds, n);
    ``val`` is the validation split ``(X_val, y_val)`` for per-step validation metrics of
    a hold-out run (``None`` with k folds, where the outer loss is the k-fold loss).
    """

    inner: tuple
    outer: tuple
    inner_w: jax.Array
    outer_w: jax.Array
    cold_params: Any  # the problem's initial inner parameters, one per fold
    val: tuple | None = None

    @property
    def n_folds(self) -> int:
        return self.inner_w.shape[0]


def make_splits(problem: Problem, data: Dataset, cv_folds: Any = 0, seed: int = 0) -> Splits:
    """Hold-out splits (``cv_folds=0``) or folds over train ∪ validation.

    ``cv_folds``: 0, ``"auto"``, an integer ``k >= 2``, fold ids (one per sample of
    train ∪ val) or a scikit-learn splitter (see :func:`hyperopt.folds.fold_masks`).
    """
    dtype = data.X_train.dtype
    cv_folds = resolve_cv(cv_folds, data.n_train + data.n_val, problem.supports_cv)
    if not is_holdout(cv_folds):
        if not problem.supports_cv:
            raise ValueError(f"cv_folds={cv_folds}: problem {problem.name!r} has no "
                             "cross-validated outer loss; allowed: 0")
        X, y = _train_val(data)
        inner_w, outer_w = fold_masks(cv_folds, X, y, seed)
        folds = inner_w.shape[0]
        return Splits((X, y), (X, y), _device(inner_w, dtype), _device(outer_w, dtype),
                      _per_fold(problem, data, y.shape[0], folds))
    outer = (data.X_train, data.y_train) if problem.outer_split == "train" else (data.X_val, data.y_val)
    return Splits((data.X_train, data.y_train), outer,
                  _device(np.ones((1, data.n_train)), dtype), _device(np.ones((1, outer[1].shape[0])), dtype),
                  _per_fold(problem, data, data.n_train, 1), val=(data.X_val, data.y_val))


# The set-up of a run works on host arrays and moves them with ``jax.device_put``: an eager
# ``jnp`` operation compiles a small XLA program per shape in every new process (10-25 ms
# each, most of a warm run's set-up).
def _device(x, dtype=None):
    return jax.device_put(np.asarray(x, dtype))


def _train_val(data: Dataset):
    """Train ∪ val (dense or sparse), on the device."""
    if linop.is_sparse(data.X_train):
        X = linop.concat_rows([data.X_train, data.X_val])
    else:
        X = _device(np.concatenate([np.asarray(data.X_train), np.asarray(data.X_val)]))
    return X, _device(np.concatenate([np.asarray(data.y_train), np.asarray(data.y_val)]))


def _per_fold(problem: Problem, data: Dataset, n_samples: int, folds: int):
    params = problem.init_params(data, n_samples=n_samples)
    return jax.tree.map(lambda p: _device(np.broadcast_to(np.asarray(p), (folds, *p.shape))), params)


class StopRule(NamedTuple):
    """The outer stopping rule (status ``"converged"``).

    The run stops when, for ``window`` outer steps in a row, every coordinate of the
    optimizer's update of θ is at most ``xtol`` (θ = log λ for every penalty, so this is a
    relative change of λ) **and** the outer loss changed by at most ``ftol`` relative to
    its value; or when the hypergradient norm is at most ``gtol`` (off when 0). It only
    stops at the final inner tolerance: when the updates fall below ``xtol`` earlier, the
    tolerance drops to its final value at once and the test starts over. (The best step,
    whose hyperparameters are returned, is likewise chosen among the steps at the final
    tolerance once there are any.) ``ftol`` = 1e-5: a lasso's validation loss has kinks
    (where the support changes) and its minimum often sits on one, where the
    hypergradient does not vanish and a smaller ``ftol`` asks to locate the kink to
    ~1e-4 in log λ, many steps below anything the validation loss can tell apart.
    ``xtol=None`` (the default): the problem's ``stop_xtol`` (1e-3; the lasso's 1e-2, for
    the same kinks).
    """

    xtol: float | None = None
    ftol: float = 1e-5
    gtol: float = 0.0
    window: int = 2


DEFAULT_STOP = StopRule()


class StepInfo(NamedTuple):
    """What one outer step measures (before the update is applied)."""

    outer_loss: jax.Array  # data term + hyperparameter penalty
    data_loss: jax.Array  # the (hold-out or k-fold) validation loss alone
    hypergrad: Any
    hypergrad_norm: jax.Array
    zero_hypergrad: jax.Array  # the data term's hypergradient is exactly zero
    update_size: jax.Array  # max |θ_new - θ| of the applied update
    hparams: dict  # the constrained hyperparameters at which the step was taken
    inner_iterations: jax.Array
    inner_error: jax.Array
    inner_converged: jax.Array
    linear_residual: jax.Array
    val_metrics: dict  # hold-out: the problem's metrics on the validation split


class OuterState(NamedTuple):
    """Everything needed to continue the outer loop (and what a checkpoint holds)."""

    step: int
    theta: Any
    opt_state: Any
    inner_params: Any  # warm start, one per fold
    best_theta: Any
    best_loss: float
    best_step: int
    step_scale: float  # shrinks after a rejected (diverging) step
    best_metrics: dict | None = None  # metrics recorded at best_step
    last_good: Any = None  # the state before the last accepted step, to fall back on
    rejections: int = 0  # rejected steps in a row
    retry: bool = False  # this state is a fallback after a rejection
    best_params: Any = None  # inner solutions at best_step (warm start of the refit)
    last_loss: float = math.nan  # outer loss of the previous step (stopping rule)
    small_steps: int = 0  # steps in a row that passed the stopping test
    tight: bool = False  # the inner tolerance was sent to its final value early
    zero_steps: int = 0  # steps in a row with an exactly zero hypergradient
    initial_val_loss: float = math.nan  # validation loss at the initial hyperparameters
    best_at_final: bool = False  # best_step ran at the final inner tolerance


def over_folds(fn: Callable, *xs):
    """``fn`` applied to each slice of ``xs`` along their leading (fold) axis, outputs
    stacked: ``jax.lax.map`` for several folds, a plain call for one."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        out = fn(*jax.tree.map(lambda x: x[0], xs))
        return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)
    return jax.lax.map(lambda args: fn(*args), xs)


def _accepts(solve: Callable, name: str) -> bool:
    """Whether ``solve`` takes the keyword ``name`` and has not been given it already."""
    if isinstance(solve, functools.partial):
        if name in solve.keywords:
            return False
        solve = solve.func
    try:
        return name in inspect.signature(solve).parameters
    except (TypeError, ValueError):
        return False


def _quiet(solve: Callable) -> tuple[Callable, bool]:
    """The linear solve with its in-program residual check off, and whether it was turned off.

    JAX never writes programs with host callbacks (the check's ``jax.debug.callback``) to
    the persistent compilation cache, so the outer loop checks the residual it gets back
    on the host instead. A solve whose ``on_failure`` the user chose is left as it is.
    """
    if _accepts(solve, "on_failure"):
        return functools.partial(solve, on_failure="ignore"), True
    return solve, False


def blas_threads_limit(limit: int | None):
    """A context in which the BLAS/LAPACK library (OpenBLAS, MKL: what JAX's CPU
    factorizations call) uses at most ``limit`` threads; ``None``: as it is.

    The compiled programs call LAPACK for small factorizations inside their loops (the
    Newton step of coordinate descent, dense implicit solves); a threaded one waits for
    threads that a busy machine does not give it: measured on 2 busy cores, a 128 × 128
    Cholesky takes 0.09 ms on one thread and a median of 100 ms on two.

    Example:
      >>> with blas_threads_limit(1):
      ...     result = fit(bilevel, data, steps=50, blas_threads=None)
    """
    import contextlib

    if limit is None:
        return contextlib.nullcontext()
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"blas_threads={limit!r}; allowed: a positive integer or None")
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="blas")


def _blas_limited(fn: Callable) -> Callable:
    """``fn`` run inside :func:`blas_threads_limit` of its ``blas_threads`` argument."""
    default = inspect.signature(fn).parameters["blas_threads"].default

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads_limit(kwargs.get("blas_threads", default)):
            return fn(*args, **kwargs)
    return wrapper


@dataclasses.dataclass(frozen=True)
class Bilevel:
    """A bilevel problem wired to an inner solver and an outer optimizer.

    Attributes:
      problem: the :class:`~hyperopt.problems.Problem`.
      make_solver: solver class or ``functools.partial`` of one (maxiter, tol,
        implicit_diff, implicit_diff_solve, ...).
      optimizer: any optax optimizer (applied to the unconstrained ``theta``); its
        ``update`` also receives ``value=`` (the outer loss), ``grad=`` and ``value_fn=``
        (the outer loss as a function of θ, for line searches such as ``optax.lbfgs``).
      hparam_penalty: ``γ``: adds ``γ · Σ (θ - mean θ)²`` over each vector hyperparameter,
        which shrinks many per-feature penalties toward a common value.
      cv_folds: 0 for a hold-out outer loss; ``k >= 2``, fold ids or a scikit-learn
        splitter for cross-validation over train ∪ val; ``"auto"``: 5 folds when train ∪ val
        has at most 2000 samples and the problem supports it (:mod:`hyperopt.folds`).
      inner_tol: ``"auto"`` (default): from 1e-4, ×0.1 per outer step, down to the
        solver's tol; ``None``: the solver's tol throughout; or ``(initial, final,
        decay)``. Implicit mode only: unrolled mode always solves to the final tolerance.
    """

    problem: Problem
    make_solver: SolverFactory
    optimizer: optax.GradientTransformation
    hparam_penalty: float = 0.0
    cv_folds: Any = 0
    inner_tol: Any = "auto"

    def __post_init__(self):
        if isinstance(self.cv_folds, (list, np.ndarray)):  # keep the object hashable (jit)
            object.__setattr__(self, "cv_folds", tuple(int(i) for i in np.asarray(self.cv_folds)))
        tol = self.inner_tol
        if not (tol is None or tol == "auto" or (len(tol) == 3 and tol[0] > 0 and tol[1] > 0
                                                  and 0 < tol[2] <= 1)):
            raise ValueError(f"inner_tol={tol!r}; allowed: 'auto', None or (initial > 0, "
                             "final > 0, decay in (0, 1])")

    @functools.cached_property
    def inner(self) -> InnerSolver:
        return self.problem.inner_solver(self.make_solver)

    @property
    def implicit(self) -> bool:
        return bool(self.inner.solver.implicit_diff)

    @functools.cached_property
    def _linear_solve(self) -> tuple[Callable, bool]:
        return _quiet(self.inner.solver.linear_solve)

    def final_tol(self, dtype) -> float:
        """The tolerance of the last outer steps and of the refit."""
        if isinstance(self.inner_tol, tuple):
            return float(self.inner_tol[1])
        tol = self.inner.solver.tol
        return float(default_tol(np.zeros((), dtype)) if tol is None else tol)

    def tol_at(self, step: int, dtype, tight: bool = False) -> jax.Array:
        """Inner tolerance of outer step ``step`` (``tight``: the final one)."""
        final = self.final_tol(dtype)
        if self.inner_tol is None or tight or not self.implicit:
            # An unrolled derivative through a loosely converged (frozen) iterate is not a
            # slightly inexact hypergradient but the derivative of a truncated iteration,
            # often of the wrong sign (measured on the SVM dual): unrolled mode always
            # solves to the final tolerance.
            return _device(final, dtype)
        if self.inner_tol == "auto":
            initial, decay = AUTO_INNER_TOL
        else:
            initial, _, decay = self.inner_tol
        tol = initial * decay ** step
        # 1e-4 * 0.1**6 is 1.0000000000000004e-10 in floating point: within rounding of the
        # final tolerance it is the final tolerance (else that step would not count as final
        # for the stopping rule, and every run took one more outer step)
        return _device(final if tol <= final * (1 + 1e-9) else tol, dtype)

    def penalty(self, theta):
        if not self.hparam_penalty:
            return 0.0
        leaves = [leaf for leaf in jax.tree.leaves(theta) if leaf.ndim > 0]
        return self.hparam_penalty * sum(jnp.sum((leaf - jnp.mean(leaf)) ** 2) for leaf in leaves)

    # -- the pieces of one outer step (pure functions of arrays) ---------------------------
    def _solver(self, tol, implicit: bool | None = None):
        changes = {"tol": tol, "implicit_diff_solve": self._linear_solve[0]}
        if implicit is not None:
            changes["implicit_diff"] = implicit
        return dataclasses.replace(self.inner.solver, **changes)

    def _outer_objective(self, params, theta, splits: Splits, fold: int | jax.Array):
        readout = self.problem.readout(params, theta, *splits.inner, splits.inner_w[fold])
        return self.problem.outer_loss(readout, theta, *splits.outer, splits.outer_w[fold])

    def inner_solve(self, theta, init_params, splits: Splits, tol):
        """Solves every fold's inner problem (no derivative). Returns (params, states)."""
        solver, args_of = self._solver(tol, implicit=True), self.inner.args
        run = lambda init, w: solver.run(init, *args_of(theta, *splits.inner, w))
        return over_folds(run, init_params, splits.inner_w)

    def _preconditioned(self, solve, params, theta, inner, w):
        """``solve`` with a Jacobi preconditioner ``M v = v / diag ∇²`` when the problem gives
        its Hessian diagonal (:meth:`~hyperopt.problems.base.Problem.hessian_diagonal`) and
        the solve takes ``M=`` (:func:`~hyperopt.linear_solve.solve_cg`, the default of the
        gradient solvers); else ``solve`` as it is."""
        if not _accepts(solve, "M"):
            return solve
        diag = self.problem.hessian_diagonal(jax.lax.stop_gradient(params), theta, *inner, w)
        if diag is None:
            return solve
        diag = jax.lax.stop_gradient(diag)
        return functools.partial(solve, M=lambda v: jax.tree.map(jnp.divide, v, diag))

    def implicit_hypergradient(self, theta, params, splits: Splits, tol):
        """Outer loss, hypergradient and linear residual at the inner solutions ``params``."""
        solver, args_of = self._solver(tol), self.inner.args

        def per_fold(params, fold):
            w = splits.inner_w[fold]
            args, args_vjp = jax.vjp(lambda th: args_of(th, *splits.inner, w), theta)
            loss, (g_params, g_direct) = jax.value_and_grad(
                self._outer_objective, argnums=(0, 1))(params, theta, splits, fold)
            solve = self._preconditioned(solver.linear_solve, params, theta, splits.inner, w)
            g_args, residual = root_vjp(solver.optimality_fun, params, args, g_params,
                                        solve=solve, return_residual=True)
            (g_theta,) = args_vjp(g_args)
            return loss, jax.tree.map(jnp.add, g_theta, g_direct), residual

        losses, grads, residuals = over_folds(per_fold, params, jnp.arange(splits.n_folds))
        return losses.mean(), jax.tree.map(lambda g: g.mean(0), grads), residuals.max()

    def unrolled_hypergradient(self, theta, init_params, splits: Splits, tol):
        """Outer loss and hypergradient by autodiff through the unrolled solver."""
        solver, args_of = self._solver(tol), self.inner.args

        def objective(theta):
            def per_fold(init, fold):
                sol = solver.run(init, *args_of(theta, *splits.inner, splits.inner_w[fold]))
                return self._outer_objective(sol.params, theta, splits, fold), sol

            losses, sols = over_folds(per_fold, init_params, jnp.arange(splits.n_folds))
            return losses.mean(), sols

        (loss, sols), grad = jax.value_and_grad(objective, has_aux=True)(theta)
        return loss, grad, sols

    def outer_value(self, theta, init_params, splits: Splits, tol):
        """The outer objective (data loss + penalty) as a differentiable function of θ
        (what ``value_fn`` gives line-search optimizers such as ``optax.lbfgs``)."""
        solver, args_of = self._solver(tol), self.inner.args

        def per_fold(init, fold):
            sol = solver.run(init, *args_of(theta, *splits.inner, splits.inner_w[fold]))
            return self._outer_objective(sol.params, theta, splits, fold)

        losses = over_folds(per_fold, init_params, jnp.arange(splits.n_folds))
        return losses.mean() + self.penalty(theta)

    def _update(self, theta, opt_state, loss, grad, params, states, residual, splits, tol, step_scale):
        pen, pen_grad = jax.value_and_grad(self.penalty)(theta)
        zero = jnp.all(jnp.stack([jnp.all(g == 0) for g in jax.tree.leaves(grad)]))
        grad = jax.tree.map(jnp.add, grad, pen_grad)
        val_metrics = {}
        if splits.val is not None:  # hold-out: metrics of the (only) fold on the validation split
            first = jax.tree.map(lambda p: p[0], params)
            readout = self.problem.readout(first, theta, *splits.inner, splits.inner_w[0])
            val_metrics = self.problem.metrics(readout, theta, *splits.val)
        warm = params if self.implicit else splits.cold_params
        value_fn = lambda th: self.outer_value(th, warm, splits, tol)
        optimizer = optax.with_extra_args_support(self.optimizer)
        updates, new_opt_state = optimizer.update(grad, opt_state, theta, value=loss + pen,
                                                  grad=grad, value_fn=value_fn)
        updates = jax.tree.map(lambda u: step_scale * u, updates)
        size = jnp.max(jnp.stack([jnp.max(jnp.abs(u)) for u in jax.tree.leaves(updates)]))
        info = StepInfo(loss + pen, loss, grad, optax.tree.norm(grad), zero, size,
                        self.problem.hparams(theta), jnp.max(states.iter_num), jnp.max(states.error),
                        jnp.all(states.converged), residual, val_metrics)
        return optax.apply_updates(theta, updates), new_opt_state, params, info

    def outer_step(self, theta, opt_state, init_params, splits: Splits, tol, step_scale=1.0):
        """One full outer step, pure: returns ``(theta, opt_state, inner_params, StepInfo)``.

        ``init_params`` warm-starts the inner solve (implicit mode; unrolled mode starts
        from ``splits.cold_params``).
        """
        if self.implicit:
            params, states = self.inner_solve(theta, init_params, splits, tol)
            loss, grad, residual = self.implicit_hypergradient(theta, params, splits, tol)
        else:
            loss, grad, sols = self.unrolled_hypergradient(theta, splits.cold_params, splits, tol)
            params, states = sols.params, sols.state
            residual = jnp.asarray(jnp.nan, loss.dtype)  # no linear system in unrolled mode
        return self._update(theta, opt_state, loss, grad, params, states, residual, splits, tol,
                            step_scale)

    def refit_model(self, theta, init_params, X, y, X_test, y_test, tol, w=None):
        """The model handed back: the inner problem solved on ``(X, y)`` (weights ``w``, default
        all one; sharded data pad with zeros) at ``theta``, its readout (what predicts), its
        inner solution and its test metrics."""
        w = jnp.ones(y.shape[0], X.dtype) if w is None else w
        params = self._solver(tol, implicit=True).run(init_params, *self.inner.args(theta, X, y, w)).params
        model = self.problem.readout(params, theta, X, y, w)
        metrics = self.problem.metrics(model, theta, X_test, y_test)
        return model, params, {f"test_{k}": v for k, v in metrics.items()}


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    ``model`` is the returned model (the problem's readout: ``w`` for ridge/lasso,
    ``{"W", "b"}`` for logistic, primal ``W`` for the SVM), refit at ``best_hparams`` on
    the split named by ``refit``; ``model_metrics`` its test metrics; ``initial`` the
    validation loss at the initial hyperparameters and the test metrics of the model
    refit there (what tuning is compared with).
    ``compile``: seconds tracing (``trace_s``) and compiling or reading each program
    (``step_s``, ``refit_s``), JAX's cache counts, ``programs_loaded`` (the programs were
    read whole: see ``program_key``) and ``from_cache``.
    """

    state: OuterState
    history: list[dict]
    best_hparams: dict
    final_metrics: dict
    best_metrics: dict
    status: str  # "converged" | "completed" | "early_stopped" | "diverged" | "interrupted"
    compile_time: float
    total_time: float
    compiled_temp_mb: float  # XLA's temporary memory of the compiled step (per run)
    stop_reason: str = ""
    model: Any = None
    model_metrics: dict | None = None
    initial: dict | None = None
    refit: str = "train_val"
    warnings: tuple[str, ...] = ()
    compile: dict | None = None  # per-program compile seconds and the persistent cache's counts
    members: list | None = None  # a population: every member's final OuterState
    population: list | None = None  # a population: per member initial/best hparams, best loss
    best_member: int | None = None  # a population: the member whose run this result is
    devices: int = 1  # devices the data were sharded across (1: not sharded)
    path: list | None = None  # start="path": one dict per path point (hparams, outer/val loss, time)


def hparam_log(hparams: dict, max_size: int = 10) -> dict[str, float]:
    """Scalars to log: each hyperparameter's value, or its norm/mean when it is large."""
    out = {}
    for name, value in hparams.items():
        value = np.asarray(value)
        if value.size == 1:
            out[f"hparam/{name}"] = float(value)
        elif value.size <= max_size:
            out.update({f"hparam/{name}[{i}]": float(v) for i, v in enumerate(value.ravel())})
            out[f"hparam_mean/{name}"] = float(value.mean())
        else:
            out[f"hparam_norm/{name}"] = float(np.linalg.norm(value))
    return out


def model_arrays(model) -> dict[str, np.ndarray]:
    """The returned model as named arrays (for ``np.savez``): a dict's keys, ``coef`` for
    a single array."""
    if isinstance(model, dict):
        return {k: np.asarray(v) for k, v in model.items()}
    return {"coef": np.asarray(model)}


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def init_state(bilevel: Bilevel, data: Dataset, splits: Splits, theta=None,
               opt_init: Callable | None = None) -> OuterState:
    """The outer state before the first step, at ``theta`` (default: the problem's start);
    ``opt_init`` replaces ``bilevel.optimizer.init`` (e.g. by a compiled one)."""
    theta = bilevel.problem.init_hparams(data) if theta is None else theta
    opt_init = bilevel.optimizer.init if opt_init is None else opt_init
    return OuterState(step=0, theta=theta, opt_state=opt_init(theta),
                      inner_params=splits.cold_params, best_theta=theta, best_loss=math.inf,
                      best_step=-1, step_scale=1.0)


def _refit_data(bilevel: Bilevel, data: Dataset, refit: str):
    if refit == "train":
        return data.X_train, data.y_train
    return _train_val(data)


def _warm_refit(init_cold, params):
    """The mean of the folds' inner solutions, when it has the refit's shapes (else cold)."""
    if params is None:
        return init_cold
    mean = jax.tree.map(lambda p: _device(np.mean(np.asarray(p), axis=0)), params)
    same = jax.tree.structure(mean) == jax.tree.structure(init_cold) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(init_cold), strict=True))
    return mean if same else init_cold


@dataclasses.dataclass
class _Loop:
    """What the outer steps of one :func:`fit` share; :meth:`advance` is the host-side
    bookkeeping of one step of one run (or of one member of a population)."""

    bilevel: Bilevel
    splits: Splits
    dtype: Any
    final_tol: jax.Array
    stop: StopRule | None
    eval_every: int
    patience: int | None
    min_delta: float
    max_rejections: int
    divergence_factor: float
    zero_hypergrad_steps: int
    test_metrics: Callable
    warn_once: Callable
    start: float = 0.0
    label: str = ""  # "member i: " in a population's warnings

    def advance(self, state: OuterState, out, tol, step_time: float):
        """The state after the computed step ``out = (theta, opt_state, params, info)`` taken
        from ``state``. Returns ``(state, record, status, stop_reason)``: ``record`` is None
        for a rejected step, ``status`` None while the run goes on."""
        bilevel, stop, dtype = self.bilevel, self.stop, self.dtype
        theta, opt_state, params, info = out
        loss = float(info.outer_loss)
        exploded = loss > self.divergence_factor * max(state.best_loss, 1e-12)
        if not (math.isfinite(loss) and _finite(info.hypergrad) and _finite(theta)) or exploded:
            # Reject: go back to the last good hyperparameters with a halved step. The
            # fallback and the count live in the state, so a resumed run recovers alike.
            warnings.warn(f"{self.label}outer step {state.step}: outer loss {loss:.4g}, hypergradient "
                          f"norm {float(info.hypergrad_norm):.4g}; step rejected, "
                          f"step size x{state.step_scale * 0.5:g}", DivergenceWarning, stacklevel=4)
            fallback = state.last_good if state.last_good is not None else state
            state = fallback._replace(
                step=state.step, step_scale=state.step_scale * 0.5, best_theta=state.best_theta,
                best_loss=state.best_loss, best_step=state.best_step,
                best_metrics=state.best_metrics, best_params=state.best_params,
                best_at_final=state.best_at_final,
                last_good=fallback.last_good, rejections=state.rejections + 1, retry=True,
                initial_val_loss=state.initial_val_loss)
            if state.rejections >= self.max_rejections:
                return state, None, "diverged", f"{self.max_rejections} rejected steps in a row"
            return state, None, None, ""
        metrics = {f"val_{k}": float(v) for k, v in info.val_metrics.items()}
        if self.splits.n_folds > 1:
            metrics["val_loss"] = float(info.data_loss)  # the k-fold (out-of-fold) loss
        if self.eval_every and (state.step + 1) % self.eval_every == 0:
            metrics.update(self.test_metrics(state.theta, params))
        residual = float(info.linear_residual) if bilevel.implicit else None
        record = {
            "step": state.step, "outer_loss": loss,
            **metrics,
            "hypergrad_norm": float(info.hypergrad_norm),
            "update_size": float(info.update_size),
            "step_time": step_time,
            "inner_iterations": int(info.inner_iterations),
            "inner_error": float(info.inner_error),
            "inner_converged": bool(info.inner_converged),
            "inner_tol": float(tol),
            "linear_residual": residual,
            **hparam_log(jax.device_get(info.hparams)),
        }
        record["time"] = time.perf_counter() - self.start
        residual_bar = float(np.sqrt(np.finfo(dtype).eps))
        if bilevel.implicit and bilevel._linear_solve[1] and not residual <= residual_bar:
            self.warn_once(LinearSolveWarning, f"implicit linear solve: relative residual {residual:.3g} "
                           f"> {residual_bar:.3g} at {self.label}outer step {state.step} (recorded per "
                           "step as linear_residual); hypergradients may be inaccurate")
        zero_steps = state.zero_steps + 1 if bool(info.zero_hypergrad) else 0
        if zero_steps >= self.zero_hypergrad_steps:
            hp = ", ".join(f"{k}={v:.4g}" for k, v in hparam_log(jax.device_get(info.hparams)).items())
            self.warn_once(ZeroHypergradientWarning, f"the hypergradient has been exactly zero for "
                           f"{zero_steps} outer steps (at {self.label}{hp}): the outer loss is flat there "
                           "and the hyperparameters cannot move (e.g. a lasso penalty above lambda_max "
                           "gives an all-zero solution); start from other initial hyperparameters")
        # The stopping test, on this step's loss change and the update it proposes.
        rel_change = abs(loss - state.last_loss) / max(abs(state.last_loss), 1e-300)
        passed = stop is not None and (
            (stop.gtol > 0 and float(info.hypergrad_norm) <= stop.gtol)
            or (float(info.update_size) <= stop.xtol and rel_change <= stop.ftol))
        at_final = float(tol) <= float(self.final_tol)
        small_steps = state.small_steps + 1 if passed and at_final else 0
        # At a loose tolerance the loss moves with the tolerance itself, so a still θ is the
        # signal to tighten at once.
        still = stop is not None and float(info.update_size) <= stop.xtol
        # The best step is judged at the final tolerance once there is one: a loss from a
        # loosely solved inner problem is not comparable (it can be lower than the exact one).
        # Losses within their accuracy (relative final inner tolerance) are a tie, won by the
        # later (more converged) step: near the optimum consecutive losses differ by that noise,
        # not by progress (a population's batched program rounds differently from a single
        # run's, and a strict < would then pick another best step).
        noise = float(self.final_tol) * abs(state.best_loss) if math.isfinite(state.best_loss) else 0.0
        better = (loss < state.best_loss - self.min_delta if self.min_delta
                  else loss < state.best_loss + noise)
        improved = ((at_final and not state.best_at_final) or (at_final == state.best_at_final and better))
        state = OuterState(
            step=state.step + 1, theta=theta, opt_state=opt_state, inner_params=params,
            best_theta=state.theta if improved else state.best_theta,
            best_loss=loss if improved else state.best_loss,
            best_step=record["step"] if improved else state.best_step,
            step_scale=state.step_scale,
            best_metrics={"outer_loss": loss, **metrics} if improved else state.best_metrics,
            last_good=state._replace(last_good=None),
            # a retry at the last good θ proves nothing about the (halved) step size
            rejections=state.rejections if state.retry else 0,
            best_params=params if improved else state.best_params,
            last_loss=loss, small_steps=small_steps, tight=state.tight or (still and not at_final),
            best_at_final=state.best_at_final or (improved and at_final),
            zero_steps=zero_steps,
            initial_val_loss=(metrics.get("val_loss", math.nan) if record["step"] == 0
                              else state.initial_val_loss))
        if stop is not None and small_steps >= stop.window:
            reason = (f"hypergradient norm <= gtol={stop.gtol:g}"
                      if stop.gtol > 0 and float(info.hypergrad_norm) <= stop.gtol else
                      f"updates of theta <= xtol={stop.xtol:g} and relative change of the "
                      f"outer loss <= ftol={stop.ftol:g} for {stop.window} steps at the final "
                      f"inner tol {float(self.final_tol):.3g}")
            return state, record, "converged", reason
        if self.patience is not None and state.step - 1 - state.best_step >= self.patience:
            return state, record, "early_stopped", f"no improvement by min_delta for {self.patience} steps"
        return state, record, None, ""

    def finished(self, state: OuterState) -> tuple[str, str] | None:
        """The status of a (resumed) population member that had already stopped, else None."""
        if self.stop is not None and state.small_steps >= self.stop.window:
            return "converged", "converged before the checkpoint"
        if state.rejections >= self.max_rejections:
            return "diverged", f"{self.max_rejections} rejected steps in a row"
        if self.patience is not None and state.step > 0 and state.step - 1 - state.best_step >= self.patience:
            return "early_stopped", f"no improvement by min_delta for {self.patience} steps"
        return None


@_blas_limited
def fit(bilevel: Bilevel, data: Dataset, steps: int, *, state: OuterState | None = None,
        stop: StopRule | None = DEFAULT_STOP, refit: str = "train_val", eval_every: int = 0,
        patience: int | None = None, min_delta: float = 0.0, max_rejections: int = 5,
        divergence_factor: float = 10.0, zero_hypergrad_steps: int = 3,
        seed: int = 0, population: int = 1, population_range=(0.01, 100.0), shard_data: bool = False,
        callback: Callable[[OuterState, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, program_key: str | None = None,
        start: str = "auto", blas_threads: int | None = 1) -> FitResult:
    """Runs the outer loop for at most ``steps`` steps, then refits the returned model.

    Args:
      bilevel: the problem, solver and optimizer.
      data: a :class:`~hyperopt.data.Dataset`.
      steps: maximum number of outer steps (status ``"completed"`` when all ran).
      state: an :class:`OuterState` to resume from (e.g. loaded from a checkpoint); for a
        population, the list of its members' states.
      stop: the outer stopping rule (status ``"converged"``); ``None`` runs all steps.
      refit: ``"train_val"``: the returned model is refit at the best hyperparameters on
        train ∪ val; ``"train"``: on the training split alone (hold-out only; the model
        the search validated).
      eval_every: also record the returned model's test metrics every this many steps
        (refit at the step's hyperparameters); 0: only at the end.
      patience: stop when the outer loss has not improved by ``min_delta`` for this many
        steps (status ``"early_stopped"``); ``None`` disables it.
      min_delta: the least decrease of the outer loss that counts as an improvement (a new
        best step); with 0, a later step within ``final inner tol × |best loss|`` (the loss's
        accuracy) of the best is the new best.
      max_rejections: a step with a non-finite loss or hypergradient, or an outer loss
        above ``divergence_factor`` times the best so far, is rejected (a
        :class:`DivergenceWarning`; the last good hyperparameters are restored and the step
        size halved); after this many rejections in a row the run stops with status
        ``"diverged"``.
      zero_hypergrad_steps: warn (:class:`ZeroHypergradientWarning`, once) after this
        many steps in a row with an exactly zero hypergradient.
      population: optimize this many starting points at once (:mod:`hyperopt.population`):
        one compiled step ``vmap``-ed over the members' outer states; each member stops by
        the rules above on its own (and is frozen from then on), the run ends when all have;
        the best member (lowest best outer loss) is the result and is refit.
      population_range: ``(low, high)``: the members' penalties start at the problem's start
        times factors log-evenly spaced over ``[low, high]`` (problems with a random start,
        e.g. distillation, use seeds ``seed, seed + 1, ...`` instead).
      shard_data: place the sample axis of the inner and outer data across all visible
        devices (:mod:`hyperopt.sharding`); the same compiled step, the same results.
      callback: called after every step with ``(state, record)`` (logging, checkpoints);
        for a population with ``(member_states, record)`` where ``record`` is the row of
        the step's best member plus every member's losses (:func:`population_record`).
      should_stop: polled after every step (e.g. set by a SIGINT handler).
      program_key: with the persistent cache on (:func:`hyperopt.compile_cache.enable`),
        store the compiled step and refit programs whole and read them back in a later
        run whose key, problem, solver, hyperopt and JAX versions and arguments (data
        included) are the same: no tracing, no compiling. The key must describe what the
        programs close over beyond the :class:`Bilevel`'s problem and solver — above all the
        outer optimizer's settings (``hyperopt-run`` passes its composed config). ``None``:
        only XLA's cache (the programs are traced every run).
      start: where the outer loop starts. ``"path"``: at the best point of a coarse
        regularization path (:meth:`~hyperopt.problems.base.Problem.path_grid`; the lasso:
        10 λ per decade from λ_max down), evaluated with the compiled step at the final
        inner tolerance, warm-started along the path: from the grid point nearest the
        problem's start, every other point in the direction its hypergradient gives until
        the outer loss rises or the hypergradient says it will, then the two points beside
        the best; the default outer optimizer
        (:func:`~hyperopt.outer.lbfgs_backtracking`) keeps what it learnt there (the path's
        points are its trials), any other optimizer starts afresh at the best point. The
        path finds the basin a local hypergradient method would miss when the validation
        curve has several dips, and skips the slow, nearly interpolating solves of small
        penalties. ``"init"``: at the problem's start (:meth:`init_hparams`). ``"auto"``:
        the path for problems that have one (and a single run, not resumed), else the
        problem's start. The path's points are in ``FitResult.path``; ``initial`` is then
        the path's best point.
      blas_threads: threads of the BLAS/LAPACK library while the run lasts
        (:func:`blas_threads_limit`): 1 by default — the programs' small factorizations are
        up to 1000× slower threaded on a busy machine; ``None`` leaves them as they are.

    Returns:
      A :class:`FitResult`: the history (one dict per step), the best hyperparameters
      (lowest outer loss), the returned model and its test metrics; for a population also
      ``members`` (every member's final state) and ``population`` (one dict per member).
    """
    from hyperopt import population as pop

    if refit not in REFITS:
        raise ValueError(f"refit={refit!r}; allowed: {', '.join(REFITS)}")
    if start not in STARTS:
        raise ValueError(f"start={start!r}; allowed: {', '.join(STARTS)}")
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ValueError(f"population={population!r}; allowed: a positive integer")
    splits = make_splits(bilevel.problem, data, bilevel.cv_folds, seed)
    if refit == "train" and splits.n_folds > 1:
        raise ValueError("refit='train' needs a hold-out outer loss (cv_folds=0); with k folds "
                         "the returned model is refit on train ∪ val (refit='train_val')")
    size = population
    # the stored programs (compile_cache.compile_program) are keyed by this and their arguments
    key = None
    if program_key is not None and not shard_data:
        key = f"{program_key}\n{_describe(bilevel)}\nsize={size}"

    compiled = {}

    def program(name, fn, *args):
        """``fn`` compiled once per run (and stored), rather than run eagerly op by op."""
        if name not in compiled:  # without a key a jit function (any placement of the arguments)
            compiled[name] = (jax.jit(fn) if key is None else
                              compile_cache.compile_program(name, jax.jit(fn), args, key)[0])
        return compiled[name](*args)

    opt_init = functools.partial(program, "init", bilevel.optimizer.init)
    hparams_of = functools.partial(program, "hparams", bilevel.problem.hparams)

    if state is None:
        inits = pop.member_inits(bilevel.problem, data, size, population_range) if size > 1 else None
        members = ([init_state(bilevel, data, splits, opt_init=opt_init)] if inits is None else
                   [init_state(bilevel, data, splits, theta, opt_init) for theta in inits])
    else:
        members = [state] if isinstance(state, OuterState) else list(state)
        if len(members) != size:
            raise ValueError(f"population={size} but the state to resume from has {len(members)} "
                             "member(s); allowed: the population of the checkpointed run")
    dtype = data.X_train.dtype
    X_refit, y_refit = _refit_data(bilevel, data, refit)
    refit_w = None
    devices = 1
    if shard_data:
        from hyperopt import sharding

        mesh = sharding.data_mesh()
        devices = mesh.size
        splits = sharding.shard_splits(
            splits, mesh, lambda n, folds: _per_fold(bilevel.problem, data, n, folds))
        X_refit, y_refit, refit_w = sharding.shard_refit(X_refit, y_refit, mesh)
        if members[0].step == 0 and state is None:  # fresh starts: inner starts for the padded splits
            members = [m._replace(inner_params=splits.cold_params) for m in members]
    refit_cold = bilevel.problem.init_params(data, n_samples=y_refit.shape[0])
    final_tol = _device(bilevel.final_tol(dtype), dtype)

    # Two compiled programs per run, both before the loop: the outer step (vmapped over the
    # members of a population), and the refit with its test metrics (run at the end).
    # Tolerance and step scale are traced.
    tols = [bilevel.tol_at(m.step, dtype, m.tight) for m in members]
    scales = [_device(m.step_scale, dtype) for m in members]
    if size == 1:
        step_fn = jax.jit(bilevel.outer_step)
        step_args = lambda ms, tols, scales: (ms[0].theta, ms[0].opt_state, ms[0].inner_params, splits,
                                              tols[0], scales[0])
    else:
        step_fn = jax.jit(jax.vmap(bilevel.outer_step, in_axes=(0, 0, 0, None, 0, 0)))
        step_args = lambda ms, tols, scales: (
            *pop.stack([(m.theta, m.opt_state, m.inner_params) for m in ms]), splits,
            _device(np.stack(tols)), _device(np.stack(scales)))
    with compile_cache.CompileWatch() as watch:
        t0 = time.perf_counter()
        step_c, step_info = compile_cache.compile_program(
            "step", step_fn, step_args(members, tols, scales), key)
        refit_c, refit_info = compile_cache.compile_program(
            "refit", jax.jit(bilevel.refit_model),
            (members[0].theta, refit_cold, X_refit, y_refit, data.X_test, data.y_test, final_tol, refit_w),
            key)
        compile_time = time.perf_counter() - t0
    # trace_s: tracing and lowering to StableHLO (none when the programs were read whole);
    # step_s/refit_s: XLA's compilation of each program, or reading it from the cache
    loaded = step_info["loaded"] and refit_info["loaded"]
    compile_info = {"trace_s": step_info["trace_s"] + refit_info["trace_s"],
                    "step_s": step_info["compile_s"], "refit_s": refit_info["compile_s"],
                    "cache_dir": str(compile_cache.enabled_dir() or "") or None,
                    "cache": watch.as_dict(), "programs_loaded": loaded,
                    "from_cache": loaded or watch.from_cache}
    compiled_temp_mb = step_info.get("temp_mb", None)
    if compiled_temp_mb is None:
        compiled_temp_mb = _temp_mb(step_c)
    messages: list[str] = []

    def warn_once(category, message):
        if not any(m.startswith(category.__name__) for m in messages):
            messages.append(f"{category.__name__}: {message}")
            warnings.warn(message, category, stacklevel=4)

    def refit_at(theta, params, tol=final_tol):
        return refit_c(theta, _warm_refit(refit_cold, params), X_refit, y_refit,
                       data.X_test, data.y_test, tol, refit_w)

    def test_metrics(theta, params, tol=final_tol):
        return {k: float(v) for k, v in refit_at(theta, params, tol)[2].items()}

    if stop is not None and stop.xtol is None:
        stop = stop._replace(xtol=bilevel.problem.stop_xtol)
    loop = _Loop(bilevel, splits, dtype, final_tol, stop, eval_every, patience, min_delta,
                 max_rejections, divergence_factor, zero_hypergrad_steps, test_metrics, warn_once)
    histories = [[] for _ in members]
    first_params = [None] * size  # inner solutions at each member's initial θ: warm start of its refit
    path = path_start = None
    loop.start = start_time = time.perf_counter()
    if start != "init" and size == 1 and state is None:
        grid = bilevel.problem.path_grid(data)
        if grid is None and start == "path":
            raise ValueError(f"start='path': problem {bilevel.problem.name!r} has no regularization "
                             "path here (or its start is given explicitly); allowed: auto, init")
        if grid:
            # at the final inner tolerance: a loose solve cannot tell the validation losses
            # of nearby penalties apart (a warm start counts as converged)
            members[0], path, path_start = _run_path(bilevel, grid, members[0], step_c, splits,
                                                      final_tol, dtype)
            if path_start is not None:
                first_params[0] = path_start[1]
    statuses: list[tuple[str, str] | None] = [None] * size
    if size > 1:
        statuses = [loop.finished(m) for m in members]
    row = max(m.step for m in members)  # the step of a population's metrics row
    while True:
        active = [i for i, m in enumerate(members) if statuses[i] is None and m.step < steps]
        if not active:
            break
        tols = [bilevel.tol_at(m.step, dtype, m.tight) for m in members]
        scales = [_device(m.step_scale, dtype) for m in members]
        t = time.perf_counter()
        out = jax.block_until_ready(step_c(*step_args(members, tols, scales)))
        outs = [out] if size == 1 else pop.unstack(out, size)
        step_time = time.perf_counter() - t
        records = {}
        for i in active:  # frozen members keep their state
            loop.label = f"member {i}: " if size > 1 else ""
            members[i], record, status, reason = loop.advance(members[i], outs[i], tols[i], step_time)
            if record is not None:
                histories[i].append(record)
                records[i] = record
                if record["step"] == 0:
                    first_params[i] = members[i].inner_params
            if status is not None:
                statuses[i] = (status, reason)
        if records and callback is not None:
            if size == 1:
                callback(members[0], records[0])
            else:
                callback(members, population_record(row, records, members, statuses))
        row += 1
        if records and should_stop is not None and should_stop():
            statuses = [s or ("interrupted", "interrupted") for s in statuses]
            break

    best = pop.best_member(members, float(final_tol)) if size > 1 else 0
    state, history = members[best], histories[best]
    if statuses[best] is not None:
        status, stop_reason = statuses[best]
    else:
        status, stop_reason = "completed", f"ran all {steps} steps"
    if size > 1 and status != "interrupted":
        # the population's status: its members' when they agree, else "completed" (the run
        # went on until every member had stopped or used all steps)
        done = [s[0] if s else "completed" for s in statuses]
        status = done[0] if len(set(done)) == 1 else "completed"
        stop_reason = (f"member {best} of {size} is the best ({(statuses[best] or ('', stop_reason))[1]}); "
                       "members: " + ", ".join(f"{done.count(k)} {k}" for k in dict.fromkeys(done)))

    model = model_metrics = initial = None
    theta0 = (path_start[0] if path_start is not None else
              _initial_theta(bilevel, data, size, population_range, best))
    if state.best_step >= 0:
        model, _, metrics = refit_at(state.best_theta, state.best_params)
        model, model_metrics = jax.device_get(model), {k: float(v) for k, v in metrics.items()}
        initial = {"hparams": _hparams_list(hparams_of, theta0),
                   "val_loss": state.initial_val_loss if path_start is None else path_start[2],
                   **test_metrics(theta0, first_params[best])}
        if path_start is not None:
            initial["start"] = "path"
    best_metrics = dict(state.best_metrics or {})
    best_metrics.update(model_metrics or {})
    final_metrics = history[-1] if history else {}
    population_info = None
    if size > 1:
        population_info = [
            {"member": i, "initial_hparams": _hparams_list(hparams_of, _initial_theta(
                bilevel, data, size, population_range, i)),
             "best_hparams": _hparams_list(hparams_of, m.best_theta), "best_loss": m.best_loss,
             "best_step": m.best_step, "steps": m.step,
             "status": (statuses[i] or ("completed", ""))[0]}
            for i, m in enumerate(members)]
    return FitResult(state, history, _hparams_list(hparams_of, state.best_theta), final_metrics, best_metrics,
                     status, compile_time, time.perf_counter() - start_time + compile_time, compiled_temp_mb,
                     stop_reason=stop_reason, model=model, model_metrics=model_metrics,
                     initial=initial, refit=refit, warnings=tuple(messages), compile=compile_info,
                     members=members if size > 1 else None, population=population_info,
                     best_member=best if size > 1 else None, devices=devices, path=path)


def _run_path(bilevel: Bilevel, grid: list, state: OuterState, step_c, splits: Splits, tol, dtype):
    """``fit``'s ``start="path"``: the compiled step at the grid point nearest the problem's
    start, then at every other point in the direction the hypergradient gives (inner solves
    warm-started along the way) until the outer loss rises or the hypergradient points back,
    then at the two points beside the best. Returns the state the outer loop starts from, the
    path's rows, and ``(θ, inner params, validation loss)`` of its best point."""
    from hyperopt.outer import LBFGSBacktrackingState

    # lbfgs_backtracking takes the best point and its neighbours as its trials (they teach it
    # the curvature there); other optimizers start afresh at the best point
    carry = isinstance(state.opt_state, LBFGSBacktrackingState)
    one = _device(1.0, dtype)
    fresh = state.opt_state
    opt_state, rows, best, proposal = fresh, [], None, None
    t0 = time.perf_counter()
    flat = lambda theta: np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(theta)])

    def evaluate(k, params, opt_state_in):
        nonlocal opt_state, best, proposal
        out = jax.block_until_ready(step_c(grid[k], opt_state_in, params, splits, tol, one))
        proposal, opt_state, params, info = out
        loss = float(info.outer_loss)
        if not (math.isfinite(loss) and _finite(info.hypergrad)):
            return None, params, None
        val = float(info.data_loss if splits.n_folds > 1 else info.val_metrics.get("loss", info.data_loss))
        rows.append({"outer_loss": loss, "val_loss": val, "hypergrad_norm": float(info.hypergrad_norm),
                     "inner_iterations": int(info.inner_iterations), "time": time.perf_counter() - t0,
                     **hparam_log(jax.device_get(info.hparams))})
        if best is None or loss < best[1]:
            best = (k, loss, params, val, opt_state, proposal)
        return loss, params, info.hypergrad

    # where the problem would start, and which way along the path the loss decreases there
    start = flat(state.theta)
    k = int(np.argmin([np.sum((flat(t) - start) ** 2) for t in grid]))
    # every point of the walk from the optimizer's fresh state: the best point's output state
    # is then the optimizer's state after its first trial (no second evaluation there)
    loss, params, grad = evaluate(k, state.inner_params, fresh)
    if loss is None:  # not finite: start where the problem starts
        return state, rows, None

    def slope(k, grad):  # d loss / d(grid index) at point k, from its hypergradient
        j = k + 1 if k + 1 < len(grid) else k - 1
        return float(np.dot(flat(grad), flat(grid[j]) - flat(grid[k]))) * (1 if j > k else -1)

    step = -2 if slope(k, grad) > 0 else 2
    rate = slope(k, grad) * step / 2  # d loss / d(grid index along the walk): < 0 going downhill
    for i in range(k + step, len(grid) if step > 0 else -1, step):  # every other point
        loss, params, grad = evaluate(i, params, fresh)
        # stop when the loss rose (the best is behind), or when the hypergradient says it
        # rises from here on (the next point, further along, is often the costliest solve),
        # or when the slope, shrinking from the last point's, reaches zero (linearly) before
        # the point beside this one, which is evaluated next anyway
        if loss is None or best[0] != i:
            break
        last, rate = rate, slope(i, grad) * step / 2
        if rate >= 0 or (last < rate and -rate * 2 <= rate - last):
            break
    # the optimizer's trials: the best point (its start, evaluated from the fresh state),
    # then its two neighbours
    k, params, opt_state, proposal = best[0], best[2], best[4], best[5]
    for j in (k - 1, k + 1):  # never evaluated yet: the walk moved two points at a time
        if 0 <= j < len(grid):
            evaluate(j, params, opt_state if carry else fresh)
    k, _, params, val = best[:4]
    if carry:
        # at the optimizer's proposal: a quasi-Newton step from the best point with the
        # curvature its neighbours gave (bounded by the distance to them)
        new = state._replace(theta=proposal, opt_state=opt_state, inner_params=params, best_theta=proposal)
    else:  # afresh at the best point
        theta = grid[k]
        new = state._replace(theta=theta, opt_state=bilevel.optimizer.init(theta), inner_params=params,
                             best_theta=theta)
    # the path did the coarse search the loose early tolerances are for: every later step
    # solves to the final tolerance (warm-started near its solution, those solves are short)
    new = new._replace(tight=True)
    return new, rows, (grid[k], params, val)


def _hparams_list(hparams_of: Callable, theta) -> dict:
    return {k: np.asarray(v).tolist() for k, v in hparams_of(theta).items()}


def _initial_theta(bilevel: Bilevel, data: Dataset, size: int, population_range, member: int):
    """Where member ``member`` of a population of ``size`` started (the problem's start for one)."""
    if size == 1:
        return bilevel.problem.init_hparams(data)
    from hyperopt.population import member_inits

    return member_inits(bilevel.problem, data, size, population_range)[member]


def population_record(step: int, records: dict[int, dict], members, statuses) -> dict:
    """A population's metrics row: the row of this step's best member (lowest outer loss; its
    index in ``member``), and per member (lists, ``None`` for a member that did not step):
    ``member_outer_loss``, ``member_val_loss``, ``member_best_loss``, every scalar
    ``hparam/...`` as ``member_hparam/...``, and ``member_active``."""
    best = min(records, key=lambda i: (records[i]["outer_loss"], i))
    row = {**records[best], "step": step, "member_step": records[best]["step"], "member": best}
    size = len(members)
    per = lambda key: [records[i].get(key) if i in records else None for i in range(size)]
    row["member_outer_loss"] = per("outer_loss")
    row["member_val_loss"] = per("val_loss")
    row["member_best_loss"] = [float(m.best_loss) for m in members]
    for key in [k for k in records[best] if k.startswith("hparam/")]:
        row[f"member_{key}"] = per(key)
    row["member_active"] = [s is None for s in statuses]
    return row


def _describe(obj) -> str:
    """A description of ``obj`` that is the same in every process (no memory addresses):
    dataclass fields, partials, functions by module and name, arrays by value."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = ", ".join(f"{f.name}={_describe(getattr(obj, f.name))}"
                           for f in dataclasses.fields(obj) if f.name != "optimizer")
        return f"{type(obj).__module__}.{type(obj).__qualname__}({fields})"
    if isinstance(obj, functools.partial):
        return (f"partial({_describe(obj.func)}, {', '.join(map(_describe, obj.args))}, "
                f"{', '.join(f'{k}={_describe(v)}' for k, v in sorted(obj.keywords.items()))})")
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__}({', '.join(map(_describe, obj))})"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{_describe(k)}: {_describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (np.ndarray, jax.Array)):
        a = np.asarray(obj)
        return f"array({a.dtype}, {a.shape}, {hashlib.blake2b(a.tobytes(), digest_size=8).hexdigest()})"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return re.sub(r" at 0x[0-9a-f]+", "", repr(obj))


def _temp_mb(executable) -> float:
    return compile_cache.temp_mb(executable)
