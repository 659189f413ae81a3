"""The base of every iterative solver: ``run`` and the one implicit/unrolled switch."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt.implicit_diff import custom_root
from hyperopt.linear_solve import solve_auto, solve_cg
from hyperopt.loop import run_loop
from hyperopt.tree_util import partition_static, stop_gradient_inexact, tree_norm

__all__ = [
    "ClosedForm", "IterativeSolver", "OptStep", "SimpleState", "backtracking",
    "backtracking_with_payload", "default_tol", "eager_cond",
    "rounding_slack", "value_and_grad_aux", "value_only",
]


class OptStep(NamedTuple):
    """What ``run`` returns: the solution ``params`` and the solver's final ``state``.

    Every state has ``iter_num`` (iterations done), ``error`` (the solver's optimality
    error at ``params``) and ``converged`` (``error <= tol``).
    """

    params: Any
    state: Any


class SimpleState(NamedTuple):
    """The state of solvers that need nothing beyond the common fields."""

    iter_num: jax.Array
    error: jax.Array
    converged: jax.Array


def value_and_grad_aux(fun: Callable, has_aux: bool, params, *args, **kwargs):
    """``(value, grad, aux)`` of ``fun`` (``aux`` is None unless ``has_aux``)."""
    def with_aux(p):
        out = fun(p, *args, **kwargs)
        return out if has_aux else (out, None)
    (value, aux), grad = jax.value_and_grad(with_aux, has_aux=True)(params)
    return value, grad, aux


def value_only(fun: Callable, has_aux: bool, params, *args, **kwargs):
    out = fun(params, *args, **kwargs)
    return out[0] if has_aux else out


def default_tol(params) -> float:
    """1e-10 in float64 (hypergradients accurate to ~1e-8), 1e-4 in float32."""
    leaves = jax.tree.leaves(params)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return 1e-10 if np.finfo(dtype).eps < 1e-10 else 1e-4


def rounding_slack(value) -> jax.Array:
    """Decrease tests accept changes below the rounding error of ``value``: near the
    optimum, true decreases vanish in rounding and the step would otherwise collapse."""
    return 10 * jnp.finfo(value.dtype).eps * jnp.abs(value)


def _concrete_bool(x) -> bool | None:
    """``bool(x)``, or None when ``x`` is traced (under an enclosing ``jit``)."""
    try:
        return bool(x)
    except jax.errors.ConcretizationTypeError:
        return None


def eager_cond(pred, true_fun, false_fun, *operands, jit: bool = True):
    """``lax.cond``, or a Python branch when ``jit=False`` and ``pred`` is concrete (the
    eager loop: only the taken branch runs, op by op, so ``fun`` is never staged)."""
    if not jit:
        go = _concrete_bool(pred)
        if go is not None:
            return true_fun(*operands) if go else false_fun(*operands)
    return jax.lax.cond(pred, true_fun, false_fun, *operands)


def backtracking(accept: Callable[[jax.Array], jax.Array], stepsize, *, maxls: int,
                 decrease_factor: float, jit: bool = True) -> jax.Array:
    """Largest ``stepsize * decrease_factor**k`` (k < maxls) for which ``accept`` holds.

    The caller passes ``accept`` built from ``stop_gradient``-ed inputs, so the search is
    never differentiated: the chosen step is locally constant in the hyperparameters,
    which keeps unrolled derivatives finite (JAXopt's unrolled LBFGS line search gives
    NaN) and lets reverse mode pass the inner ``while_loop``.

    ``jit=False`` (the solver's eager mode, as JAXopt's ``jit`` option of its line
    searches): a Python loop when the values are concrete, so ``accept`` runs op by op.
    """
    return backtracking_with_payload(lambda eta: (accept(eta), ()), stepsize, maxls=maxls,
                                     decrease_factor=decrease_factor, jit=jit)[0]


def backtracking_with_payload(accept: Callable, stepsize, *, maxls: int,
                              decrease_factor: float, jit: bool = True):
    """:func:`backtracking` where ``accept(eta) -> (ok, payload)``; returns ``(eta, payload)``
    with the payload (a pytree of arrays, e.g. the trial's value) of the returned ``eta``."""
    if not jit:
        ok, payload = accept(stepsize)
        go = _concrete_bool(ok)
        if go is not None:
            eta, k = stepsize, 0
            while not go and k < maxls:
                eta, k = eta * decrease_factor, k + 1
                ok, payload = accept(eta)
                go = bool(ok)
            return jax.lax.stop_gradient(eta), payload

    def cond(carry):
        eta, k, ok, _ = carry
        return (~ok) & (k < maxls)

    def body(carry):
        eta, k, _, _ = carry
        eta = eta * decrease_factor
        return (eta, k + 1, *accept(eta))

    eta, _, _, payload = jax.lax.while_loop(cond, body, (stepsize, 0, *accept(stepsize)))
    return jax.lax.stop_gradient(eta), payload


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class IterativeSolver:
    """Options common to all solvers (keyword-only).

    Attributes:
      maxiter: maximum number of iterations (scan length in unrolled mode).
      tol: stop when the state's ``error`` is at most ``tol``; default 1e-10 in float64
        and 1e-4 in float32 (accurate hypergradients need tight inner solves: at 1e-8 the
        ridge hypergradient is off by ~1e-7).
      implicit_diff: ``True``: derivatives of ``run`` by implicit differentiation of the
        solver's optimality condition; ``False``: by autodiff of the unrolled iterations.
      implicit_diff_solve: linear solver for the implicit system; default
        :func:`~hyperopt.linear_solve.solve_cg` for solvers whose optimality condition is a
        gradient (the system is a symmetric Hessian), :func:`~hyperopt.linear_solve.solve_auto`
        for fixed-point conditions (non-symmetric).
      jit: compile ``run`` (once per solver object, argument shapes and static
        arguments: Python ints, bools and strings are static, arrays and floats traced).
        ``jit=False``: a plain Python loop, op by op (JAXopt's meaning: prints and ``pdb``
        work inside ``fun``); implicit differentiation still applies.
      verbose: print the error at every iteration.
      unroll_checkpoint: in unrolled mode, recompute each iteration in the backward pass
        instead of storing its intermediates (``jax.checkpoint``): less memory per step for
        solvers with large intermediates (LBFGS), ~1.3x the time.
      unroll: JAXopt's loop option. ``"auto"`` (default): a ``lax.scan`` of ``maxiter``
        steps in unrolled mode (``implicit_diff=False``), a ``lax.while_loop`` stopping at
        ``tol`` otherwise; ``True``: always the scan (the iterations can be reverse-mode
        differentiated); ``False``: always the while loop (with ``implicit_diff=False``
        only forward-mode derivatives exist, as in JAXopt). ``jit=False`` runs its Python
        loop either way.

    Solvers are frozen dataclasses: use ``dataclasses.replace(solver, maxiter=...)`` to
    change an option.
    """

    default_linear_solve: ClassVar[Callable] = staticmethod(solve_auto)

    maxiter: int = 500
    tol: float | None = None
    implicit_diff: bool = True
    implicit_diff_solve: Callable | None = None
    jit: bool = True
    verbose: bool = False
    unroll_checkpoint: bool = False
    unroll: bool | str = "auto"

    def __post_init__(self):
        if not (isinstance(self.maxiter, (int, np.integer)) and self.maxiter > 0):
            raise ValueError(f"maxiter={self.maxiter!r}; allowed: a positive integer")
        # tol may be a tracer: the outer loop tightens it as it converges (HOAG schedule).
        if isinstance(self.tol, (int, float, np.number)) and not self.tol > 0:
            raise ValueError(f"tol={self.tol!r}; allowed: a positive number")
        if not (self.unroll == "auto" or isinstance(self.unroll, (bool, np.bool_))):
            raise ValueError(f"unroll={self.unroll!r}; allowed: 'auto', True, False")

    # -- what a solver supplies -------------------------------------------------------
    def init_state(self, init_params, *args, **kwargs):
        raise NotImplementedError

    def update(self, params, state, *args, **kwargs) -> OptStep:
        raise NotImplementedError

    def optimality_fun(self, params, *args, **kwargs):
        """Zero at a solution; its Jacobian defines the implicit linear system."""
        raise NotImplementedError

    def l2_optimality_error(self, params, *args, **kwargs) -> jax.Array:
        """Euclidean norm of :meth:`optimality_fun` at ``params`` (JAXopt's name)."""
        return tree_norm(self._implicit_optimality()(params, *args, **kwargs))

    def _implicit_optimality(self) -> Callable:
        """The function whose root ``run`` differentiates (``optimality_fun`` unless a
        solver's user-given ``optimality_fun`` field returns ``(value, aux)``)."""
        return self.optimality_fun

    @property
    def linear_solve(self) -> Callable:
        """The linear solver of the implicit system (``implicit_diff_solve`` or the default)."""
        return self.implicit_diff_solve or type(self).default_linear_solve

    def _reference_signature(self) -> Callable | None:
        """A function whose signature ``run``'s arguments (after ``init_params``) follow."""
        return None

    def _loop_state(self, params, state, *args, **kwargs):
        """The state the loop starts from (``init_state``'s, completed where the loop's
        carry needs fields that ``init_state`` may leave out)."""
        return state

    def _stop_early(self, state):
        """A boolean array that stops the iterations before ``tol`` (None: never)."""
        return None

    @property
    def _scan_loop(self) -> bool:
        """Iterate with a fixed-length ``lax.scan`` (``unroll``) rather than a while loop."""
        return not self.implicit_diff if self.unroll == "auto" else bool(self.unroll)

    # -- the shared machinery ---------------------------------------------------------
    def _run_iterations(self, init_params, *args, **kwargs):
        tol = (default_tol(getattr(init_params, "params", init_params)) if self.tol is None
               else self.tol)
        state = self.init_state(init_params, *args, **kwargs)
        if isinstance(init_params, OptStep):  # warm start from a previous (params, state)
            init_params = init_params.params
        state = self._loop_state(init_params, state, *args, **kwargs)
        step = lambda params, state: tuple(self.update(params, state, *args, **kwargs))
        return run_loop(step, init_params, state, maxiter=self.maxiter, tol=tol,
                        unrolled=self._scan_loop, verbose=self.verbose,
                        checkpoint=self.unroll_checkpoint, jit=self.jit,
                        stop=self._stop_early)

    @functools.cached_property
    def _differentiable_run(self) -> Callable:
        run = self._run_iterations
        if self.implicit_diff:  # the one place where implicit vs unrolled is decided
            run = custom_root(self._implicit_optimality(), has_aux=True, solve=self.linear_solve,
                              reference_signature=self._reference_signature())(run)
        return run

    @functools.cached_property
    def _jitted(self) -> dict:
        return {}  # one compiled function per structure of static arguments

    def _run_eager(self, init_params, *args, **kwargs) -> OptStep:
        """``jit=False``: the iterations run in a Python loop, op by op (prints and pdb work).

        Implicit mode solves with the arguments' values, then attaches the implicit
        derivatives (``custom_root`` around the finished solution) only when some argument
        is being differentiated, so that ``fun`` is called exactly once per evaluation.
        """
        if isinstance(init_params, OptStep):  # warm start from a previous run (JAXopt)
            init_params = init_params.params
        if not self.implicit_diff:
            return OptStep(*self._run_iterations(init_params, *args, **kwargs))
        solution = self._run_iterations(init_params, *stop_gradient_inexact(args),
                                        **stop_gradient_inexact(kwargs))
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            return OptStep(*solution)
        run = custom_root(self.optimality_fun, has_aux=True, solve=self.linear_solve,
                          reference_signature=self._reference_signature())(
                              lambda init_params, *args, **kwargs: solution)
        return OptStep(*run(init_params, *args, **kwargs))

    def run(self, init_params, *args, **kwargs) -> OptStep:
        """Solves from ``init_params``; ``args``/``kwargs`` are the objective's arguments.

        Differentiable with respect to ``args``/``kwargs`` (implicitly or unrolled).
        """
        if not self.jit:
            return self._run_eager(init_params, *args, **kwargs)
        dynamic, key, rebuild = partition_static((args, kwargs))
        try:
            compiled = self._jitted.get(key)
        except TypeError:  # an unhashable static argument: run without compiling
            return OptStep(*self._differentiable_run(init_params, *args, **kwargs))
        if compiled is None:
            def call(init_params, dynamic):
                a, k = rebuild(dynamic)
                return self._differentiable_run(init_params, *a, **k)
            compiled = self._jitted[key] = jax.jit(call)
        return OptStep(*compiled(init_params, dynamic))


@dataclasses.dataclass(eq=False, frozen=True)
class ClosedForm(IterativeSolver):
    """A direct solver with the interface of the iterative ones.

    ``solve(*args) -> params`` computes the solution (e.g. a Cholesky solve) and
    ``optimality(params, *args)`` is zero there. ``implicit_diff=True`` differentiates
    through the optimality condition; ``False`` differentiates ``solve`` itself.
    ``state.error`` is the norm of the optimality residual.

    Example:
      >>> ClosedForm(solve=ridge_cholesky, optimality=ridge_gradient).run(None, lam, X, y)
    """

    default_linear_solve: ClassVar[Callable] = staticmethod(solve_cg)  # for gradient conditions

    solve: Callable
    optimality: Callable

    def optimality_fun(self, params, *args, **kwargs):
        return self.optimality(params, *args, **kwargs)

    def _run_iterations(self, init_params, *args, **kwargs):
        params = self.solve(*args, **kwargs)
        error = tree_norm(self.optimality(params, *args, **kwargs))
        tol = default_tol(params) if self.tol is None else self.tol
        return params, SimpleState(jnp.asarray(1), error, error <= tol)
