"""Proximal operators and projections, with JAXopt's names and signatures.

A proximal operator has the signature ``prox(x, hyperparams=None, scaling=1.0)`` and returns

    argmin_y  0.5 ||y - x||² + scaling · g(y, hyperparams),

a projection has the signature ``projection(x, hyperparams=None)`` and returns the closest
point of a convex set. ``x`` may be any pytree of arrays. Proximal solvers use these in the
fixed point map ``T(x, θ) = prox(x - η ∇f(x, θ), θ, η)``, and implicit differentiation
differentiates ``T`` with respect to both ``x`` and ``θ``; every function here is therefore
written with ``max``/``sign``/``sort`` rather than branches, so that ``jax.jacfwd`` and
``jax.jacrev`` give the exact Jacobian everywhere except on the kinks (a set of measure zero),
under ``jit`` and ``vmap``.

A hyperparameter such as ``l1reg`` is either one value for the whole pytree (a scalar, or an
array that broadcasts against every leaf) or a pytree with the structure of ``x`` (one value
per leaf, e.g. per-feature weights).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = [
    "projection_box",
    "projection_l2_ball",
    "projection_non_negative",
    "projection_simplex",
    "prox_elastic_net",
    "prox_lasso",
    "prox_non_negative_lasso",
    "prox_non_negative_ridge",
    "prox_none",
    "prox_ridge",
]


def _like(hyperparam, x, default: float = 1.0):
    """A hyperparameter as a pytree with the structure of ``x`` (broadcast if it is one value)."""
    if hyperparam is None:
        hyperparam = default
    x_def = jax.tree.structure(x)
    hp_def = jax.tree.structure(hyperparam)
    if hp_def == x_def:
        return hyperparam
    if jax.tree_util.treedef_is_leaf(hp_def):
        return jax.tree.map(lambda _: hyperparam, x)
    raise ValueError(
        f"hyperparameter must be one value or a pytree like x; got structure {hp_def} "
        f"for x with structure {x_def}")


def _soft_threshold(x, threshold):
    """``sign(x) · max(|x| - threshold, 0)``; outside the dead zone d/dx = 1, d/dt = -sign(x)."""
    return jnp.sign(x) * jax.nn.relu(jnp.abs(x) - threshold)


# ---------------------------------------------------------------------------------------
# Proximal operators
# ---------------------------------------------------------------------------------------


def prox_none(x: Any, hyperparams: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g = 0``: the identity.

    Example:
      >>> prox_none(jnp.array([1.0, -2.0])).tolist()
      [1.0, -2.0]
    """
    del hyperparams, scaling
    return x


