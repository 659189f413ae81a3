"""Populations: K starting points of one bilevel problem optimized at once.

A population is a leading axis of the outer state: the compiled outer step is
``jax.vmap(Bilevel.outer_step)`` over θ, the optimizer state, the warm starts, the inner
tolerance and the step scale of every member, with the data shared (not batched). The
host-side bookkeeping of each member (rejections, best step, tolerance schedule, stopping
rule) is the single run's own (``bilevel._Loop.advance``), so member ``i`` follows the path of
a single run started at its initialization; a member that has stopped is frozen (its state
no longer changes) while the others go on (:func:`hyperopt.bilevel.fit` with
``population=K``).

Where the members start (:func:`member_inits`):

* problems whose hyperparameters are log-penalties (``θ = log λ``: ridge, logistic, lasso,
  SVM): member ``i`` multiplies every penalty of the problem's start by ``factor_i``, the
  factors log-evenly spaced over ``population_range=(low, high)`` (``np.geomspace``);
* problems whose start is drawn at random (a ``seed`` field, e.g. dataset distillation):
  member ``i`` is the problem's start with ``seed + i``.

Example:
    >>> factors = member_factors(4, (0.01, 100.0))      # [0.01, 0.2154, 4.642, 100.]
    >>> result = fit(bilevel, data, steps=50, population=4)
    >>> [m["best_loss"] for m in result.population]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_RANGE", "best_member", "member_factors", "member_inits", "random_init", "stack",
           "unstack"]

DEFAULT_RANGE = (0.01, 100.0)


def random_init(problem) -> bool:
    """Whether the problem's start is drawn at random (it has a ``seed`` field): its members
    differ by seed, not by a factor."""
    return dataclasses.is_dataclass(problem) and any(f.name == "seed" for f in dataclasses.fields(problem))


def member_factors(size: int, population_range=DEFAULT_RANGE) -> np.ndarray:
    """``size`` factors log-evenly spaced over ``[low, high]`` (one member: 1, the problem's
    own start).

    >>> member_factors(3, (0.1, 10.0))
    array([ 0.1,  1. , 10. ])
    """
    low, high = (float(v) for v in population_range)
    if not (0 < low <= high and np.isfinite(high)):
        raise ValueError(f"population_range={list(population_range)}; allowed: [low, high] with "
                         "0 < low <= high")
    if size == 1:
        return np.ones(1)
    return np.geomspace(low, high, size)


def member_inits(problem, data, size: int, population_range=DEFAULT_RANGE) -> list[Any]:
    """The initial θ of each member (a list of ``size`` pytrees shaped like
    ``problem.init_hparams(data)``)."""
    if size < 1:
        raise ValueError(f"population={size}; allowed: a positive integer")
    if random_init(problem):
        return [dataclasses.replace(problem, seed=problem.seed + i).init_hparams(data) for i in range(size)]
    theta0 = problem.init_hparams(data)
    return [jax.tree.map(lambda t, f=f: t + jnp.log(jnp.asarray(f, t.dtype)), theta0)
            for f in member_factors(size, population_range)]


def stack(trees):
    """Stacks pytrees of equal structure along a new leading (member) axis."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def unstack(tree, size: int):
    """The ``size`` slices of a stacked pytree (host arrays)."""
    tree = jax.device_get(tree)
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(size)]


def best_member(states, rtol: float = 0.0) -> int:
    """The member with the lowest best outer loss, those judged at the final inner tolerance
    first (as a single run picks its best step). Losses within ``rtol`` (relative) of the
    lowest are ties, won by the first such member: members that reached the same optimum
    differ only by the noise of their inner solves (``fit`` passes the final inner tol)."""
    at_final = [i for i in range(len(states)) if states[i].best_at_final] or list(range(len(states)))
    lowest = min(states[i].best_loss for i in at_final)
    margin = rtol * abs(lowest) if np.isfinite(lowest) else 0.0
    return min(i for i in at_final if states[i].best_loss <= lowest + margin)
