"""Bisection: the root of a scalar function on a bracket (JAXopt's ``Bisection``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt.solvers.base import IterativeSolver, OptStep
from hyperopt.solvers.fixed_point_iteration import zeros_like_aux

__all__ = ["Bisection", "BisectionState"]


class BisectionState(NamedTuple):
    """State of :class:`Bisection`.

    ``low``/``high``: the current bracket; ``value``: ``F`` at the last midpoint and
    ``error = |value|``; ``sign``: 1 if ``F`` increases over the bracket, -1 if it
    decreases, 0 if ``F(lower)`` and ``F(upper)`` do not bracket a root.
    """

    iter_num: jax.Array
    value: jax.Array
    error: jax.Array
    low: jax.Array
    high: jax.Array
    sign: jax.Array
    aux: Any
    num_fun_eval: jax.Array
    converged: jax.Array


def _float(x) -> jax.Array:
    return jnp.asarray(x, jnp.result_type(float))  # float64 when x64 is enabled, as JAXopt


@dataclasses.dataclass(eq=False, frozen=True)
class Bisection(IterativeSolver):
    """Root of a scalar ``optimality_fun(x, *args, **kwargs)`` in ``[lower, upper]``.

    ``run(init_params=None, *args, **kwargs)`` (``init_params`` is ignored: the iterate
    is the bracket's midpoint). Derivatives of the root with respect to ``args`` come
    from the implicit function theorem, ``dx* = -∂ₓF⁻¹ ∂_θF dθ``; the bracket gets none.
    With ``implicit_diff=False`` the unrolled derivative is zero (midpoints of a bracket
    are piecewise constant in ``args``).

    Attributes:
      optimality_fun: ``F(x, *args, **kwargs)`` (or ``(F, aux)`` when ``has_aux``), with
        opposite signs at ``lower`` and ``upper``.
      lower, upper: the bracket (floats or arrays; not differentiated).
      maxiter: 30 and tol: 1e-5 on ``|F|``, JAXopt's defaults (each step halves the
        bracket: 30 steps shrink it by 1e-9).
      check_bracket: raise ``ValueError`` in ``run`` when ``F(lower)``, ``F(upper)``
        have the same sign. Checked eagerly before compiling; skipped when ``run`` is
        traced by the caller's ``jit`` (JAXopt then fails), where a bad bracket gives a
        NaN root and ``state.sign == 0`` instead.

    Example (the threshold of the projection onto the simplex):
      >>> F = lambda tau, x: jnp.sum(jnp.maximum(x - tau, 0)) - 1.0
      >>> tau = Bisection(F, lower=x.min() - 1, upper=x.max()).run(None, x).params
    """

    # field() so that the base class's optimality_fun method is not taken as its default
    optimality_fun: Callable = dataclasses.field()
    lower: Any
    upper: Any
    maxiter: int = dataclasses.field(default=30, kw_only=True)  # JAXopt's defaults
    tol: float | None = dataclasses.field(default=1e-5, kw_only=True)
    check_bracket: bool = True
    has_aux: bool = False

    def _fun(self, x, /, *args, **kwargs):
        out = self.optimality_fun(x, *args, **kwargs)
        return out if self.has_aux else (out, None)

    def _implicit_optimality(self) -> Callable:
        return lambda x, *args, **kwargs: self._fun(x, *args, **kwargs)[0]

    def _reference_signature(self):
        return self.optimality_fun

    def _bracket(self, *args, **kwargs):
        lower, upper = _float(self.lower), _float(self.upper)
        lower_value = self._fun(lower, *args, **kwargs)[0]
        upper_value = self._fun(upper, *args, **kwargs)[0]
        sign = jnp.where((lower_value < 0) & (upper_value >= 0), 1,
                         jnp.where((lower_value > 0) & (upper_value <= 0), -1, 0))
        return lower, upper, sign

    def init_state(self, init_params=None, *args, **kwargs) -> BisectionState:
        del init_params  # the iterate is the bracket's midpoint
        lower, upper, sign = self._bracket(*args, **kwargs)
        aux = (zeros_like_aux(self._fun, lower, *args, **kwargs) if self.has_aux else None)
        return BisectionState(iter_num=jnp.asarray(0), value=jnp.asarray(jnp.inf, lower.dtype),
                              error=jnp.asarray(jnp.inf, lower.dtype), low=lower, high=upper,
                              sign=sign, aux=aux, num_fun_eval=jnp.asarray(2, jnp.int32),
                              converged=jnp.asarray(False))

    def update(self, params, state, *args, **kwargs) -> OptStep:
        del params  # the midpoint of the bracket instead
        midpoint = 0.5 * (state.low + state.high)
        midpoint = jnp.where(state.sign == 0, jnp.nan, midpoint)  # no bracket, no root
        value, aux = self._fun(midpoint, *args, **kwargs)
        value = jnp.asarray(value, state.value.dtype)
        too_large = state.sign * value > 0
        return OptStep(midpoint, BisectionState(
            iter_num=state.iter_num + 1, value=value,
            error=jax.lax.stop_gradient(jnp.abs(value)),
            low=jnp.where(too_large, state.low, midpoint),
            high=jnp.where(too_large, midpoint, state.high), sign=state.sign, aux=aux,
            num_fun_eval=state.num_fun_eval + 1, converged=state.converged))

    def _run_iterations(self, init_params, *args, **kwargs):
        # the loop carries the iterate: start it at the midpoint (init_params may be None)
        midpoint = 0.5 * (_float(self.lower) + _float(self.upper))
        return super()._run_iterations(midpoint, *args, **kwargs)

    def run(self, init_params=None, *args, **kwargs) -> OptStep:
        """Finds the root; ``init_params`` is ignored (JAXopt's signature)."""
        if self.check_bracket:
            sign = self._bracket(*args, **kwargs)[2]
            try:
                bad = bool(sign == 0)
            except jax.errors.ConcretizationTypeError:  # traced by the caller: cannot check
                bad = False
            if bad:
                raise ValueError(
                    f"lower={self.lower!r}, upper={self.upper!r} do not bracket a root: "
                    "optimality_fun must have opposite signs at lower and upper")
        return super().run(init_params, *args, **kwargs)