def prox_lasso(x: Any, l1reg: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g(y) = Σᵢ l1reg_i |y_i|`` (soft thresholding).

    ``prox(x)_i = sign(x_i) · max(|x_i| - scaling · l1reg_i, 0)``.

    Args:
      x: pytree of arrays.
      l1reg: non-negative weight (default 1.0): a scalar, an array broadcastable to the leaves
        (per-feature weights, "weighted lasso"), or a pytree like ``x``.
      scaling: step size multiplying ``g``.

    Returns:
      A pytree like ``x``.

    Example:
      >>> prox_lasso(jnp.array([2.0, -3.0, 0.5]), 1.0).tolist()
      [1.0, -2.0, 0.0]
      >>> prox_lasso(jnp.array([2.0, -3.0]), jnp.array([0.5, 1.0]), scaling=2.0).tolist()
      [1.0, -1.0]
    """
    l1reg = _like(l1reg, x)
    return jax.tree.map(lambda xi, li: _soft_threshold(xi, scaling * li), x, l1reg)


def prox_non_negative_lasso(x: Any, l1reg: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g(y) = Σᵢ l1reg_i y_i + indicator(y ≥ 0)``.

    ``prox(x)_i = max(x_i - scaling · l1reg_i, 0)``.

    Args:
      x: pytree of arrays.
      l1reg: weight (default 1.0): scalar, broadcastable array, or pytree like ``x``.
      scaling: step size multiplying ``g``.

    Example:
      >>> prox_non_negative_lasso(jnp.array([2.0, -3.0, 0.5]), 1.0).tolist()
      [1.0, 0.0, 0.0]
    """
    l1reg = _like(l1reg, x)
    return jax.tree.map(lambda xi, li: jax.nn.relu(xi - scaling * li), x, l1reg)


def prox_ridge(x: Any, l2reg: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g(y) = 0.5 Σᵢ l2reg_i y_i²``.

    ``prox(x)_i = x_i / (1 + scaling · l2reg_i)``.

    Args:
      x: pytree of arrays.
      l2reg: weight (default 1.0): scalar, broadcastable array, or pytree like ``x``.
      scaling: step size multiplying ``g``.

    Example:
      >>> prox_ridge(jnp.array([2.0, -4.0]), 1.0).tolist()
      [1.0, -2.0]
    """
    l2reg = _like(l2reg, x)
    return jax.tree.map(lambda xi, li: xi / (1.0 + scaling * li), x, l2reg)


def prox_non_negative_ridge(x: Any, l2reg: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g(y) = 0.5 Σᵢ l2reg_i y_i² + indicator(y ≥ 0)``.

    ``prox(x)_i = max(x_i, 0) / (1 + scaling · l2reg_i)``.

    Args:
      x: pytree of arrays.
      l2reg: weight (default 1.0): scalar, broadcastable array, or pytree like ``x``.
      scaling: step size multiplying ``g``.

    Example:
      >>> prox_non_negative_ridge(jnp.array([2.0, -4.0]), 1.0).tolist()
      [1.0, 0.0]
    """
    l2reg = _like(l2reg, x)
    return jax.tree.map(lambda xi, li: jax.nn.relu(xi) / (1.0 + scaling * li), x, l2reg)


def prox_elastic_net(x: Any, hyperparams: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g(y) = Σᵢ l1reg_i |y_i| + 0.5 Σᵢ l2reg_i y_i²``.

    ``prox(x)_i = sign(x_i) · max(|x_i| - scaling · l1reg_i, 0) / (1 + scaling · l2reg_i)``.

    Args:
      x: pytree of arrays.
      hyperparams: ``(l1reg, l2reg)`` (default ``(1.0, 1.0)``); each a scalar, a broadcastable
        array, or a pytree like ``x``.
      scaling: step size multiplying ``g``.

    Example:
      >>> prox_elastic_net(jnp.array([3.0, 0.5]), (1.0, 1.0)).tolist()
      [1.0, 0.0]
    """
    l1reg, l2reg = (1.0, 1.0) if hyperparams is None else hyperparams
    l1reg, l2reg = _like(l1reg, x), _like(l2reg, x)
    return jax.tree.map(
        lambda xi, l1, l2: _soft_threshold(xi, scaling * l1) / (1.0 + scaling * l2),
        x, l1reg, l2reg)


# ---------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------


def projection_non_negative(x: Any, hyperparams: Any = None) -> Any:
    """Projection onto the non-negative orthant: ``max(x, 0)`` leafwise.

    Example:
      >>> projection_non_negative(jnp.array([2.0, -3.0])).tolist()
      [2.0, 0.0]
    """
    del hyperparams
    return jax.tree.map(jax.nn.relu, x)


def projection_box(x: Any, hyperparams: Any) -> Any:
    """Projection onto the box ``{y : lower ≤ y ≤ upper}``: ``min(max(x, lower), upper)``.

    Args:
      x: pytree of arrays.
      hyperparams: ``(lower, upper)``, each a scalar, a broadcastable array, or a pytree like
        ``x``; ``lower ≤ upper``. The Jacobian w.r.t. ``lower`` (``upper``) is 1 where that
        bound is active.

    Example:
      >>> projection_box(jnp.array([-2.0, 0.5, 3.0]), (0.0, 1.0)).tolist()
      [0.0, 0.5, 1.0]
    """
    lower, upper = hyperparams
    lower, upper = _like(lower, x), _like(upper, x)
    return jax.tree.map(lambda xi, lo, hi: jnp.minimum(jnp.maximum(xi, lo), hi), x, lower, upper)


def projection_l2_ball(x: Any, radius: Any = 1.0) -> Any:
    """Projection onto ``{y : ||y||₂ ≤ radius}``, the norm taken over the whole pytree.

    ``P(x) = x · radius / max(||x||₂, radius)``. (JAXopt calls ``radius`` ``max_norm``.)

    Args:
      x: pytree of arrays.
      radius: positive scalar.

    Example:
      >>> projection_l2_ball(jnp.array([6.0, 8.0]), 5.0).tolist()
      [3.0, 4.0]
      >>> p = projection_l2_ball({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, 2.5)
      >>> p["a"].tolist(), p["b"].tolist()
      ([1.5], [2.0])
    """
    if radius is None:
        radius = 1.0
    sq_norm = sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(x))
    # sqrt(max(||x||², r²)) = max(||x||, r) without the NaN gradient of the norm at x = 0.
    scale = radius / jnp.sqrt(jnp.maximum(sq_norm, radius**2))
    return jax.tree.map(lambda leaf: scale * leaf, x)


def projection_simplex(x: Any, value: Any = 1.0) -> Any:
    """Projection onto the simplex ``{y : y ≥ 0, Σ y = value}`` of the flattened pytree.

    ``P(x) = max(x - τ, 0)`` with ``τ`` such that the result sums to ``value`` (exact,
    sort-based, O(n log n)). The whole pytree (or a 2-D array) is one vector; to project each
    row of a matrix use ``jax.vmap(projection_simplex)(X)``. Autodiff through the sort gives
    the exact Jacobian away from ties: on the support ``S``, ``∂P/∂x = I - 11ᵀ/|S|`` and
    ``∂P/∂value = 1/|S|``.

    Args:
      x: pytree of arrays.
      value: positive scalar, the sum of the result (default 1.0).

    Example:
      >>> projection_simplex(jnp.array([2.0, 1.0, -1.0]), 1.0).tolist()
      [1.0, 0.0, 0.0]
      >>> projection_simplex(jnp.array([0.5, 0.25, -1.0]), 1.0).tolist()
      [0.625, 0.375, 0.0]
    """
    if value is None:
        value = 1.0
    flat, unravel = ravel_pytree(x)
    u = jnp.sort(flat)[::-1]
    k = jnp.arange(1, flat.size + 1, dtype=flat.dtype)
    # The support is the top-k entries for the largest k with u_k > (Σ_{j≤k} u_j - value) / k;
    # this condition holds exactly on a prefix of the sorted vector.
    in_support = (u - (jnp.cumsum(u) - value) / k > 0).astype(flat.dtype)
    support_size = jnp.maximum(jnp.sum(in_support), 1.0)
    tau = (jnp.sum(in_support * u) - value) / support_size
    return unravel(jax.nn.relu(flat - tau))
