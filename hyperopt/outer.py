"""The default outer optimizer: L-BFGS on the hyperparameters, backtracking across outer steps.

Each outer step costs an inner solve plus a hypergradient, so a line search that
evaluates trial points inside one step would multiply that cost. Here the trial *is* the
next outer step: the optimizer proposes ``θ_base + step``, the loop solves there and hands
back the outer loss and hypergradient, and the optimizer then accepts the point (Armijo
sufficient decrease ``f <= f_base + c1 <g_base, θ - θ_base>``) and takes a new L-BFGS step
from it, or rejects it and proposes a shorter step from ``θ_base`` (at most half the
rejected one, shorter if a quadratic fit along the rejected step says so). A rejected
trial still teaches the curvature: its gradient pair enters the L-BFGS memory.

For one or a few hyperparameters this converges (superlinearly near the optimum: on one
λ the L-BFGS step is the secant step on the hypergradient) where a fixed-step Adam keeps
oscillating around it. Steps are capped at ``max_step`` in every coordinate of θ (for
``θ = log λ``, ``max_step=1`` changes λ by at most a factor e per step), which keeps a
first step that knows no curvature from leaving the useful range, and by a radius that
halves (at least) on a rejection and doubles when an accepted step used all of it, so
that at a kink of the outer loss the steps shrink rather than cycle.

It is an optax ``GradientTransformationExtraArgs`` whose ``update`` needs the outer loss
at ``params`` as ``value=`` (:func:`hyperopt.bilevel.fit` passes it; any other optax
optimizer keeps working there too).

Example:
    >>> opt = lbfgs_backtracking()
    >>> state = opt.init(theta)
    >>> updates, state = opt.update(grad, state, theta, value=loss)
    >>> theta = optax.apply_updates(theta, updates)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

__all__ = ["LBFGSBacktrackingState", "lbfgs_backtracking"]


class LBFGSBacktrackingState(NamedTuple):
    """State of :func:`lbfgs_backtracking` (flat vectors of the hyperparameters' size ``d``).

    ``base``/``base_value``/``base_grad``: the last accepted point, its outer loss and
    hypergradient; ``s``/``y``/``rho``: the L-BFGS memory ``(m, d)``, ``(m, d)``, ``(m,)``
    (``rho = 0`` marks an empty slot), ``head`` the slot written next; ``radius``: the
    largest step allowed next; ``started``: a base exists; ``accepted``/``rejected``:
    trials accepted in total, rejected in a row.
    """

    base: jax.Array
    base_value: jax.Array
    base_grad: jax.Array
    s: jax.Array
    y: jax.Array
    rho: jax.Array
    head: jax.Array
    radius: jax.Array
    started: jax.Array
    accepted: jax.Array
    rejected: jax.Array


def lbfgs_backtracking(learning_rate: float = 1.0, max_step: float = 1.0, memory_size: int = 10,
                       c1: float = 1e-4) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with an Armijo backtracking line search whose trials are the outer steps.

    Args:
      learning_rate: multiplies the L-BFGS step (1: the quasi-Newton step itself).
      max_step: largest change of any coordinate of θ in one step; the first step (no
        curvature known yet) has exactly this size.
      memory_size: number of curvature pairs kept.
      c1: Armijo constant of the sufficient-decrease test.

    Returns:
      An optax ``GradientTransformationExtraArgs``; ``update(grad, state, params, value=f)``.
    """
    for name, value in (("learning_rate", learning_rate), ("max_step", max_step)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name}={value!r}; allowed: a positive number")
    if not (isinstance(memory_size, int) and memory_size > 0):
        raise ValueError(f"memory_size={memory_size!r}; allowed: a positive integer")
    if not 0 < c1 < 1:
        raise ValueError(f"c1={c1!r}; allowed: a number in (0, 1)")

    def init(params) -> LBFGSBacktrackingState:
        flat = ravel_pytree(params)[0]
        d, dtype = flat.size, flat.dtype
        zero = jnp.zeros((), dtype)
        return LBFGSBacktrackingState(
            base=flat, base_value=zero, base_grad=jnp.zeros_like(flat),
            s=jnp.zeros((memory_size, d), dtype), y=jnp.zeros((memory_size, d), dtype),
            rho=jnp.zeros(memory_size, dtype), head=jnp.zeros((), jnp.int32),
            radius=jnp.asarray(max_step, dtype), started=jnp.zeros((), bool),
            accepted=jnp.zeros((), jnp.int32), rejected=jnp.zeros((), jnp.int32))

    def update(updates, state: LBFGSBacktrackingState, params=None, *, value=None, **extra):
        if params is None or value is None:
            raise ValueError("lbfgs_backtracking.update needs params and value= (the outer loss "
                             "at params)")
        x, unravel = ravel_pytree(params)
        g = ravel_pytree(updates)[0].astype(x.dtype)
        f = jnp.asarray(value, x.dtype)
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))

        s = x - state.base
        slope = jnp.vdot(state.base_grad, s)
        slack = 10 * jnp.finfo(x.dtype).eps * jnp.abs(state.base_value)  # rounding near the optimum
        accept = finite & (~state.started | (f <= state.base_value + c1 * slope + slack))

        # Every evaluated pair (s, y) with positive curvature enters the memory, rejected or not.
        yv = g - state.base_grad
        sy = jnp.vdot(s, yv)
        good_pair = state.started & finite & (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(yv))
        mem = _push(state, s, yv, sy, good_pair, memory_size)

        base = jnp.where(accept, x, state.base)
        base_value = jnp.where(accept, f, state.base_value)
        base_grad = jnp.where(accept, g, state.base_grad)

        direction = -_two_loop(base_grad, *mem, memory_size)
        descent = jnp.vdot(direction, base_grad) < 0
        steepest = -base_grad * (max_step / jnp.maximum(jnp.max(jnp.abs(base_grad)), 1e-300))
        empty = jnp.all(mem[2] == 0)
        direction = jnp.where(descent & ~empty, direction, steepest)
        step = learning_rate * direction

        # The step is capped by a radius: after a rejection, at most half the rejected step
        # (less when a quadratic through f_base, the slope and f puts its minimum nearer,
        # never below a tenth); after an acceptance of a step that hit the radius, twice
        # that. At a kink of the outer loss (a lasso's support changing) the steps then
        # shrink instead of cycling across it.
        curvature = f - state.base_value - slope
        quadratic = jnp.where(curvature > 0, -slope / (2 * curvature), 0.1)
        shrink = jnp.clip(jnp.where(finite, quadratic, 0.1), 0.1, 0.5)
        s_size = jnp.max(jnp.abs(s))
        hit = s_size >= 0.99 * state.radius
        radius = jnp.where(accept, jnp.where(hit, 2 * state.radius, state.radius), shrink * s_size)
        radius = jnp.minimum(jnp.where(state.started, radius, max_step), max_step)
        size = jnp.max(jnp.abs(step))
        step = step * jnp.where(size > radius, radius / jnp.maximum(size, 1e-300), 1.0)
        step = jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)

        new_state = LBFGSBacktrackingState(
            base=base, base_value=base_value, base_grad=base_grad, s=mem[0], y=mem[1],
            rho=mem[2], head=mem[3], radius=radius, started=jnp.ones((), bool),
            accepted=state.accepted + accept.astype(jnp.int32),
            rejected=jnp.where(accept, 0, state.rejected + 1))
        return unravel(base + step - x), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _push(state: LBFGSBacktrackingState, s, y, sy, keep, m: int):
    """The memory with ``(s, y)`` written at ``head`` when ``keep``."""
    S = jnp.where(keep, state.s.at[state.head].set(s), state.s)
    Y = jnp.where(keep, state.y.at[state.head].set(y), state.y)
    rho = jnp.where(keep, state.rho.at[state.head].set(1.0 / jnp.where(keep, sy, 1.0)), state.rho)
    head = jnp.where(keep, (state.head + 1) % m, state.head)
    return S, Y, rho, head


def _two_loop(g, S, Y, rho, head, m: int) -> Any:
    """``H g`` for the L-BFGS inverse-Hessian estimate ``H`` (empty slots have ``rho = 0``)."""
    order = (head - 1 - jnp.arange(m)) % m  # newest first

    def backward(q, i):
        a = rho[i] * jnp.vdot(S[i], q)
        return q - a * Y[i], a

    q, alphas = jax.lax.scan(backward, g, order)
    newest = order[0]
    yy = jnp.vdot(Y[newest], Y[newest])
    gamma = jnp.where((rho[newest] > 0) & (yy > 0), 1.0 / jnp.where(yy > 0, rho[newest] * yy, 1.0), 1.0)
    r = gamma * q

    def forward(r, inputs):
        i, a = inputs
        b = rho[i] * jnp.vdot(Y[i], r)
        return r + (a - b) * S[i], None

    r, _ = jax.lax.scan(forward, r, (order[::-1], alphas[::-1]))
    return r
