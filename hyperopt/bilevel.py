"""The outer loop: hypergradient steps on hyperparameters with an optax optimizer.

One outer step solves the inner problem (warm-started from the previous solution),
evaluates the outer loss, computes its hypergradient, and applies an optax update to the
unconstrained hyperparameters ``theta``:

* implicit mode: the inner solve runs to tolerance without being differentiated; the
  hypergradient is :func:`hyperopt.root_vjp` on the solver's optimality condition, which
  also returns the linear system's residual for the logs;
* unrolled mode: ``jax.grad`` through the solver's unrolled iterations. It always starts
  cold: a warm start that has already converged would freeze the iterate and give a zero
  derivative.

Hold-out and k-fold outer losses share one code path: the inner and outer splits carry
per-sample weights with a leading fold axis (one fold for hold-out), and everything is
``vmap``-ed over folds.

Example:
    >>> bl = Bilevel(problem=Logistic(), make_solver=LBFGS, optimizer=optax.adam(0.1))
    >>> result = fit(bl, load_dataset("breast_cancer"), steps=50)
    >>> result.best_hparams["l2reg"]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperopt.data import Dataset
from hyperopt.implicit_diff import root_vjp
from hyperopt.problems.base import InnerSolver, Problem, SolverFactory
from hyperopt.solvers.base import default_tol

__all__ = [
    "Bilevel", "DivergenceWarning", "FitResult", "OuterState", "Splits", "StepInfo", "fit", "make_splits",
]


class DivergenceWarning(RuntimeWarning):
    """An outer step was rejected: non-finite or sharply increasing outer loss."""


class Splits(NamedTuple):
    """Inner (training) and outer (validation) data with fold weights.

    ``inner``/``outer`` are ``(X, y)``; ``inner_w``/``outer_w`` have shape (folds, n).
    """

    inner: tuple
    outer: tuple
    inner_w: jax.Array
    outer_w: jax.Array
    cold_params: Any  # the problem's initial inner parameters, one per fold

    @property
    def n_folds(self) -> int:
        return self.inner_w.shape[0]


def make_splits(problem: Problem, data: Dataset, cv_folds: int = 0, seed: int = 0) -> Splits:
    """Hold-out splits (``cv_folds=0``) or k folds over train ∪ validation."""
    dtype = data.X_train.dtype
    if cv_folds:
        if not problem.supports_cv:
            raise ValueError(f"cv_folds={cv_folds}: problem {problem.name!r} has no "
                             "cross-validated outer loss; allowed: 0")
        if cv_folds < 2:
            raise ValueError(f"cv_folds={cv_folds}; allowed: 0 (hold-out) or an integer >= 2")
        X = jnp.concatenate([data.X_train, data.X_val])
        y = jnp.concatenate([data.y_train, data.y_val])
        fold = np.random.default_rng(seed).permutation(len(y)) % cv_folds
        masks = jnp.asarray(fold[None, :] == np.arange(cv_folds)[:, None], dtype)
        return Splits((X, y), (X, y), 1 - masks, masks, _per_fold(problem, data, len(y), cv_folds))
    if problem.outer_split == "train":
        outer = (data.X_train, data.y_train)
    else:
        outer = (data.X_val, data.y_val)
    return Splits((data.X_train, data.y_train), outer,
                  jnp.ones((1, data.n_train), dtype), jnp.ones((1, outer[1].shape[0]), dtype),
                  _per_fold(problem, data, data.n_train, 1))


def _per_fold(problem: Problem, data: Dataset, n_samples: int, folds: int):
    params = problem.init_params(data, n_samples=n_samples)
    return jax.tree.map(lambda p: jnp.broadcast_to(p, (folds, *p.shape)), params)


class StepInfo(NamedTuple):
    """What one outer step measures (before the update is applied)."""

    outer_loss: jax.Array  # data term + hyperparameter penalty
    data_loss: jax.Array  # the (hold-out or k-fold) validation loss alone
    hypergrad: Any
    hypergrad_norm: jax.Array
    hparams: dict  # the constrained hyperparameters at which the step was taken
    inner_iterations: jax.Array
    inner_error: jax.Array
    inner_converged: jax.Array
    linear_residual: jax.Array


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


@dataclasses.dataclass(frozen=True)
class Bilevel:
    """A bilevel problem wired to an inner solver and an outer optimizer.

    Attributes:
      problem: the :class:`~hyperopt.problems.Problem`.
      make_solver: solver class or ``functools.partial`` of one (maxiter, tol,
        implicit_diff, implicit_diff_solve, ...).
      optimizer: any optax optimizer (applied to the unconstrained ``theta``).
      hparam_penalty: ``γ``: adds ``γ · Σ (θ - mean θ)²`` over each vector hyperparameter,
        which shrinks many per-feature penalties toward a common value.
      cv_folds: 0 for a hold-out outer loss, ``k >= 2`` for k-fold cross-validation.
      inner_tol: ``None`` (the solver's own tol) or ``(initial, final, decay)``: the inner
        tolerance starts loose and tightens geometrically to ``final`` (HOAG-style
        inexact hypergradients; implicit mode only, unrolled mode uses ``final``).
    """

    problem: Problem
    make_solver: SolverFactory
    optimizer: optax.GradientTransformation
    hparam_penalty: float = 0.0
    cv_folds: int = 0
    inner_tol: tuple[float, float, float] | None = None

    @functools.cached_property
    def inner(self) -> InnerSolver:
        return self.problem.inner_solver(self.make_solver)

    @property
    def implicit(self) -> bool:
        return bool(self.inner.solver.implicit_diff)

    def tol_at(self, step: int, dtype) -> jax.Array:
        if self.inner_tol is None:
            tol = self.inner.solver.tol
            return jnp.asarray(default_tol(jnp.zeros((), dtype)) if tol is None else tol, dtype)
        initial, final, decay = self.inner_tol
        if not self.implicit:
            # An unrolled derivative through a loosely converged (frozen) iterate is not a
            # slightly inexact hypergradient but the derivative of a truncated iteration,
            # often of the wrong sign (measured on the SVM dual): unrolled mode always
            # solves to the final tolerance.
            return jnp.asarray(final, dtype)
        return jnp.asarray(max(final, initial * decay ** step), dtype)

    def penalty(self, theta):
        if not self.hparam_penalty:
            return 0.0
        leaves = [leaf for leaf in jax.tree.leaves(theta) if leaf.ndim > 0]
        return self.hparam_penalty * sum(jnp.sum((leaf - jnp.mean(leaf)) ** 2) for leaf in leaves)

    # -- the pieces of one outer step (pure functions of arrays) ---------------------------
    def _solver(self, tol):
        return dataclasses.replace(self.inner.solver, tol=tol)

    def _outer_objective(self, params, theta, splits: Splits, fold: int | jax.Array):
        readout = self.problem.readout(params, theta, *splits.inner, splits.inner_w[fold])
        return self.problem.outer_loss(readout, theta, *splits.outer, splits.outer_w[fold])

    def inner_solve(self, theta, init_params, splits: Splits, tol):
        """Solves every fold's inner problem (no derivative). Returns (params, states)."""
        solver, args_of = self._solver(tol), self.inner.args
        run = lambda init, w: solver.run(init, *args_of(theta, *splits.inner, w))
        return jax.vmap(run)(init_params, splits.inner_w)

    def implicit_hypergradient(self, theta, params, splits: Splits, tol):
        """Outer loss, hypergradient and linear residual at the inner solutions ``params``."""
        solver, args_of = self._solver(tol), self.inner.args

        def per_fold(params, fold):
            w = splits.inner_w[fold]
            args, args_vjp = jax.vjp(lambda th: args_of(th, *splits.inner, w), theta)
            loss, (g_params, g_direct) = jax.value_and_grad(
                self._outer_objective, argnums=(0, 1))(params, theta, splits, fold)
            g_args, residual = root_vjp(solver.optimality_fun, params, args, g_params,
                                        solve=solver.linear_solve, return_residual=True)
            (g_theta,) = args_vjp(g_args)
            return loss, jax.tree.map(jnp.add, g_theta, g_direct), residual

        losses, grads, residuals = jax.vmap(per_fold)(params, jnp.arange(splits.n_folds))
        return losses.mean(), jax.tree.map(lambda g: g.mean(0), grads), residuals.max()

    def unrolled_hypergradient(self, theta, init_params, splits: Splits, tol):
        """Outer loss and hypergradient by autodiff through the unrolled solver."""
        solver, args_of = self._solver(tol), self.inner.args

        def objective(theta):
            def per_fold(init, fold):
                sol = solver.run(init, *args_of(theta, *splits.inner, splits.inner_w[fold]))
                return self._outer_objective(sol.params, theta, splits, fold), sol

            losses, sols = jax.vmap(per_fold)(init_params, jnp.arange(splits.n_folds))
            return losses.mean(), sols

        (loss, sols), grad = jax.value_and_grad(objective, has_aux=True)(theta)
        return loss, grad, sols

    def _update(self, theta, opt_state, loss, grad, params, states, residual, step_scale):
        pen, pen_grad = jax.value_and_grad(self.penalty)(theta)
        grad = jax.tree.map(jnp.add, grad, pen_grad)
        info = StepInfo(loss + pen, loss, grad, optax.tree.norm(grad), self.problem.hparams(theta),
                        jnp.max(states.iter_num), jnp.max(states.error),
                        jnp.all(states.converged), residual)
        updates, new_opt_state = self.optimizer.update(grad, opt_state, theta)
        updates = jax.tree.map(lambda u: step_scale * u, updates)
        return optax.apply_updates(theta, updates), new_opt_state, params, info

    def implicit_update(self, theta, opt_state, params, states, splits: Splits, tol, step_scale=1.0):
        """Implicit mode after the inner solve: hypergradient at ``params`` and optax update."""
        loss, grad, residual = self.implicit_hypergradient(theta, params, splits, tol)
        return self._update(theta, opt_state, loss, grad, params, states, residual, step_scale)

    def unrolled_step(self, theta, opt_state, splits: Splits, tol, step_scale=1.0):
        """Unrolled mode: solve from the cold start, differentiate, update."""
        loss, grad, sols = self.unrolled_hypergradient(theta, splits.cold_params, splits, tol)
        nan = jnp.asarray(jnp.nan, loss.dtype)  # no linear system in unrolled mode
        return self._update(theta, opt_state, loss, grad, sols.params, sols.state, nan, step_scale)

    def outer_step(self, theta, opt_state, init_params, splits: Splits, tol, step_scale=1.0):
        """One full outer step, pure: returns ``(theta, opt_state, inner_params, StepInfo)``.

        ``init_params`` warm-starts the inner solve (implicit mode; unrolled mode starts
        from ``splits.cold_params``).
        """
        if self.implicit:
            params, states = self.inner_solve(theta, init_params, splits, tol)
            return self.implicit_update(theta, opt_state, params, states, splits, tol, step_scale)
        return self.unrolled_step(theta, opt_state, splits, tol, step_scale)

    def evaluate(self, theta, inner_params, data: Dataset, splits: Splits, tol):
        """Validation/test metrics of the inner solution.

        With k-fold CV the model is refit on all of train ∪ val for the test metrics; its
        validation metrics would be in-sample, so none are reported (``fit`` records the
        k-fold loss as ``val_loss``).
        """
        evaluated = {"test": (data.X_test, data.y_test)}
        if splits.n_folds == 1:
            params, w = jax.tree.map(lambda p: p[0], inner_params), splits.inner_w[0]
            evaluated["val"] = (data.X_val, data.y_val)
        else:
            solver = self._solver(tol)
            w = jnp.ones_like(splits.inner_w[0])
            init = jax.tree.map(lambda p: p[0], inner_params)
            params = solver.run(init, *self.inner.args(theta, *splits.inner, w)).params
        readout = self.problem.readout(params, theta, *splits.inner, w)
        return {f"{split}_{key}": value for split, (X, y) in evaluated.items()
                for key, value in self.problem.metrics(readout, theta, X, y).items()}


class FitResult(NamedTuple):
    """What :func:`fit` returns."""

    state: OuterState
    history: list[dict]
    best_hparams: dict
    final_metrics: dict
    best_metrics: dict
    status: str  # "completed" | "early_stopped" | "diverged" | "interrupted"
    compile_time: float
    total_time: float
    compiled_temp_mb: float  # XLA's temporary memory of the compiled step (per run)


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


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def init_state(bilevel: Bilevel, data: Dataset, splits: Splits) -> OuterState:
    theta = bilevel.problem.init_hparams(data)
    return OuterState(step=0, theta=theta, opt_state=bilevel.optimizer.init(theta),
                      inner_params=splits.cold_params, best_theta=theta, best_loss=math.inf,
                      best_step=-1, step_scale=1.0)


def fit(bilevel: Bilevel, data: Dataset, steps: int, *, state: OuterState | None = None,
        patience: int | None = None, min_delta: float = 0.0, max_rejections: int = 5,
        divergence_factor: float = 10.0,
        seed: int = 0, callback: Callable[[OuterState, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None) -> FitResult:
    """Runs the outer loop for ``steps`` steps (or until it stops improving).

    Args:
      bilevel: the problem, solver and optimizer.
      data: a :class:`~hyperopt.data.Dataset`.
      steps: maximum number of outer steps.
      state: an :class:`OuterState` to resume from (e.g. loaded from a checkpoint).
      patience: stop when the outer loss has not improved by ``min_delta`` for this many
        steps (early stopping); ``None`` runs all steps.
      max_rejections: a step with a non-finite loss or hypergradient, or an outer loss
        above ``divergence_factor`` times the best so far, is rejected (a
        :class:`DivergenceWarning`; the last good hyperparameters are restored and the step
        size halved); after this many rejections in a row the run stops with status
        ``"diverged"``.
      callback: called after every step with ``(state, record)`` (logging, checkpoints).
      should_stop: polled after every step (e.g. set by a SIGINT handler).

    Returns:
      A :class:`FitResult` with the history (one dict per step) and the best
      hyperparameters seen (lowest outer loss).
    """
    splits = make_splits(bilevel.problem, data, bilevel.cv_folds, seed)
    state = init_state(bilevel, data, splits) if state is None else state
    dtype = data.X_train.dtype

    # Compile once per run (static shapes; the tolerance and step scale are traced).
    t0 = time.perf_counter()
    tol0, scale0 = bilevel.tol_at(state.step, dtype), jnp.asarray(1.0, dtype)
    if bilevel.implicit:
        solve_c = jax.jit(bilevel.inner_solve).lower(state.theta, state.inner_params, splits, tol0).compile()
        params0, states0 = jax.eval_shape(bilevel.inner_solve, state.theta, state.inner_params, splits, tol0)
        grad_c = jax.jit(bilevel.implicit_update).lower(
            state.theta, state.opt_state, params0, states0, splits, tol0, scale0).compile()
        executables = (solve_c, grad_c)
    else:
        grad_c = jax.jit(bilevel.unrolled_step).lower(state.theta, state.opt_state, splits, tol0,
                                                      scale0).compile()
        executables = (grad_c,)
    eval_c = jax.jit(bilevel.evaluate).lower(state.theta, state.inner_params, data, splits, tol0).compile()
    compile_time = time.perf_counter() - t0
    compiled_temp_mb = max(_temp_mb(e) for e in executables)

    def step(state, tol):
        """One outer step; returns its outputs and (step time, hypergradient time)."""
        scale = jnp.asarray(state.step_scale, dtype)
        t = time.perf_counter()
        if bilevel.implicit:
            params, states = jax.block_until_ready(solve_c(state.theta, state.inner_params, splits, tol))
            t_grad = time.perf_counter()
            out = jax.block_until_ready(
                grad_c(state.theta, state.opt_state, params, states, splits, tol, scale))
        else:
            t_grad = t
            out = jax.block_until_ready(grad_c(state.theta, state.opt_state, splits, tol, scale))
        end = time.perf_counter()
        return out, end - t, end - t_grad

    history, status = [], "completed"
    start = time.perf_counter()
    while state.step < steps:
        tol = bilevel.tol_at(state.step, dtype)
        (theta, opt_state, params, info), step_time, hypergrad_time = step(state, tol)
        loss = float(info.outer_loss)
        exploded = loss > divergence_factor * max(state.best_loss, 1e-12)
        if not (math.isfinite(loss) and _finite(info.hypergrad) and _finite(theta)) or exploded:
            # Reject: go back to the last good hyperparameters with a halved step. The
            # fallback and the count live in the state, so a resumed run recovers alike.
            warnings.warn(f"outer step {state.step}: outer loss {loss:.4g}, hypergradient norm "
                          f"{float(info.hypergrad_norm):.4g}; step rejected, "
                          f"step size x{state.step_scale * 0.5:g}", DivergenceWarning, stacklevel=2)
            fallback = state.last_good if state.last_good is not None else state
            state = fallback._replace(
                step=state.step, step_scale=state.step_scale * 0.5, best_theta=state.best_theta,
                best_loss=state.best_loss, best_step=state.best_step,
                best_metrics=state.best_metrics, last_good=fallback.last_good,
                rejections=state.rejections + 1, retry=True)
            if state.rejections >= max_rejections:
                status = "diverged"
                break
            continue
        metrics = {k: float(v) for k, v in eval_c(state.theta, params, data, splits, tol).items()}
        if splits.n_folds > 1:
            metrics["val_loss"] = float(info.data_loss)  # the k-fold (out-of-fold) loss
        record = {
            "step": state.step, "outer_loss": loss,
            **metrics,
            "hypergrad_norm": float(info.hypergrad_norm),
            "step_time": step_time,
            "hypergrad_time": hypergrad_time,
            "inner_iterations": int(info.inner_iterations),
            "inner_error": float(info.inner_error),
            "inner_converged": bool(info.inner_converged),
            "inner_tol": float(tol),
            "linear_residual": float(info.linear_residual) if bilevel.implicit else None,
            **hparam_log(jax.device_get(info.hparams)),
        }
        record["time"] = time.perf_counter() - start
        improved = loss < state.best_loss - min_delta
        state = OuterState(
            step=state.step + 1, theta=theta, opt_state=opt_state, inner_params=params,
            best_theta=state.theta if improved else state.best_theta,
            best_loss=loss if improved else state.best_loss,
            best_step=record["step"] if improved else state.best_step,
            step_scale=state.step_scale,
            best_metrics={"outer_loss": loss, **metrics} if improved else state.best_metrics,
            last_good=state._replace(last_good=None),
            # a retry at the last good θ proves nothing about the (halved) step size
            rejections=state.rejections if state.retry else 0)
        history.append(record)
        if callback is not None:
            callback(state, record)
        if patience is not None and state.step - 1 - state.best_step >= patience:
            status = "early_stopped"
            break
        if should_stop is not None and should_stop():
            status = "interrupted"
            break

    final_metrics = history[-1] if history else {}
    best_hparams = {k: np.asarray(v).tolist() for k, v in bilevel.problem.hparams(state.best_theta).items()}
    return FitResult(state, history, best_hparams, final_metrics, state.best_metrics or {}, status,
                     compile_time, time.perf_counter() - start + compile_time, compiled_temp_mb)


def _temp_mb(executable) -> float:
    analysis = executable.memory_analysis()
    return float(getattr(analysis, "temp_size_in_bytes", 0) or 0) / 2**20
