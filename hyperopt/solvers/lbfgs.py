"""Limited-memory BFGS with JAXopt's options, line searches and state.

The algorithm follows JAXopt 0.8.5's ``LBFGS`` (Nocedal & Wright, Algorithm 7.5; complex
variables as in Sorber et al. 2012), so a migrating user gets the same iterates. Two
differences, both for accurate hypergradients: ``tol`` defaults to 1e-10 in float64 (JAXopt:
1e-3), and in unrolled mode the line search and the quasi-Newton history are treated as
constants (JAXopt differentiates them; its unrolled derivatives can be NaN).
"""

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

__all__ = ["LBFGS", "LbfgsState", "inv_hessian_product"]

_sg = jax.lax.stop_gradient


def _select(tree_history, i):
    return jax.tree.map(lambda a: a[i, ...], tree_history)


def inv_hessian_product(pytree, s_history, y_history, rho_history, gamma=1.0, start: int = 0,
                        diag=None):
    """``H @ pytree`` for the L-BFGS inverse-Hessian approximation ``H`` (two-loop recursion).

    ``s_history``/``y_history``: pytrees like ``pytree`` whose leaves have a leading axis
    ``(history_size, ...)`` (a circular buffer whose oldest entry is ``start``);
    ``rho_history[k] = 1 / <s[k], y[k]>`` (0 marks an empty or skipped entry); ``gamma``
    scales the initial matrix ``gamma * I`` (``gamma * diag⁻¹`` when ``diag``, a positive
    pytree like ``pytree``, is given). Nocedal & Wright, Algorithm 7.4.

    Example:
      >>> d = inv_hessian_product(-g, s_hist, y_hist, rho_hist, gamma, start=k % m)
    """
    history_size = rho_history.shape[0]
    indices = (start + jnp.arange(history_size)) % history_size

    def body_right(r, i):
        alpha = rho_history[i] * tree_vdot_real(_select(s_history, i), r)
        return tree_add_scalar_mul(r, -alpha, _select(y_history, i)), alpha

    r, alpha = jax.lax.scan(body_right, pytree, indices, reverse=True)
    r = tree_scalar_mul(gamma, r)
    if diag is not None:
        r = jax.tree.map(jnp.divide, r, diag)

    def body_left(r, i_alpha):
        i, alpha = i_alpha
        beta = rho_history[i] * tree_vdot_real(_select(y_history, i), r)
        return tree_add_scalar_mul(r, alpha - beta, _select(s_history, i)), beta

    r, _ = jax.lax.scan(body_left, r, (indices, alpha))
    return r


def _compute_gamma(s_history, y_history, last, diag=None):
    num = sum(tree_vdot_real(s[last], y[last]) for s, y in
              zip(jax.tree.leaves(s_history), jax.tree.leaves(y_history), strict=True))
    if diag is None:
        denom = sum(tree_vdot_real(y[last], y[last]) for y in jax.tree.leaves(y_history))
    else:  # <y, D⁻¹ y>: the scaled initial matrix gamma D⁻¹ matches the newest pair's curvature
        denom = sum(tree_vdot_real(y[last], y[last] / d) for y, d in
                    zip(jax.tree.leaves(y_history), jax.tree.leaves(diag), strict=True))
    return jnp.where(denom > 0, num / jnp.where(denom > 0, denom, 1.0), 1.0)


def _init_history(pytree, history_size):
    return jax.tree.map(lambda leaf: jnp.zeros((history_size,) + jnp.shape(leaf),
                                               jnp.asarray(leaf).dtype), pytree)


def _update_history(history, new, last):
    return jax.tree.map(lambda h, v: h.at[last].set(v), history, new)


class LbfgsState(NamedTuple):
    """State of :class:`LBFGS` (JAXopt's fields, plus ``converged``).

    ``s_history``/``y_history``: pytrees like the parameters with a leading
    ``(history_size,)`` axis; ``rho_history``: ``(history_size,)``, ``1/<s, y>`` (0: empty);
    ``gamma``: scale of the initial inverse Hessian; ``num_*``: evaluation counts.
    """

    iter_num: jax.Array
    value: jax.Array
    grad: Any
    stepsize: jax.Array
    error: jax.Array
    s_history: Any
    y_history: Any
    rho_history: jax.Array
    gamma: jax.Array
    aux: Any = None
    failed_linesearch: Any = False
    num_fun_eval: Any = 0
    num_grad_eval: Any = 0
    num_linesearch_iter: Any = 0
    converged: Any = False
    diag: Any = None


