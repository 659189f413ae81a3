"""Fixed-point iteration ``x ← T(x, *args)`` (JAXopt's ``FixedPointIteration``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt.solvers.base import IterativeSolver, OptStep
from hyperopt.tree_util import tree_norm

__all__ = ["FixedPointIteration", "FixedPointState", "fixed_point_with_aux", "zeros_like_aux"]


class FixedPointState(NamedTuple):
    """State of :class:`FixedPointIteration`.

    ``error`` is ``||T(x) - x||`` of the previous iterate (what the step moved);
    ``aux`` the auxiliary output of the last ``T`` call (zeros before the first step,
    JAXopt: ``None``); ``num_fun_eval`` counts calls of ``T``.
    """

    iter_num: jax.Array
    error: jax.Array
    aux: Any
    num_fun_eval: jax.Array
    converged: jax.Array


def fixed_point_with_aux(fun: Callable, has_aux: bool) -> Callable:
    """``fun`` as a function returning ``(T(x), aux)`` (``aux`` None unless ``has_aux``)."""
    # positional-only: a keyword argument of fun may be called x
    return fun if has_aux else (lambda x, /, *a, **k: (fun(x, *a, **k), None))


def zeros_like_aux(fun_with_aux: Callable, params, *args, **kwargs):
    """Zeros shaped like ``aux`` of ``fun_with_aux(params, ...)`` without calling it: the
    loop carries the state, so ``aux`` needs its final structure from the start."""
    aux_shape = jax.eval_shape(lambda p, a, k: fun_with_aux(p, *a, **k)[1], params, args, kwargs)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)


def _error_dtype(params):
    leaves = jax.tree.leaves(params)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32


@dataclasses.dataclass(eq=False, frozen=True)
class FixedPointIteration(IterativeSolver):
    """Fixed-point iteration for ``x* = fixed_point_fun(x*, *args, **kwargs)``.

    ``run(init_params, *args, **kwargs)``; each step is ``x ← T(x)``, which converges
    when ``T`` is a contraction. Implicit differentiation uses ``T(x*) - x* = 0`` (one
    linear solve with ``I - ∂T/∂x``), unrolled mode differentiates the iterations.

    Attributes:
      fixed_point_fun: ``T(x, *args, **kwargs)`` returning a pytree like ``x`` (or
        ``(T(x), aux)`` when ``has_aux``; ``aux`` is carried, not solved for).
      maxiter: JAXopt's default, 100.
      tol: stop when ``||T(x) - x|| <= tol``; default 1e-10 in float64, 1e-4 in float32
        (JAXopt: 1e-5), see :class:`~hyperopt.solvers.base.IterativeSolver`.
      has_aux: see ``fixed_point_fun``.

    Example (a Sinkhorn-like contraction):
      >>> T = lambda x, theta: jnp.cos(x) + theta
      >>> x = FixedPointIteration(T).run(jnp.zeros(2), jnp.array([0.0, 1.0])).params
      >>> jax.jacobian(lambda t: FixedPointIteration(T).run(jnp.zeros(2), t).params)(t0)
    """

    fixed_point_fun: Callable
    maxiter: int = dataclasses.field(default=100, kw_only=True)  # JAXopt's default
    has_aux: bool = False

    def _fun(self, params, /, *args, **kwargs):
        return fixed_point_with_aux(self.fixed_point_fun, self.has_aux)(params, *args, **kwargs)

    def init_state(self, init_params, *args, **kwargs) -> FixedPointState:
        aux = zeros_like_aux(self._fun, init_params, *args, **kwargs) if self.has_aux else None
        return FixedPointState(iter_num=jnp.asarray(0),
                               error=jnp.asarray(jnp.inf, _error_dtype(init_params)), aux=aux,
                               num_fun_eval=jnp.asarray(0, jnp.int32),
                               converged=jnp.asarray(False))

    def update(self, params, state, *args, **kwargs) -> OptStep:
        next_params, aux = self._fun(params, *args, **kwargs)
        # a stopping test, not differentiated (the norm at an exact zero has NaN cotangents)
        error = jax.lax.stop_gradient(tree_norm(jax.tree.map(jnp.subtract, next_params, params)))
        return OptStep(next_params, FixedPointState(
            iter_num=state.iter_num + 1, error=jnp.asarray(error, state.error.dtype), aux=aux,
            num_fun_eval=state.num_fun_eval + 1, converged=state.converged))

    def optimality_fun(self, params, *args, **kwargs):
        next_params, _ = self._fun(params, *args, **kwargs)
        return jax.tree.map(jnp.subtract, next_params, params)

    def _reference_signature(self):
        return self.fixed_point_fun
