"""Anderson acceleration of a fixed-point iteration (JAXopt's ``AndersonAcceleration``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt.solvers.base import IterativeSolver, OptStep
from hyperopt.solvers.fixed_point_iteration import (
    _error_dtype,
    fixed_point_with_aux,
    zeros_like_aux,
)
from hyperopt.tree_util import tree_vdot

__all__ = ["AndersonAcceleration", "AndersonState", "minimize_residuals"]


class AndersonState(NamedTuple):
    """State of :class:`AndersonAcceleration`.

    ``params_history``/``residuals_history``: the last ``history_size`` evaluation points
    ``x_i`` and residuals ``T(x_i) - x_i`` (each leaf with a leading axis of that size);
    ``residual_gram``: their Gram matrix ``GᵀG``, shape ``(m, m)``; ``error``: the norm
    of the newest residual.
    """

    iter_num: jax.Array
    error: jax.Array
    params_history: Any
    residuals_history: Any
    residual_gram: jax.Array
    aux: Any
    num_fun_eval: jax.Array
    converged: jax.Array


def minimize_residuals(residual_gram: jax.Array, ridge: float) -> jax.Array:
    """``[μ, α]`` minimizing ``αᵀ(GᵀG + ridge·I)α`` subject to ``Σα = 1`` (μ: multiplier).

    The KKT system ``[[0, 1ᵀ], [1, GᵀG + ridge·I]] [μ; α] = [1; 0]``, shape ``(m+1,)``.
    """
    m = residual_gram.shape[0]
    gram = residual_gram + ridge * jnp.eye(m, dtype=residual_gram.dtype)
    kkt = jnp.block([[jnp.zeros((1, 1), gram.dtype), jnp.ones((1, m), gram.dtype)],
                     [jnp.ones((m, 1), gram.dtype), gram]])
    rhs = jnp.zeros(m + 1, gram.dtype).at[0].set(1)
    return jnp.linalg.solve(kkt, rhs)


def _weighted_sum(history, weights):
    return jax.tree.map(lambda h: jnp.tensordot(weights.astype(h.dtype), h, axes=1), history)


@dataclasses.dataclass(eq=False, frozen=True)
class AndersonAcceleration(IterativeSolver):
    """Anderson acceleration for ``x* = fixed_point_fun(x*, *args, **kwargs)``.

    Each step evaluates ``T`` at an extrapolation of the last ``history_size`` points,
    the combination ``Σ αᵢ (xᵢ + β rᵢ)`` (``rᵢ = T(xᵢ) - xᵢ``) whose residuals have the
    least norm; with ``mixing_frequency=k`` only one step in ``k`` extrapolates. It
    often converges where plain iteration is slow or fails (rotations, deep-equilibrium
    layers). ``run(init_params, *args, **kwargs)``; implicit differentiation uses
    ``T(x*) - x* = 0``, as :class:`FixedPointIteration`.

    Attributes:
      fixed_point_fun: ``T(x, *args, **kwargs)`` (or ``(T(x), aux)`` when ``has_aux``).
      history_size: ``m`` (at least 2), memory ``m`` copies of ``x``.
      mixing_frequency: extrapolate every this many steps.
      beta: weight of the residuals in the extrapolation.
      ridge: regularization of the Gram matrix (raise it if the solver returns NaN).
      maxiter: JAXopt's default, 100. ``tol``: as in :class:`FixedPointIteration`.

    Example:
      >>> aa = AndersonAcceleration(lambda x, M, b: M @ x + b, history_size=5)
      >>> x = aa.run(jnp.zeros(n), M, b).params        # (I - M)⁻¹ b
    """

    fixed_point_fun: Callable
    history_size: int = 5
    mixing_frequency: int = 1
    beta: float = 1.0
    maxiter: int = dataclasses.field(default=100, kw_only=True)  # JAXopt's default
    ridge: float = 1e-5
    has_aux: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.history_size, int) and self.history_size >= 2):
            raise ValueError(f"history_size={self.history_size!r}; allowed: an integer >= 2")
        if not (isinstance(self.mixing_frequency, int) and self.mixing_frequency >= 1):
            raise ValueError(f"mixing_frequency={self.mixing_frequency!r}; allowed: an integer >= 1")

    def _fun(self, params, /, *args, **kwargs):
        return fixed_point_with_aux(self.fixed_point_fun, self.has_aux)(params, *args, **kwargs)

    def init_state(self, init_params, *args, **kwargs) -> AndersonState:
        m = self.history_size
        params_history = jax.tree.map(lambda x: jnp.tile(x, [m] + [1] * jnp.ndim(x)), init_params)
        dtype = _error_dtype(init_params)
        aux = zeros_like_aux(self._fun, init_params, *args, **kwargs) if self.has_aux else None
        return AndersonState(iter_num=jnp.asarray(0), error=jnp.asarray(jnp.inf, dtype),
                             params_history=params_history,
                             residuals_history=jax.tree.map(jnp.zeros_like, params_history),
                             residual_gram=jnp.zeros((m, m), dtype), aux=aux,
                             num_fun_eval=jnp.asarray(0, jnp.int32), converged=jnp.asarray(False))

    def _extrapolate(self, params, state):
        extrapolate = ((state.iter_num % self.mixing_frequency == 0)
                       & (state.iter_num >= self.history_size))
        # Both branches are computed and one is selected with `where` (not lax.cond: in
        # unrolled mode a cond inside the scan stores its operands at every step). Before the
        # history is full the Gram matrix is replaced by I, so that the unused solve stays
        # finite and its (zero) cotangent cannot turn into NaN.
        gram = jnp.where(extrapolate, state.residual_gram,
                         jnp.eye(self.history_size, dtype=state.residual_gram.dtype))
        alphas = minimize_residuals(gram, self.ridge)[1:]
        extrapolated = jax.tree.map(
            lambda p, r: p + self.beta * r,
            _weighted_sum(state.params_history, alphas),
            _weighted_sum(state.residuals_history, alphas))
        return jax.tree.map(lambda e, p: jnp.where(extrapolate, e, p).astype(p.dtype),
                            extrapolated, params)

    def update(self, params, state, *args, **kwargs) -> OptStep:
        extrapolated = self._extrapolate(params, state)
        next_params, aux = self._fun(extrapolated, *args, **kwargs)
        residual = jax.tree.map(jnp.subtract, next_params, extrapolated)
        pos = state.iter_num % self.history_size
        params_history = jax.tree.map(lambda h, x: h.at[pos].set(x),
                                      state.params_history, extrapolated)
        residuals_history = jax.tree.map(lambda h, r: h.at[pos].set(r),
                                         state.residuals_history, residual)
        row = jax.vmap(tree_vdot, in_axes=(0, None))(residuals_history, residual)
        row = jnp.real(row).astype(state.residual_gram.dtype)
        gram = state.residual_gram.at[pos, :].set(row).at[:, pos].set(row)
        # a stopping test, not differentiated (sqrt at an exact zero would give NaN cotangents)
        error = jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(gram[pos, pos], 0.0)))
        return OptStep(next_params, AndersonState(
            iter_num=state.iter_num + 1, error=error.astype(state.error.dtype),
            params_history=params_history, residuals_history=residuals_history,
            residual_gram=gram, aux=aux, num_fun_eval=state.num_fun_eval + 1,
            converged=state.converged))

    def optimality_fun(self, params, *args, **kwargs):
        next_params, _ = self._fun(params, *args, **kwargs)
        return jax.tree.map(jnp.subtract, next_params, params)

    def _reference_signature(self):
        return self.fixed_point_fun