@dataclasses.dataclass(eq=False, frozen=True)
class LBFGS(SearchingSolver):
    """L-BFGS for ``min_x fun(x, *args, **kwargs)``; ``run(init_params, *args, **kwargs)``.

    JAXopt's constructor arguments and defaults (``tol`` excepted, see the module); the
    line-search options (``fun``, ``value_and_grad``, ``has_aux``, ``stepsize``,
    ``linesearch``, ``linesearch_init``, ``maxls``, ``increase_factor``, ``max_stepsize``,
    ``min_stepsize``) are described in :class:`~hyperopt.solvers.searching.SearchingSolver`.

    Attributes:
      history_size: number of stored ``(s, y)`` pairs.
      use_gamma: scale the initial inverse Hessian by ``<s, y>/<y, y>`` (N&W eq. 7.20).
      stop_if_linesearch_fails: end the iterations after a failed line search (default
        False: keep iterating, as JAXopt).
      precondition: optional ``precondition(params, *args, **kwargs)`` -> a positive pytree
        like ``params``, about the diagonal of ``fun``'s Hessian (hyperopt's extension;
        JAXopt has none). Evaluated once per ``run``, at the start; the initial inverse
        Hessian of each two-loop recursion is then ``gamma · diag⁻¹`` (``gamma = <s, y> /
        <y, diag⁻¹ y>``) instead of ``gamma · I``: penalties spread over decades (one λ
        per feature) no longer set the iteration count. ``None`` (default): JAXopt's
        iterates.

    Supports complex parameters. Implicit differentiation uses ``∇ₓ fun(x*) = 0``
    (linear solve: CG by default).

    Example:
      >>> solver = LBFGS(fun=logistic_objective, maxiter=200, linesearch="zoom")
      >>> w, state = solver.run(jnp.zeros(p), l2reg, X, y)
    """

    history_size: int = 10
    use_gamma: bool = True
    stop_if_linesearch_fails: bool = False
    precondition: Any = None

    def _stop_early(self, state):
        return state.failed_linesearch if self.stop_if_linesearch_fails else None

    def init_state(self, init_params, *args, **kwargs) -> LbfgsState:
        if isinstance(init_params, OptStep):  # warm start: keep the curvature history
            prev = init_params.state
            kept = dict(s_history=prev.s_history, y_history=prev.y_history,
                        rho_history=prev.rho_history, gamma=prev.gamma,
                        iter_num=prev.iter_num, stepsize=prev.stepsize)
            init_params = init_params.params
            realdtype = get_real_dtype(tree_single_dtype(init_params))
        else:
            realdtype = get_real_dtype(tree_single_dtype(init_params))
            kept = dict(s_history=_init_history(init_params, self.history_size),
                        y_history=_init_history(init_params, self.history_size),
                        rho_history=jnp.zeros(self.history_size, realdtype),
                        gamma=jnp.asarray(1.0, realdtype), iter_num=jnp.asarray(0),
                        stepsize=jnp.asarray(self.max_stepsize, realdtype))
        (value, aux), grad = self._value_and_grad_with_aux(init_params, *args, **kwargs)
        one = jnp.asarray(1, NUM_EVAL_DTYPE)
        if self.precondition is not None:
            kept["diag"] = _sg(self.precondition(init_params, *args, **kwargs))
        return LbfgsState(value=value, grad=grad, error=jnp.asarray(jnp.inf, realdtype), aux=aux,
                          failed_linesearch=jnp.asarray(False), num_fun_eval=one,
                          num_grad_eval=one, num_linesearch_iter=jnp.asarray(0, NUM_EVAL_DTYPE),
                          converged=jnp.asarray(False), **kept)

    def update(self, params, state, *args, **kwargs) -> OptStep:
        if isinstance(params, OptStep):
            params = params.params
        realdtype = state.rho_history.dtype
        start = state.iter_num % self.history_size if self.history_size else 0
        grad = state.grad
        descent_direction = tree_scalar_mul(-1.0, tree_conj(grad))
        s_history, y_history, rho_history = state.s_history, state.y_history, state.rho_history
        if self.history_size:
            # The quasi-Newton matrix is a constant for unrolled derivatives: the fixed
            # point's derivative does not depend on it, while differentiating it goes
            # through 1/<y, s> of rounding-level pairs near convergence.
            descent_direction = inv_hessian_product(
                descent_direction, *_sg((s_history, y_history, rho_history, state.gamma)),
                start=start, diag=state.diag)
        elif state.diag is not None:
            descent_direction = jax.tree.map(jnp.divide, descent_direction, state.diag)

        new_stepsize, new_params, new_value, new_grad, new_aux, failed, counts = self._step(
            params, state, descent_direction, args, kwargs)
        num_fun_eval, num_grad_eval, num_ls_iter = counts

        s = tree_sub(new_params, params)
        y = tree_conj(tree_sub(new_grad, grad))
        vdot_sy = tree_vdot_real(s, y)
        rho = jnp.where(vdot_sy == 0, 0, 1.0 / jnp.where(vdot_sy == 0, 1.0, vdot_sy))
        if self.history_size:
            s_history = _update_history(s_history, s, start)
            y_history = _update_history(y_history, y, start)
            rho_history = _update_history(rho_history, rho, start)
        if self.history_size and self.use_gamma:
            gamma = _compute_gamma(s_history, y_history, start, state.diag)
        else:
            gamma = jnp.asarray(1.0, realdtype)
        new_state = LbfgsState(
            iter_num=state.iter_num + 1, value=new_value, grad=new_grad,
            stepsize=jnp.asarray(new_stepsize, realdtype),
            error=jnp.asarray(tree_l2_norm(new_grad), realdtype), s_history=s_history,
            y_history=y_history, rho_history=jnp.asarray(rho_history, realdtype),
            gamma=jnp.asarray(gamma, realdtype), aux=new_aux, failed_linesearch=failed,
            num_fun_eval=num_fun_eval, num_grad_eval=num_grad_eval,
            num_linesearch_iter=num_ls_iter, converged=state.converged, diag=state.diag)
        if self.verbose:
            jax.debug.print("LBFGS iter {i}  error {e:.3e}  value {v}  stepsize {s}",
                            i=new_state.iter_num, e=new_state.error, v=new_value, s=new_stepsize)
        return OptStep(new_params, new_state)
