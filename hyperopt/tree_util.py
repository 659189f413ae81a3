"""Small pytree helpers shared by the linear solvers, the loop and the solvers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["is_dynamic", "partition_static", "stop_gradient_inexact", "tree_norm", "tree_vdot",
           "tree_where"]


def tree_vdot(a, b) -> jax.Array:
    """``Σ <a_leaf, b_leaf>`` over two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def tree_norm(tree) -> jax.Array:
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(jnp.real(tree_vdot(tree, tree)))


def tree_where(cond, a, b):
    """``jnp.where(cond, a, b)`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def is_dynamic(leaf) -> bool:
    """Arrays and Python floats are traced inputs; ints, bools, strings, callables are static."""
    if isinstance(leaf, (bool, int, str)) or leaf is None:
        return False
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex))


def partition_static(tree) -> tuple[list, tuple, Callable[[list], Any]]:
    """Splits a pytree into its dynamic leaves, a hashable key of the rest (structure and
    static leaves), and a function rebuilding the tree from new dynamic leaves."""
    leaves, treedef = jax.tree.flatten(tree)
    mask = tuple(is_dynamic(leaf) for leaf in leaves)
    dynamic = [leaf for leaf, m in zip(leaves, mask, strict=True) if m]
    static = tuple(leaf for leaf, m in zip(leaves, mask, strict=True) if not m)

    def rebuild(dyn):
        dyn_it, static_it = iter(dyn), iter(static)
        return jax.tree.unflatten(treedef, [next(dyn_it) if m else next(static_it) for m in mask])

    return dynamic, (treedef, mask, static), rebuild


def stop_gradient_inexact(tree):
    """``stop_gradient`` on floating-point leaves; integers and Python objects pass unchanged."""
    def stop(leaf):
        if isinstance(leaf, (jax.Array, np.ndarray)) and jnp.issubdtype(leaf.dtype, jnp.inexact):
            return jax.lax.stop_gradient(leaf)
        return jax.lax.stop_gradient(leaf) if isinstance(leaf, float) else leaf
    return jax.tree.map(stop, tree)
