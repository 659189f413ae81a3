"""Any optax optimizer as an inner solver (JAXopt's ``OptaxSolver``)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt.linear_solve import solve_cg
from hyperopt.solvers.base import IterativeSolver, OptStep
from hyperopt.solvers.fixed_point_iteration import _error_dtype
from hyperopt.tree_util import tree_norm

__all__ = ["OptaxSolver", "OptaxState", "make_value_and_grad_with_aux"]


class OptaxState(NamedTuple):
    """State of :class:`OptaxSolver`.

    ``value``: the objective at the previous iterate (``inf`` before the first step);
    ``error``: the norm of its gradient; ``internal_state``: the optax state; ``aux``:
    the auxiliary output of the last ``fun`` call.
    """

    iter_num: jax.Array
    value: jax.Array
    error: jax.Array
    internal_state: Any
    aux: Any
    converged: jax.Array


def make_value_and_grad_with_aux(fun: Callable, value_and_grad: bool | Callable,
                                 has_aux: bool) -> Callable:
    """``f(params, *args, **kwargs) -> ((value, aux), grad)`` from JAXopt's three options.

    ``value_and_grad=False``: ``fun`` returns the value (``(value, aux)`` if ``has_aux``);
    ``True``: ``fun`` returns ``(value, grad)`` (``((value, aux), grad)``); a callable:
    that callable returns value and gradient in the same way, ``fun`` only the value.
    ``aux`` is None unless ``has_aux``.
    """
    if value_and_grad is False:
        with_aux = fun if has_aux else (lambda p, /, *a, **k: (fun(p, *a, **k), None))
        return jax.value_and_grad(with_aux, has_aux=True)
    user = fun if value_and_grad is True else value_and_grad
    if has_aux:
        return user

    def add_aux(params, /, *args, **kwargs):
        value, grad = user(params, *args, **kwargs)
        return (value, None), grad
    return add_aux


@dataclasses.dataclass(eq=False, frozen=True)
class OptaxSolver(IterativeSolver):
    """Minimizes ``fun(params, *args, **kwargs)`` with an optax optimizer ``opt``.

    Each step is ``updates, s = opt.update(∇fun(x), s, x); x ← x + updates``; ``error``
    is the gradient norm at the previous iterate. Implicit differentiation uses
    ``∇ₓ fun(x*) = 0`` (exact only once the optimizer has converged: keep ``tol`` tight);
    unrolled mode differentiates the optimizer's steps.

    Attributes:
      fun: the objective (see ``value_and_grad`` and ``has_aux`` for what it returns).
      opt: an ``optax.GradientTransformation`` (``optax.adam(1e-3)``, a chain, ...).
      value_and_grad: ``False`` (``fun`` returns the value), ``True`` (``fun`` returns
        ``(value, grad)``) or a function returning ``(value, grad)``.
      pre_update: ``params, state = pre_update(params, state, *args, **kwargs)``, run
        before each step (e.g. to refresh a data batch in the state).
      has_aux: ``fun`` returns ``(value, aux)``; the last ``aux`` is ``state.aux``.
      maxiter: JAXopt's default, 500. ``tol``: on the gradient norm; default 1e-10 in
        float64, 1e-4 in float32 (JAXopt: 1e-3).
      implicit_diff: ``False`` by default, as in JAXopt (a stochastic optimizer rarely
        reaches the accuracy that implicit differentiation assumes).

    Example:
      >>> solver = OptaxSolver(opt=optax.adam(1e-2), fun=ridge_objective, maxiter=300)
      >>> w = solver.run(jnp.zeros(p), lam, X, y).params
      >>> jax.grad(lambda lam: val_loss(solver.run(w0, lam, X, y).params))(0.1)
    """

    default_linear_solve = staticmethod(solve_cg)  # the Hessian: symmetric

    fun: Callable
    opt: Any
    value_and_grad: bool | Callable = False
    pre_update: Callable | None = None
    maxiter: int = dataclasses.field(default=500, kw_only=True)
    implicit_diff: bool = dataclasses.field(default=False, kw_only=True)  # JAXopt's default
    has_aux: bool = False

    @functools.cached_property
    def _value_and_grad_fun(self) -> Callable:
        return make_value_and_grad_with_aux(self.fun, self.value_and_grad, self.has_aux)

    def _value_with_aux(self, params, /, *args, **kwargs):
        if self.value_and_grad is True:  # fun returns the gradient too
            return self._value_and_grad_fun(params, *args, **kwargs)[0]
        out = self.fun(params, *args, **kwargs)
        return out if self.has_aux else (out, None)

    def init_state(self, init_params, *args, **kwargs) -> OptaxState:
        value, aux = self._value_with_aux(init_params, *args, **kwargs)
        value = jnp.asarray(value)
        return OptaxState(iter_num=jnp.asarray(0), value=jnp.asarray(jnp.inf, value.dtype),
                          error=jnp.asarray(jnp.inf, _error_dtype(init_params)),
                          internal_state=self.opt.init(init_params), aux=aux,
                          converged=jnp.asarray(False))

    def update(self, params, state, *args, **kwargs) -> OptStep:
        if self.pre_update is not None:
            params, state = self.pre_update(params, state, *args, **kwargs)
        (value, aux), grad = self._value_and_grad_fun(params, *args, **kwargs)
        updates, internal_state = self.opt.update(grad, state.internal_state, params)
        new_params = jax.tree.map(lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
                                  params, updates)
        error = jax.lax.stop_gradient(tree_norm(grad))  # a stopping test, not differentiated
        return OptStep(new_params, OptaxState(
            iter_num=state.iter_num + 1, value=jnp.asarray(value, state.value.dtype),
            error=jnp.asarray(error, state.error.dtype), internal_state=internal_state, aux=aux,
            converged=state.converged))

    def optimality_fun(self, params, *args, **kwargs):
        return self._value_and_grad_fun(params, *args, **kwargs)[1]

    def _reference_signature(self):
        return self.fun

    @functools.cached_property
    def _jitted_update(self) -> Callable:
        return jax.jit(self.update) if self.jit else self.update

    def run_iterator(self, init_params, iterator: Iterator, *args, **kwargs) -> OptStep:
        """Runs over data batches: ``fun(params, *args, **kwargs, data=batch)``.

        As JAXopt: the first batch initializes the state, then one step per further batch,
        at most ``maxiter``. Not differentiated implicitly (a Python loop).

        Example:
          >>> w = solver.run_iterator(w0, batches(X, y), l2reg=0.1).params
        """
        data = next(iterator)
        state = self.init_state(init_params, *args, **kwargs, data=data)
        params = init_params
        for data in itertools.islice(iterator, 0, self.maxiter):
            params, state = self._jitted_update(params, state, *args, **kwargs, data=data)
        return OptStep(params, state)
