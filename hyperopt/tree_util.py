"""Small pytree helpers shared by the linear solvers, the loop and the solvers."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "broadcast_pytrees", "is_dynamic", "partition_static", "stop_gradient_inexact", "tree_add",
    "tree_add_scalar_mul", "tree_conj", "tree_div", "tree_dot", "tree_imag", "tree_inf_norm",
    "tree_l2_norm", "tree_map", "tree_mul", "tree_negative", "tree_norm", "tree_ones_like",
    "tree_real", "tree_reduce", "tree_scalar_mul", "tree_sub", "tree_sum", "tree_vdot",
    "tree_vdot_real", "tree_where", "tree_zeros_like",
]


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


# ---------------------------------------------------------------------------------------
# JAXopt's public tree utilities (``jaxopt.tree_util``), same names and results
# ---------------------------------------------------------------------------------------

tree_map = jax.tree_util.tree_map
tree_reduce = jax.tree_util.tree_reduce


def broadcast_pytrees(*trees):
    """Leaf trees (single arrays) broadcast to the structure shared by the others.

    Example:
      >>> broadcast_pytrees(1.0, (2.0, 3.0))
      ((1.0, 1.0), (2.0, 3.0))
    """
    defs = [jax.tree.structure(t) for t in trees]
    shared = [d for d in defs if not jax.tree_util.treedef_is_leaf(d)]
    if not shared:
        return trees
    if any(d != shared[0] for d in shared):
        raise ValueError(f"Pytrees are not broadcastable: {shared[0]} != "
                         f"{next(d for d in shared if d != shared[0])}")
    n = shared[0].num_leaves
    return tuple(shared[0].unflatten([jax.tree.leaves(t)[0]] * n)
                 if jax.tree_util.treedef_is_leaf(d) else t for t, d in zip(trees, defs, strict=True))


def tree_add(tree_x, tree_y):
    """``x + y`` leafwise."""
    return jax.tree.map(operator.add, tree_x, tree_y)


def tree_sub(tree_x, tree_y):
    """``x - y`` leafwise."""
    return jax.tree.map(operator.sub, tree_x, tree_y)


def tree_mul(tree_x, tree_y):
    """``x * y`` leafwise."""
    return jax.tree.map(operator.mul, tree_x, tree_y)


def tree_div(tree_x, tree_y):
    """``x / y`` leafwise."""
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def tree_scalar_mul(scalar, tree_x):
    """``scalar * x``."""
    return jax.tree.map(lambda x: scalar * x, tree_x)


def tree_add_scalar_mul(tree_x, scalar, tree_y):
    """``x + scalar * y``."""
    return jax.tree.map(lambda x, y: x + scalar * y, tree_x, tree_y)


def tree_vdot_real(tree_x, tree_y) -> jax.Array:
    """Real part of ``<x, y>``."""
    return jnp.real(tree_vdot(tree_x, tree_y))


def tree_dot(tree_x, tree_y):
    """``jnp.dot`` leaf by leaf (block-diagonal operators)."""
    return jax.tree.map(jnp.dot, tree_x, tree_y)


def tree_sum(tree_x) -> jax.Array:
    """Sum of all entries."""
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree_x))


def tree_l2_norm(tree_x, squared: bool = False) -> jax.Array:
    """``||x||₂`` over all leaves (its square with ``squared=True``); complex leaves allowed."""
    sq = sum(jnp.sum(jnp.real(leaf) ** 2 + jnp.imag(leaf) ** 2) for leaf in jax.tree.leaves(tree_x))
    return sq if squared else jnp.sqrt(sq)


def tree_inf_norm(tree_x) -> jax.Array:
    """``max |x_i|`` over all leaves."""
    return max(jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree_x))


def tree_zeros_like(tree_x):
    return jax.tree.map(jnp.zeros_like, tree_x)


def tree_ones_like(tree_x):
    return jax.tree.map(jnp.ones_like, tree_x)


def tree_negative(tree_x):
    return jax.tree.map(operator.neg, tree_x)


def tree_conj(tree_x):
    return jax.tree.map(jnp.conj, tree_x)


def tree_real(tree_x):
    return jax.tree.map(jnp.real, tree_x)


def tree_imag(tree_x):
    return jax.tree.map(jnp.imag, tree_x)
