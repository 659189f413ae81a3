"""The one iteration loop shared by every solver.

A solver supplies ``step(params, state) -> (params, state)`` whose ``state`` has the
fields ``iter_num``, ``error`` (optimality error of ``params``) and ``converged``; this
module runs it:

* implicit mode (``unrolled=False``): a ``lax.while_loop`` that stops at ``tol``. It is
  not reverse-differentiable; derivatives come from ``custom_root`` around it.
* unrolled mode (``unrolled=True``): a ``lax.scan`` of exactly ``maxiter`` steps, so that
  ``jax.grad`` differentiates the iterates. Once converged, the iterate is frozen with
  ``jnp.where`` rather than ``lax.cond``: reverse mode through a cond inside a scan
  stores the cond's operands (the data) at every step (541 MiB vs 0.4 MiB for 100 steps
  in ``shared/ANCHORS.md``), while a ``where`` stores only what the step itself needs.
* eager mode (``jit=False``): a plain Python loop that stops at ``tol`` (JAXopt's
  ``jit=False``): every step runs op by op, so prints and ``pdb`` work inside ``fun``.
  Autodiff goes through it like through any Python code. Under an enclosing ``jit`` (the
  values are tracers) it falls back to the compiled loops above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from hyperopt.tree_util import tree_where

__all__ = ["run_loop"]


def run_loop(step: Callable[[Any, Any], tuple[Any, Any]], params, state, *, maxiter: int,
             tol: float, unrolled: bool, verbose: bool = False,
             checkpoint: bool = False, jit: bool = True,
             stop: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """Iterates ``step`` from ``(params, state)`` until ``state.error <= tol`` or ``maxiter``.

    ``checkpoint`` (unrolled mode): rematerialize each step in the backward pass, so that
    reverse mode stores only the loop carry per step (the iterate and the solver state)
    instead of the step's intermediates (e.g. LBFGS's per-sample softmax), at the price of
    recomputing every step once.

    ``jit=False``: a Python loop (see the module docstring).

    ``stop(state)``: an optional boolean (array) that also ends the iterations (e.g. LBFGS's
    ``stop_if_linesearch_fails``); None, or a ``stop`` returning None, never stops early.

    Returns ``(params, state)`` with ``state.converged`` set (when the state has that field).
    """
    def finish(params, state):
        if "converged" in getattr(state, "_fields", ()):
            state = state._replace(converged=state.error <= tol)
        return params, state

    def stopped(state):
        out = None if stop is None else stop(state)
        return False if out is None else out

    def keep_going(state):
        return (bool(state.iter_num < maxiter) and bool(state.error > tol)
                and not bool(stopped(state)))

    if not jit:
        try:
            go = keep_going(state)
        except jax.errors.ConcretizationTypeError:  # traced: use the compiled loops
            go = None
        if go is not None:
            while go:
                params, state = step(params, state)
                if verbose:
                    print(f"iter {int(state.iter_num)}  error {float(state.error):.3e}")
                go = keep_going(state)
            return finish(params, state)
    if checkpoint:
        step = jax.checkpoint(step)
    def report(params, state):
        if verbose:
            jax.debug.print("iter {i}  error {e:.3e}", i=state.iter_num, e=state.error)

    if unrolled:
        def body(carry, _):
            params, state = carry
            new_params, new_state = step(params, state)
            done = (state.error <= tol) | stopped(state)
            params, state = tree_where(done, (params, state), (new_params, new_state))
            report(params, state)
            return (params, state), None

        params, state = jax.lax.scan(body, (params, state), None, length=maxiter)[0]
    else:
        def cond(carry):
            _, state = carry
            return (state.iter_num < maxiter) & (state.error > tol) & ~jnp.asarray(stopped(state))

        def body(carry):
            params, state = step(*carry)
            report(params, state)
            return params, state

        params, state = jax.lax.while_loop(cond, body, (params, state))
    return finish(params, state)
