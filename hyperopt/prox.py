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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# The projections hyperopt.prox exported before hyperopt.projection existed (same objects).
from hyperopt.projection import (  # noqa: E402,F401
    _like,
    projection_box,
    projection_l2_ball,
    projection_non_negative,
    projection_simplex,
)

__all__ = [
    "projection_box",
    "projection_l2_ball",
    "projection_non_negative",
    "projection_simplex",
    "make_prox_from_projection",
    "prox_elastic_net",
    "prox_group_lasso",
    "prox_lasso",
    "prox_non_negative_lasso",
    "prox_non_negative_ridge",
    "prox_none",
    "prox_ridge",
]


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
    """Proximal operator of JAXopt's elastic net ``g(y) = l1reg · (||y||₁ + 0.5 · l2reg · ||y||²)``.

    ``prox(x)_i = sign(x_i) · max(|x_i| - scaling · a_i, 0) / (1 + scaling · a_i · b_i)`` with
    ``(a, b) = hyperparams``: the squared-l2 weight is ``a · b``, not ``b`` (JAXopt's
    definition; hyperopt before 0.2 divided by ``1 + scaling · b``). For the penalty
    ``λ₁||y||₁ + ½λ₂||y||²`` pass ``(λ₁, λ₂ / λ₁)``.

    Args:
      x: pytree of arrays.
      hyperparams: ``(a, b)`` (default ``(1.0, 1.0)``); each a scalar, a broadcastable
        array, or a pytree like ``x``.
      scaling: step size multiplying ``g``.

    Example:
      >>> prox_elastic_net(jnp.array([3.0, 0.5]), (1.0, 1.0)).tolist()
      [1.0, 0.0]
      >>> prox_elastic_net(jnp.array([3.0]), (2.0, 0.5)).tolist()   # (3 - 2) / (1 + 2 · 0.5)
      [0.5]
    """
    l1reg, l2reg = (1.0, 1.0) if hyperparams is None else hyperparams
    l1reg, l2reg = _like(l1reg, x), _like(l2reg, x)
    return jax.tree.map(
        lambda xi, a, b: _soft_threshold(xi, scaling * a) / (1.0 + scaling * a * b),
        x, l1reg, l2reg)


def prox_group_lasso(x: Any, l2reg: Any = None, scaling: float = 1.0) -> Any:
    """Proximal operator of ``g(y) = l2reg · ||y||₂`` (block soft thresholding).

    ``prox(x) = max(1 - scaling · l2reg / ||x||₂, 0) · x``, the norm taken over the whole
    pytree; one group per call (``jax.vmap`` over rows for many groups).

    Args:
      x: pytree of arrays (one group).
      l2reg: non-negative scalar (default 1.0).
      scaling: step size multiplying ``g``.

    Example:
      >>> prox_group_lasso(jnp.array([3.0, 4.0]), 2.5).tolist()
      [1.5, 2.0]
    """
    if l2reg is None:
        l2reg = 1.0
    sq_norm = sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree.leaves(x))
    # 1 - t/||x|| with the norm floored away from 0: x = 0 gives factor 0 and finite
    # derivatives, where 1 - t/0 gives NaN gradients.
    safe_norm = jnp.sqrt(jnp.where(sq_norm > 0, sq_norm, 1.0))
    factor = jnp.where(sq_norm > 0, jax.nn.relu(1.0 - l2reg * scaling / safe_norm), 0.0)
    return jax.tree.map(lambda leaf: factor * leaf, x)


def make_prox_from_projection(projection: Callable) -> Callable:
    """The prox of the indicator of a convex set: ``prox(x, hp, scaling) = projection(x, hp)``.

    Example:
      >>> from hyperopt.projection import projection_simplex
      >>> prox = make_prox_from_projection(projection_simplex)
      >>> prox(jnp.array([2.0, 1.0]), None, 0.5).tolist()
      [1.0, 0.0]
    """
    def prox(x, hyperparams=None, scaling=1.0):
        del scaling  # a projection does not depend on the step
        return projection(x, hyperparams)
    return prox
