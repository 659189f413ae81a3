"""Limited-memory BFGS with a guarded, non-differentiated Armijo line search."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from hyperopt.linear_solve import solve_cg
from hyperopt.solvers.base import (
    IterativeSolver,
    OptStep,
    backtracking,
    rounding_slack,
    value_and_grad_aux,
    value_only,
)
from hyperopt.tree_util import stop_gradient_inexact

__all__ = ["LBFGS", "LbfgsState"]

_sg = jax.lax.stop_gradient


class LbfgsState(NamedTuple):
    """State of :class:`LBFGS`; ``s_history``/``y_history`` hold the last ``history_size``
    steps and gradient changes (flattened), ``rho_history`` their ``1/(yᵀs)`` (0 = empty)."""

    iter_num: jax.Array
    error: jax.Array
    converged: jax.Array
    value: jax.Array
    grad: Any
    stepsize: jax.Array
    s_history: jax.Array
    y_history: jax.Array
    rho_history: jax.Array
    aux: Any


def _safe_div(num, den):
    """``num / den``, and 0 where ``den`` is not safely positive (gradient-safe too)."""
    ok = den > 1e-30
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _two_loop(grad, s_hist, y_hist, rho_hist, newest):
    """``-H grad`` by the L-BFGS two-loop recursion over a circular history."""
    m = s_hist.shape[0]
    order = (newest - jnp.arange(m)) % m  # newest first

    def first(q, i):
        alpha = rho_hist[i] * jnp.vdot(s_hist[i], q)
        return q - alpha * y_hist[i], alpha

    q, alphas = jax.lax.scan(first, grad, order)
    gamma = _safe_div(jnp.vdot(s_hist[newest], y_hist[newest]),
                      jnp.vdot(y_hist[newest], y_hist[newest]))
    r = jnp.where(rho_hist[newest] > 0, gamma, 1.0) * q

    def second(r, i_alpha):
        i, alpha = i_alpha
        beta = rho_hist[i] * jnp.vdot(y_hist[i], r)
        return r + s_hist[i] * (alpha - beta), None

    r, _ = jax.lax.scan(second, r, (order[::-1], alphas[::-1]))
    return -r


@dataclasses.dataclass(eq=False, frozen=True)
class LBFGS(IterativeSolver):
    """L-BFGS for ``min_x fun(x, *args, **kwargs)``; ``run(init_params, *args, **kwargs)``.

    The direction comes from the two-loop recursion over ``history_size`` pairs; the
    step from Armijo backtracking whose inputs are ``stop_gradient``-ed, so unrolled
    derivatives stay finite (JAXopt's zoom line search gives NaN there). Unrolled mode also
    treats the quasi-Newton history as constant (see ``update``). Curvature pairs with
    ``yᵀs <= 0`` are skipped and every division is guarded. Implicit differentiation uses
    ``∇ₓ fun(x*) = 0`` (linear solve: CG by default).

    Example:
      >>> solver = LBFGS(fun=logistic_objective, maxiter=200)
      >>> w = solver.run(jnp.zeros(p), l2reg, X, y).params
    """

    default_linear_solve: ClassVar[Callable] = staticmethod(solve_cg)  # Hessian: symmetric

    fun: Callable
    history_size: int = 10
    has_aux: bool = False
    maxls: int = 30
    decrease_factor: float = 0.5
    armijo: float = 1e-4

    def _value_and_grad(self, params, *args, **kwargs):
        return value_and_grad_aux(self.fun, self.has_aux, params, *args, **kwargs)

    def init_state(self, init_params, *args, **kwargs) -> LbfgsState:
        value, grad, aux = self._value_and_grad(init_params, *args, **kwargs)
        flat, _ = ravel_pytree(init_params)
        hist = jnp.zeros((self.history_size, flat.size), flat.dtype)
        return LbfgsState(iter_num=jnp.asarray(0), error=jnp.linalg.norm(ravel_pytree(grad)[0]),
                          converged=jnp.asarray(False), value=value, grad=grad,
                          stepsize=jnp.asarray(1.0, flat.dtype), s_history=hist, y_history=hist,
                          rho_history=jnp.zeros(self.history_size, flat.dtype), aux=aux)

    def update(self, params, state, *args, **kwargs) -> OptStep:
        x, unravel = ravel_pytree(params)
        g = ravel_pytree(state.grad)[0]
        newest = (state.iter_num - 1) % self.history_size
        # The quasi-Newton matrix is treated as a constant when unrolling: the fixed point's
        # derivative does not depend on it, while differentiating it goes through 1/(yᵀs)
        # of rounding-level pairs near convergence (20-30% errors measured) and makes
        # reverse mode store the whole history at every step (~100x the iterate).
        s_hist, y_hist, rho_hist = _sg((state.s_history, state.y_history, state.rho_history))
        d = _two_loop(g, s_hist, y_hist, rho_hist, newest)
        slope = jnp.vdot(g, d)
        descent = slope < 0
        d = jnp.where(descent, d, -g)  # fall back to steepest descent if not a descent
        slope = jnp.where(descent, slope, -jnp.vdot(g, g))
        # First iteration: a step of length 1 along -g would ignore the scale of g.
        init_step = jnp.where(state.iter_num == 0, jnp.minimum(1.0, _safe_div(1.0, jnp.linalg.norm(g))), 1.0)
        xs, ds, fx, slope_s = _sg((x, d, state.value, slope))
        args_s, kwargs_s = stop_gradient_inexact((args, kwargs))

        def accept(eta):
            f_new = value_only(self.fun, self.has_aux, unravel(xs + eta * ds), *args_s, **kwargs_s)
            return f_new <= fx + self.armijo * eta * slope_s + rounding_slack(fx)

        eta = backtracking(accept, init_step, maxls=self.maxls, decrease_factor=self.decrease_factor)
        x_new = x + eta * d
        value, grad, aux = self._value_and_grad(unravel(x_new), *args, **kwargs)
        g_new = ravel_pytree(grad)[0]
        s, y = x_new - x, g_new - g
        i = state.iter_num % self.history_size
        state = LbfgsState(
            iter_num=state.iter_num + 1, error=jnp.linalg.norm(g_new), converged=state.converged,
            value=value, grad=grad, stepsize=eta,
            s_history=state.s_history.at[i].set(s), y_history=state.y_history.at[i].set(y),
            rho_history=state.rho_history.at[i].set(_safe_div(1.0, jnp.vdot(y, s))), aux=aux)
        return OptStep(unravel(x_new), state)

    def optimality_fun(self, params, *args, **kwargs):
        return self._value_and_grad(params, *args, **kwargs)[1]

    def _reference_signature(self):
        return self.fun
