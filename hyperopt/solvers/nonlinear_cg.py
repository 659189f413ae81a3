"""Nonlinear conjugate gradient (Fletcher–Reeves, Polak–Ribière, Hestenes–Stiefel) with
JAXopt's options and state."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt.linesearch._common import (
    NUM_EVAL_DTYPE,
    get_real_dtype,
    tree_add_scalar_mul,
    tree_conj,
    tree_l2_norm,
    tree_scalar_mul,
    tree_single_dtype,
    tree_sub,
    tree_vdot_real,
)
from hyperopt.solvers.base import OptStep
from hyperopt.solvers.searching import SearchingSolver

__all__ = ["NonlinearCG", "NonlinearCGState"]

METHODS = ("fletcher-reeves", "polak-ribiere", "hestenes-stiefel")


class NonlinearCGState(NamedTuple):
    """State of :class:`NonlinearCG` (JAXopt's fields, plus ``converged``)."""

    iter_num: jax.Array
    stepsize: jax.Array
    error: jax.Array
    value: jax.Array
    grad: Any
    descent_direction: Any
    aux: Any = None
    num_fun_eval: Any = 0
    num_grad_eval: Any = 0
    num_linesearch_iter: Any = 0
    converged: Any = False


@dataclasses.dataclass(eq=False, frozen=True)
class NonlinearCG(SearchingSolver):
    """Nonlinear CG for ``min_x fun(x, *args, **kwargs)``; ``run(init_params, *args, **kwargs)``.

    The next direction is ``-conj(g⁺) + β d`` with ``β = max(0, ·)`` from ``method``:
    "polak-ribiere" (default, as SciPy), "fletcher-reeves" or "hestenes-stiefel". As in
    JAXopt, ``state.error`` is the gradient norm at the *previous* iterate, and the
    "backtracking" search runs along ``-grad`` (JAXopt's behaviour, kept for the same
    iterates). Other options as in :class:`~hyperopt.solvers.searching.SearchingSolver`;
    defaults as JAXopt's (``maxiter=100``, ``increase_factor=1.2``; ``tol`` is hyperopt's).
    Supports complex parameters.

    Example:
      >>> w, state = NonlinearCG(fun=f, method="fletcher-reeves").run(w0, data)
    """

    maxiter: int = dataclasses.field(default=100, kw_only=True)
    method: str = "polak-ribiere"
    increase_factor: float = 1.2

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; allowed: {', '.join(map(repr, METHODS))}")

    def init_state(self, init_params, *args, **kwargs) -> NonlinearCGState:
        (value, aux), grad = self._value_and_grad_with_aux(init_params, *args, **kwargs)
        realdtype = get_real_dtype(tree_single_dtype(init_params))
        one = jnp.asarray(1, NUM_EVAL_DTYPE)
        return NonlinearCGState(
            iter_num=jnp.asarray(0), stepsize=jnp.asarray(self.max_stepsize, realdtype),
            error=jnp.asarray(jnp.inf, realdtype), value=value, grad=grad,
            descent_direction=tree_scalar_mul(-1.0, tree_conj(grad)), aux=aux,
            num_fun_eval=one, num_grad_eval=one,
            num_linesearch_iter=jnp.asarray(0, NUM_EVAL_DTYPE), converged=jnp.asarray(False))

    def update(self, params, state, *args, **kwargs) -> OptStep:
        eps = 1e-6
        grad, d = state.grad, state.descent_direction
        ls_direction = None if self.linesearch == "backtracking" else d
        stepsize, new_params, value, new_grad, aux, _, counts = self._step(
            params, state, d, args, kwargs, ls_direction=ls_direction)
        if self.method == "polak-ribiere":
            gtg = tree_vdot_real(grad, grad)
            beta = tree_vdot_real(tree_conj(tree_sub(new_grad, grad)), tree_conj(new_grad))
            beta = beta / jnp.where(gtg >= eps, gtg, eps)
        elif self.method == "fletcher-reeves":
            gtg = tree_vdot_real(grad, grad)
            beta = tree_vdot_real(new_grad, new_grad) / jnp.where(gtg >= eps, gtg, eps)
        else:  # hestenes-stiefel
            diff = tree_sub(new_grad, grad)
            dtg = tree_vdot_real(tree_conj(diff), d)
            beta = tree_vdot_real(tree_conj(diff), tree_conj(new_grad)) / jnp.where(
                dtg >= eps, dtg, eps)
        beta = jax.nn.relu(beta)
        new_d = tree_add_scalar_mul(tree_scalar_mul(-1, tree_conj(new_grad)), beta, d)
        realdtype = state.error.dtype
        new_state = NonlinearCGState(
            iter_num=state.iter_num + 1, stepsize=jnp.asarray(stepsize, realdtype),
            error=jnp.asarray(tree_l2_norm(grad), realdtype), value=value, grad=new_grad,
            descent_direction=new_d, aux=aux, num_fun_eval=counts[0], num_grad_eval=counts[1],
            num_linesearch_iter=counts[2], converged=state.converged)
        if self.verbose:
            jax.debug.print("NonlinearCG iter {i}  error {e:.3e}  value {v}",
                            i=new_state.iter_num, e=new_state.error, v=value)
        return OptStep(new_params, new_state)
