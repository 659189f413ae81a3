"""BFGS (dense inverse-Hessian approximation) with JAXopt's options and state."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from hyperopt.linesearch._common import (
    NUM_EVAL_DTYPE,
    tree_l2_norm,
    tree_single_dtype,
    tree_sub,
)
from hyperopt.solvers.base import OptStep
from hyperopt.solvers.searching import SearchingSolver

__all__ = ["BFGS", "BfgsState"]

_dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)


class BfgsState(NamedTuple):
    """State of :class:`BFGS` (JAXopt's fields, plus ``converged``); ``H``: ``(n, n)``
    inverse-Hessian approximation over the flattened parameters."""

    iter_num: jax.Array
    value: jax.Array
    grad: Any
    stepsize: jax.Array
    error: jax.Array
    H: jax.Array
    aux: Any = None
    num_fun_eval: Any = 0
    num_grad_eval: Any = 0
    num_linesearch_iter: Any = 0
    converged: Any = False


@dataclasses.dataclass(eq=False, frozen=True)
class BFGS(SearchingSolver):
    """BFGS for ``min_x fun(x, *args, **kwargs)``; ``run(init_params, *args, **kwargs)``.

    Nocedal & Wright, Algorithm 6.1, as in JAXopt: the inverse Hessian ``H`` is dense
    (``n²`` memory; use :class:`~hyperopt.LBFGS` for large ``n``). Options as in
    :class:`~hyperopt.solvers.searching.SearchingSolver`; implicit differentiation uses
    ``∇ₓ fun(x*) = 0``. ``tol`` defaults to hyperopt's (1e-10 in float64; JAXopt: 1e-3).

    Example:
      >>> w, state = BFGS(fun=f, linesearch="zoom").run(jnp.zeros(5), data)
    """

    def init_state(self, init_params, *args, **kwargs) -> BfgsState:
        (value, aux), grad = self._value_and_grad_with_aux(init_params, *args, **kwargs)
        dtype = tree_single_dtype(init_params)
        n = ravel_pytree(init_params)[0].size
        one = jnp.asarray(1, NUM_EVAL_DTYPE)
        return BfgsState(iter_num=jnp.asarray(0), value=value, grad=grad,
                         stepsize=jnp.asarray(self.max_stepsize, dtype),
                         error=jnp.asarray(jnp.inf, dtype), H=jnp.eye(n, dtype=dtype), aux=aux,
                         num_fun_eval=one, num_grad_eval=one,
                         num_linesearch_iter=jnp.asarray(0, NUM_EVAL_DTYPE),
                         converged=jnp.asarray(False))

    def update(self, params, state, *args, **kwargs) -> OptStep:
        flat_grad, unravel = ravel_pytree(state.grad)
        # H is a constant for unrolled derivatives (as LBFGS's history): the fixed point's
        # derivative does not depend on it.
        H = jax.lax.stop_gradient(state.H)
        descent_direction = unravel(-_dot(H, flat_grad))
        stepsize, new_params, value, grad, aux, _, counts = self._step(
            params, state, descent_direction, args, kwargs)
        flat_s = ravel_pytree(tree_sub(new_params, params))[0]
        flat_y = ravel_pytree(tree_sub(grad, state.grad))[0]
        rho = jnp.reciprocal(_dot(flat_y, flat_s))
        w = jnp.eye(flat_grad.size, dtype=rho.dtype) - rho * jnp.outer(flat_s, flat_y)
        new_H = jnp.einsum("ij,jk,lk", w, H, w, precision=jax.lax.Precision.HIGHEST)
        new_H = new_H + rho * jnp.outer(flat_s, flat_s)
        new_H = jnp.where(jnp.isfinite(rho), new_H, H)
        new_state = BfgsState(
            iter_num=state.iter_num + 1, value=value, grad=grad,
            stepsize=jnp.asarray(stepsize, state.stepsize.dtype),
            error=jnp.asarray(tree_l2_norm(grad), state.error.dtype),
            H=new_H.astype(state.H.dtype), aux=aux, num_fun_eval=counts[0],
            num_grad_eval=counts[1], num_linesearch_iter=counts[2], converged=state.converged)
        if self.verbose:
            jax.debug.print("BFGS iter {i}  error {e:.3e}  value {v}", i=new_state.iter_num,
                            e=new_state.error, v=value)
        return OptStep(new_params, new_state)
