"""Line searches with JAXopt's objects and names: backtracking, zoom, Hager–Zhang.

``BacktrackingLineSearch``, ``ZoomLineSearch`` and ``HagerZhangLineSearch`` are JAXopt's
algorithms (ported from JAXopt 0.8.5, Apache-2.0) with the same constructor arguments,
defaults, ``init_state``/``update``/``run`` signatures and state fields; their loop is
:func:`hyperopt.loop.run_loop`. The solvers that search (:class:`~hyperopt.LBFGS`,
:class:`~hyperopt.BFGS`, :class:`~hyperopt.NonlinearCG`) take one of them, or its name, as
``linesearch=``.

Example:
    >>> ls = ZoomLineSearch(fun=f, maxiter=20)
    >>> stepsize, state = ls.run(init_stepsize=1.0, params=x, fun_args=[data])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperopt.linesearch._common import IterativeLineSearch, LineSearchStep, tree_add_scalar_mul
from hyperopt.linesearch.backtracking import BacktrackingLineSearch, BacktrackingLineSearchState
from hyperopt.linesearch.hager_zhang import HagerZhangLineSearch, HagerZhangLineSearchState
from hyperopt.linesearch.zoom import ZoomLineSearch, ZoomLineSearchState
from hyperopt.tree_util import stop_gradient_inexact

__all__ = [
    "BacktrackingLineSearch", "BacktrackingLineSearchState", "HagerZhangLineSearch",
    "HagerZhangLineSearchState", "IterativeLineSearch", "LineSearchStep", "ZoomLineSearch",
    "ZoomLineSearchState", "init_stepsize", "line_step", "setup_linesearch",
]

LINESEARCHES = ("backtracking", "zoom", "hager-zhang")
INIT_STRATEGIES = ("max", "current", "increase")


def setup_linesearch(linesearch, fun, value_and_grad, has_aux, maxlsiter, max_stepsize, jit,
                     unroll, verbose, **options):
    """The line-search object a solver's ``linesearch=`` names (or the object itself)."""
    common = dict(fun=fun, value_and_grad=value_and_grad, has_aux=has_aux, maxiter=maxlsiter,
                  jit=jit, unroll=unroll, verbose=verbose)
    if isinstance(linesearch, IterativeLineSearch):
        return linesearch
    if linesearch == "backtracking":
        return BacktrackingLineSearch(max_stepsize=max_stepsize, **common, **options)
    if linesearch == "zoom":
        return ZoomLineSearch(max_stepsize=max_stepsize, **common)
    if linesearch == "hager-zhang":  # max_stepsize has no effect in Hager-Zhang (as in JAXopt)
        return HagerZhangLineSearch(**common)
    raise ValueError(f"linesearch={linesearch!r}; allowed: {', '.join(map(repr, LINESEARCHES))} "
                     "or a line-search object")


def check_linesearch_options(linesearch, linesearch_init) -> None:
    """Construction-time check of a solver's ``linesearch``/``linesearch_init`` (one line)."""
    if not (isinstance(linesearch, IterativeLineSearch) or linesearch in LINESEARCHES):
        raise ValueError(f"linesearch={linesearch!r}; allowed: "
                         f"{', '.join(map(repr, LINESEARCHES))} or a line-search object")
    if linesearch_init not in INIT_STRATEGIES:
        raise ValueError(f"linesearch_init={linesearch_init!r}; allowed: "
                         f"{', '.join(map(repr, INIT_STRATEGIES))}")


def init_stepsize(strategy, max_stepsize, min_stepsize, increase_factor, stepsize):
    """The first step a search tries, from the previous accepted ``stepsize``."""
    if strategy == "max":
        return max_stepsize
    if strategy == "current":
        return stepsize
    if strategy == "increase":  # restart when the step became too small
        return jnp.where(stepsize <= min_stepsize, max_stepsize, stepsize * increase_factor)
    raise ValueError(f"linesearch_init={strategy!r}; allowed: "
                     f"{', '.join(map(repr, INIT_STRATEGIES))}")


def line_step(linesearch_solver, value_and_grad_with_aux, init_step, params, value, grad,
              descent_direction, args, kwargs, *, differentiable: bool):
    """One searched step ``params + stepsize * descent_direction`` of a solver.

    Returns ``(stepsize, new_params, new_value, new_grad, new_aux, ls_state)``.

    ``differentiable`` (unrolled mode): the search runs on ``stop_gradient``-ed inputs, so
    the chosen step is locally constant in the hyperparameters (JAXopt differentiates the
    search, whose derivatives are NaN where it switches branches), and the new point, value
    and gradient are recomputed from differentiable inputs. Otherwise (implicit mode, where
    the iterations are never differentiated) the search's own point, value and gradient are
    used: the same arithmetic and function-evaluation counts as JAXopt.
    """
    if differentiable:
        sg_inputs = stop_gradient_inexact((params, value, grad, descent_direction, args, kwargs))
        stepsize, ls_state = linesearch_solver.run(jax.lax.stop_gradient(init_step),
                                                   *sg_inputs[:4], fun_args=sg_inputs[4],
                                                   fun_kwargs=sg_inputs[5])
        stepsize = jax.lax.stop_gradient(stepsize)
        new_params = tree_add_scalar_mul(params, stepsize, descent_direction)
        (new_value, new_aux), new_grad = value_and_grad_with_aux(new_params, *args, **kwargs)
        return stepsize, new_params, new_value, new_grad, new_aux, ls_state
    stepsize, ls_state = linesearch_solver.run(init_step, params, value, grad, descent_direction,
                                               fun_args=args, fun_kwargs=kwargs)
    return stepsize, ls_state.params, ls_state.value, ls_state.grad, ls_state.aux, ls_state
