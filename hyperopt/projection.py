"""Euclidean projections onto convex sets, with JAXopt's names, signatures and results.

A projection has the signature ``projection(x, hyperparams)`` and returns

    argmin_{p ∈ C(hyperparams)}  ||x - p||²,

for ``x`` a pytree (the sets over vectors take a 1-D array; ``jax.vmap`` projects rows).
Everything is differentiable under ``jit``/``vmap``/``grad``/``jacfwd``: closed forms by
autodiff (exact away from kinks), the one-dimensional root of :func:`projection_box_section`
by implicit differentiation, and the solver-based sets (:func:`projection_polyhedron`,
:func:`projection_transport`, ...) through their solvers' implicit differentiation.
Where ``optax.projections`` has the same function with the same result it is used.
Use one with a proximal solver through :func:`hyperopt.prox.make_prox_from_projection`.

Example:
    >>> import jax.numpy as jnp
    >>> from hyperopt.projection import projection_simplex
    >>> projection_simplex(jnp.array([0.5, 0.25, -1.0])).tolist()
    [0.625, 0.375, 0.0]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax.projections as _optax
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp

from hyperopt.implicit_diff import custom_root

__all__ = [
    "kl_projection_birkhoff",
    "kl_projection_transport",
    "projection_affine_set",
    "projection_birkhoff",
    "projection_box",
    "projection_box_section",
    "projection_halfspace",
    "projection_hypercube",
    "projection_hyperplane",
    "projection_l1_ball",
    "projection_l1_sphere",
    "projection_l2_ball",
    "projection_l2_sphere",
    "projection_linf_ball",
    "projection_non_negative",
    "projection_polyhedron",
    "projection_simplex",
    "projection_sparse_simplex",
    "projection_transport",
]


def _like(hyperparam, x, default: float = 1.0):
    """A hyperparameter as a pytree with the structure of ``x`` (broadcast if it is one value)."""
    if hyperparam is None:
        hyperparam = default
    x_def, hp_def = jax.tree.structure(x), jax.tree.structure(hyperparam)
    if hp_def == x_def:
        return hyperparam
    if jax.tree_util.treedef_is_leaf(hp_def):
        return jax.tree.map(lambda _: hyperparam, x)
    raise ValueError(
        f"hyperparameter must be one value or a pytree like x; got structure {hp_def} "
        f"for x with structure {x_def}")


def _sq_norm(x) -> jax.Array:
    return sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree.leaves(x))


def _safe_sqrt(sq):
    """``sqrt(sq)`` with a finite derivative at 0 (where the caller does not use it)."""
    return jnp.sqrt(jnp.where(sq > 0, sq, 1.0))


# ---------------------------------------------------------------------------------------
# Orthant, boxes, balls, spheres
# ---------------------------------------------------------------------------------------


def projection_non_negative(x: Any, hyperparams: Any = None) -> Any:
    """Projection onto the non-negative orthant: ``max(x, 0)`` leafwise (optax's).

    Example:
      >>> projection_non_negative(jnp.array([2.0, -3.0])).tolist()
      [2.0, 0.0]
    """
    del hyperparams
    return _optax.projection_non_negative(x)


def projection_box(x: Any, hyperparams: Any) -> Any:
    """Projection onto the box ``{y : lower ≤ y ≤ upper}``: ``clip(x, lower, upper)``.

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


def projection_hypercube(x: Any, unit: float = 1.0) -> Any:
    """Projection onto the hypercube ``{y : 0 ≤ y ≤ unit}``.

    Example:
      >>> projection_hypercube(jnp.array([-1.0, 2.0, 0.5]), 0.8).tolist()
      [0.0, 0.8, 0.5]
    """
    return projection_box(x, (0.0, unit))


def projection_linf_ball(x: Any, max_value: float = 1.0) -> Any:
    """Projection onto ``{y : ||y||_∞ ≤ max_value}`` (optax's).

    Example:
      >>> projection_linf_ball(jnp.array([-3.0, 0.5]), 1.0).tolist()
      [-1.0, 0.5]
    """
    return _optax.projection_linf_ball(x, max_value)


def projection_l2_sphere(x: Any, value: float = 1.0) -> Any:
    """Projection onto ``{y : ||y||₂ = value}``: ``value · x / ||x||₂`` (optax's).

    Example:
      >>> projection_l2_sphere(jnp.array([3.0, 4.0]), 10.0).tolist()
      [6.0, 8.0]
    """
    return _optax.projection_l2_sphere(x, value)


def projection_l2_ball(x: Any, max_value: float = 1.0) -> Any:
    """Projection onto ``{y : ||y||₂ ≤ max_value}``, the norm over the whole pytree.

    ``x`` itself when ``||x||₂ ≤ max_value`` (on the boundary too: Jacobian the identity),
    otherwise ``max_value · x / ||x||₂``.

    Example:
      >>> projection_l2_ball(jnp.array([6.0, 8.0]), 5.0).tolist()
      [3.0, 4.0]
    """
    if max_value is None:
        max_value = 1.0
    sq = _sq_norm(x)
    inside = sq <= max_value ** 2
    factor = jnp.where(inside, 1.0, max_value / _safe_sqrt(sq))
    return jax.tree.map(lambda leaf: factor * leaf, x)


def _unit_simplex_threshold(flat, value):
    """``τ`` with ``Σ max(flat - τ, 0) = value`` (sort-based, exact; ``flat`` shifted so
    that its maximum is 0, which keeps the cumulative sums small: scale-robust)."""
    u = jnp.sort(flat)[::-1]
    k = jnp.arange(1, flat.size + 1, dtype=flat.dtype)
    cumsum = jnp.cumsum(u)
    # The support is the top-k entries for the largest k with u_k > (Σ_{j≤k} u_j - value)/k,
    # a prefix of the sorted vector. -inf entries are never in it (and never summed).
    in_support = u * k - (cumsum - value) > 0
    support_size = jnp.maximum(jnp.sum(in_support), 1).astype(flat.dtype)
    return (jnp.sum(jnp.where(in_support, u, 0.0)) - value) / support_size


def projection_simplex(x: Any, value: float = 1.0) -> Any:
    """Projection onto the simplex ``{y : y ≥ 0, Σ y = value}`` of the flattened pytree.

    ``P(x) = max(x - τ, 0)``. The projection is invariant to adding a constant to ``x``;
    the maximum is subtracted first, so inputs of any scale stay on the simplex (float32 at
    scale 1e9: sums to ``value`` to rounding, where the unshifted formula, JAXopt's and
    optax's, sums to ~1e10). The whole pytree (or a 2-D array) is one vector; for rows use
    ``jax.vmap(projection_simplex)(X)``. Jacobian on the support ``S``: ``I - 11ᵀ/|S|``.

    Args:
      x: pytree of arrays (entries may be ``-inf``).
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
    # a constant shift: stop_gradient is exact (P(x - c) = P(x) for every c)
    flat = flat - jax.lax.stop_gradient(jnp.max(flat))
    tau = _unit_simplex_threshold(flat, value)
    return unravel(jax.nn.relu(flat - tau))


def projection_sparse_simplex(x: jax.Array, max_nz: int, use_approx_max_nz: bool = False,
                              value: float = 1.0) -> jax.Array:
    """Projection onto the simplex with at most ``max_nz`` non-zero entries.

    The ``max_nz`` largest entries of ``x`` (``jax.lax.top_k``; ``approx_max_k`` with
    ``use_approx_max_nz``) are projected onto the simplex, the others set to 0
    (Kyrillidis et al., ICML 2013).

    Args:
      x: vector (n,).
      max_nz: static int, the maximum number of non-zeros.
      use_approx_max_nz: use the approximate top-k.
      value: the sum of the result (default 1.0).

    Example:
      >>> projection_sparse_simplex(jnp.array([0.75, 0.5, 0.25]), 2).tolist()
      [0.625, 0.375, 0.0]
    """
    if value is None:
        value = 1.0
    top = jax.lax.approx_max_k if use_approx_max_nz else jax.lax.top_k
    values, indices = top(x, max_nz)
    return jnp.zeros_like(x).at[indices].set(projection_simplex(values, value))


def projection_l1_sphere(x: jax.Array, value: float = 1.0) -> jax.Array:
    """Projection onto ``{y : ||y||₁ = value}``: ``sign(x) · P_simplex(|x|, value)``.

    Example:
      >>> projection_l1_sphere(jnp.array([2.0, -1.0]), 1.0).tolist()
      [1.0, -0.0]
    """
    return jax.tree.map(lambda s, p: s * p, jax.tree.map(jnp.sign, x),
                        projection_simplex(jax.tree.map(jnp.abs, x), value))


def projection_l1_ball(x: jax.Array, max_value: float = 1.0) -> jax.Array:
    """Projection onto ``{y : ||y||₁ ≤ max_value}``: ``x`` inside (boundary included), the
    l1 sphere outside.

    Example:
      >>> projection_l1_ball(jnp.array([0.25, -0.5]), 1.0).tolist()
      [0.25, -0.5]
      >>> projection_l1_ball(jnp.array([2.0, -1.0]), 1.0).tolist()
      [1.0, -0.0]
    """
    l1 = sum(jnp.sum(jnp.abs(leaf)) for leaf in jax.tree.leaves(x))
    sphere = projection_l1_sphere(x, max_value)
    return jax.tree.map(lambda xi, si: jnp.where(l1 <= max_value, xi, si), x, sphere)


# ---------------------------------------------------------------------------------------
# Affine sets and polyhedra
# ---------------------------------------------------------------------------------------


def projection_hyperplane(x: Any, hyperparams: tuple) -> Any:
    """Projection onto ``{y : <a, y> = b}``, ``hyperparams = (a, b)`` with ``a`` a pytree like
    ``x`` and ``b`` a scalar (optax's): ``x - (<a, x> - b) / <a, a> · a``.

    Example:
      >>> projection_hyperplane(jnp.array([1.0, 1.0]), (jnp.array([1.0, 0.0]), 0.0)).tolist()
      [0.0, 1.0]
    """
    a, b = hyperparams
    return _optax.projection_hyperplane(x, a, b)


def projection_halfspace(x: Any, hyperparams: tuple) -> Any:
    """Projection onto ``{y : <a, y> ≤ b}``, ``hyperparams = (a, b)`` (optax's).

    Example:
      >>> projection_halfspace(jnp.array([2.0, 1.0]), (jnp.array([1.0, 0.0]), 1.0)).tolist()
      [1.0, 1.0]
    """
    a, b = hyperparams
    return _optax.projection_halfspace(x, a, b)


def projection_affine_set(x: jax.Array, hyperparams: tuple) -> jax.Array:
    """Projection onto ``{y : A y = b}``, ``hyperparams = (A, b)`` with ``A`` (m, n) of full
    row rank: ``x - Aᵀ (A Aᵀ)⁻¹ (A x - b)`` (a direct solve of JAXopt's KKT system).

    Example:
      >>> A = jnp.array([[1.0, 1.0]])
      >>> projection_affine_set(jnp.array([1.0, 0.0]), (A, jnp.array([0.0]))).tolist()
      [0.5, -0.5]
    """
    A, b = hyperparams
    A, b = jnp.asarray(A), jnp.asarray(b)
    return x - A.T @ jnp.linalg.solve(A @ A.T, A @ x - b)


def projection_polyhedron(x: jax.Array, hyperparams: tuple, check_feasible: bool = True,
                          maxiter: int = 10_000, tol: float | None = None) -> jax.Array:
    """Projection onto ``{y : A y = b, G y ≤ h}``, ``hyperparams = (A, b, G, h)``.

    Solves the dual, ``max_{μ, ν ≥ 0} -½||Aᵀμ + Gᵀν||² + <Aᵀμ + Gᵀν, x> - <μ, b> - <ν, h>``,
    by accelerated projected gradient, and returns ``y = x - Aᵀμ - Gᵀν``; derivatives come
    from implicit differentiation of the dual's fixed point (JAXopt uses OSQP, a different
    algorithm with the same solution).

    Args:
      x: vector (n,).
      hyperparams: ``(A, b, G, h)`` with shapes (m, n), (m,), (k, n), (k,).
      check_feasible: after solving, raise ``ValueError`` when the result violates the
        constraints by more than ``sqrt(tol)`` relative (the polyhedron is empty); this reads
        the result, so it is skipped while tracing (under ``jit``, ``grad``, ``vmap``).
      maxiter, tol: of the dual solver (tol: 1e-10 in float64, 1e-5 in float32).

    Example:
      >>> A, b = jnp.array([[1.0, 1.0]]), jnp.array([1.0])
      >>> G, h = -jnp.eye(2), jnp.zeros(2)
      >>> (projection_polyhedron(jnp.array([2.0, -1.0]), (A, b, G, h)).round(6) + 0.0).tolist()
      [1.0, 0.0]
    """
    x, A, b, G, h = (jnp.asarray(t) for t in (x, *hyperparams))
    dtype = jnp.result_type(x, A, b, G, h)
    if not jnp.issubdtype(dtype, jnp.inexact):  # integer constraints (JAXopt accepts them)
        dtype = jnp.result_type(dtype, float)
    x, A, b, G, h = (t.astype(dtype) for t in (x, A, b, G, h))
    if tol is None:
        tol = 1e-10 if np.finfo(dtype).eps < 1e-10 else 1e-5
    sol = _polyhedron_dual(x, A, b, G, h, maxiter, tol)
    y = x - A.T @ sol[0] - G.T @ sol[1]
    if check_feasible and not isinstance(y, jax.core.Tracer):  # traced: nothing to read
        scale = 1.0 + float(jnp.max(jnp.abs(jnp.concatenate([b, h]))))
        violation = max(float(jnp.max(jnp.abs(A @ y - b), initial=0.0)),
                        float(jnp.max(G @ y - h, initial=0.0)))
        if not violation <= np.sqrt(tol) * scale:
            raise ValueError(f"The polyhedron is empty: the projection violates the "
                             f"constraints by {violation:.3g}")
    return y


def _polyhedron_dual_fixed_point(sol, x, A, b, G, h):
    mu, nu = sol
    y = x - A.T @ mu - G.T @ nu
    eta = 1.0 / jax.lax.stop_gradient(_dual_lipschitz(A, G))
    return mu + eta * (A @ y - b) - mu, jax.nn.relu(nu + eta * (G @ y - h)) - nu


def _dual_lipschitz(A, G):
    M = jnp.concatenate([A, G], axis=0)
    return jnp.maximum(jnp.linalg.norm(M, ord=2) ** 2, jnp.finfo(M.dtype).tiny)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _polyhedron_dual(x, A, b, G, h, maxiter, tol):
    @custom_root(_polyhedron_dual_fixed_point)
    def solve(init, x, A, b, G, h):
        x, A, b, G, h = jax.lax.stop_gradient((x, A, b, G, h))
        eta = 1.0 / _dual_lipschitz(A, G)

        def fixed_point(sol):
            mu, nu = sol
            y = x - A.T @ mu - G.T @ nu
            return mu + eta * (A @ y - b), jax.nn.relu(nu + eta * (G @ y - h))

        def cond(carry):
            _, _, _, k, err = carry
            return (k < maxiter) & (err > tol)

        def body(carry):  # FISTA with adaptive restart
            sol, prev, t, k, _ = carry
            new = fixed_point(sol)
            t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t ** 2))
            mom = (t - 1) / t_new
            extrap = jax.tree.map(lambda a, p: a + mom * (a - p), new, prev)
            err = jnp.sqrt(sum(jnp.sum((a - s) ** 2) for a, s in
                               zip(jax.tree.leaves(new), jax.tree.leaves(sol), strict=True))) / eta
            restart = sum(jnp.vdot(a - s, a - p) for a, s, p in zip(
                jax.tree.leaves(new), jax.tree.leaves(sol), jax.tree.leaves(prev),
                strict=True)) > 0
            extrap = jax.tree.map(lambda e, a: jnp.where(restart, a, e), extrap, new)
            t_new = jnp.where(restart, 1.0, t_new)
            return extrap, new, t_new, k + 1, err

        carry = (init, init, jnp.asarray(1.0, x.dtype), 0, jnp.asarray(jnp.inf, x.dtype))
        _, sol, *_ = jax.lax.while_loop(cond, body, carry)
        return fixed_point(sol)

    init = (jnp.zeros(A.shape[0], x.dtype), jnp.zeros(G.shape[0], x.dtype))
    return solve(init, x, A, b, G, h)


def _box_section_residual(tau, x, hyperparams):
    """``<w, clip(w τ + x, α, β)> - c``: non-decreasing in ``τ``, zero at the solution."""
    alpha, beta, w, c = hyperparams
    return jnp.dot(w, jnp.clip(w * tau + x, alpha, beta)) - c


@custom_root(_box_section_residual)
def _box_section_root(init_tau, x, hyperparams):
    x, hyperparams = jax.lax.stop_gradient((x, hyperparams))
    alpha, beta, w, _ = hyperparams
    lower, upper = jnp.min((alpha - x) / w), jnp.max((beta - x) / w)
    # bisection to machine precision: the bracket halves every step (a fixed count, so the
    # loop also runs under vmap without per-element lengths)
    steps = 2 * np.finfo(jnp.result_type(x)).nmant + 8

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        positive = _box_section_residual(mid, x, hyperparams) > 0
        return jnp.where(positive, lo, mid), jnp.where(positive, mid, hi)

    lo, hi = jax.lax.fori_loop(0, steps, body, (lower, upper))
    return 0.5 * (lo + hi)


def projection_box_section(x: jax.Array, hyperparams: tuple,
                           check_feasible: bool = False) -> jax.Array:
    """Projection onto ``{p : α ≤ p ≤ β, <w, p> = c}`` with ``w > 0``.

    ``p = clip(w τ + x, α, β)`` where ``τ`` is the root of a non-decreasing scalar function,
    found by bisection to machine precision and differentiated implicitly.

    Args:
      x: vector (n,).
      hyperparams: ``(alpha, beta, w, c)``: three vectors like ``x`` and a scalar.
      check_feasible: raise ``ValueError`` if ``<w, α> > c`` or ``<w, β> < c`` (reads values:
        not under ``jit``).

    Example:
      >>> x, ones = jnp.array([0.5, 0.25, -1.0]), jnp.ones(3)
      >>> projection_box_section(x, (0 * ones, ones, ones, 1.0)).round(6).tolist()
      [0.625, 0.375, 0.0]
    """
    alpha, beta, w, c = hyperparams
    if check_feasible:
        if jnp.dot(w, alpha) > c:
            raise ValueError("alpha should satisfy dot(w, alpha) <= c")
        if jnp.dot(w, beta) < c:
            raise ValueError("beta should satisfy dot(w, beta) >= c")
    tau = _box_section_root(jnp.zeros((), jnp.result_type(x)), x, hyperparams)
    return jnp.clip(w * tau + x, alpha, beta)


# ---------------------------------------------------------------------------------------
# Transportation polytope (Blondel, Seguy & Rolet, AISTATS 2018)
# ---------------------------------------------------------------------------------------


def _max_l2(x, marginal_b, gamma):
    scale = gamma * marginal_b
    p = jax.lax.stop_gradient(projection_simplex(x / scale))  # Danskin: no derivative needed
    return jnp.dot(x, p) - 0.5 * scale * jnp.dot(p, p)


def _max_ent(x, marginal_b, gamma):
    return gamma * logsumexp(x / gamma) - gamma * jnp.log(marginal_b)


def _delta_l2(x, gamma=1.0):
    return (0.5 / gamma) * jnp.dot(jax.nn.relu(x), jax.nn.relu(x))


def _delta_ent(x, gamma):
    return gamma * jnp.exp((x / gamma) - 1).sum()


def _default_make_solver(fun):
    from hyperopt.solvers.lbfgs import LBFGS  # the solvers import projections: import late
    return LBFGS(fun=fun, maxiter=500)


def _transport(cost, marginals_a, marginals_b, make_solver, semi_dual, kind, gamma=1.0):
    if marginals_a.ndim >= 2 or marginals_b.ndim >= 2:
        raise ValueError("marginals_a and marginals_b should be vectors")
    if cost.shape != (marginals_a.shape[0], marginals_b.shape[0]):
        raise ValueError(f"cost_matrix of shape {cost.shape} does not match marginals of "
                         f"shapes {marginals_a.shape} and {marginals_b.shape}")
    make_solver = make_solver or _default_make_solver
    if semi_dual:
        max_fn = _max_l2 if kind == "l2" else _max_ent
        max_vmap = jax.vmap(max_fn, in_axes=(1, 0, None))
        max_grad_vmap = jax.vmap(jax.grad(max_fn), in_axes=(1, 0, None))

        def fun(alpha, cost_matrix, marginals_a, marginals_b):
            X = alpha[:, None] - cost_matrix
            return (jnp.dot(marginals_b, max_vmap(X, marginals_b, gamma))
                    - jnp.dot(alpha, marginals_a))

        alpha = make_solver(fun).run(jnp.zeros(cost.shape[0], cost.dtype), cost_matrix=cost,
                                     marginals_a=marginals_a, marginals_b=marginals_b).params
        return max_grad_vmap(alpha[:, None] - cost, marginals_b, gamma).T * marginals_b
    delta = _delta_l2 if kind == "l2" else _delta_ent
    delta_vmap = jax.vmap(delta, in_axes=(1, None))
    delta_grad_vmap = jax.vmap(jax.grad(delta), in_axes=(1, None))

    def fun(alpha_beta, cost_matrix, marginals_a, marginals_b):
        alpha, beta = alpha_beta
        constraints = alpha[:, None] + beta[None, :] - cost_matrix
        return (delta_vmap(constraints, gamma).sum() - jnp.dot(alpha, marginals_a)
                - jnp.dot(beta, marginals_b))

    init = (jnp.zeros(cost.shape[0], cost.dtype), jnp.zeros(cost.shape[1], cost.dtype))
    alpha, beta = make_solver(fun).run(init, cost_matrix=cost, marginals_a=marginals_a,
                                       marginals_b=marginals_b).params
    return delta_grad_vmap(alpha[:, None] + beta[None, :] - cost, gamma).T


def projection_transport(sim_matrix: jax.Array, marginals: tuple,
                         make_solver: Callable | None = None,
                         use_semi_dual: bool = True) -> jax.Array:
    """Projection of ``sim_matrix`` (m, n) onto ``{P ≥ 0 : P 1 = a, Pᵀ 1 = b}``.

    Solves the semi-dual (or, ``use_semi_dual=False``, the dual) of the l2-regularized
    transport problem with ``make_solver(fun)`` (default: :class:`hyperopt.LBFGS` with
    hyperopt's tight default tolerance, ``maxiter=500``; JAXopt: ``tol=1e-3``).

    Args:
      sim_matrix: similarity matrix (m, n) (``-cost``).
      marginals: ``(a, b)``, shapes (m,) and (n,).
      make_solver: ``make_solver(fun) -> solver`` with ``solver.run(init, **kwargs)``.
      use_semi_dual: semi-dual (default) or dual formulation.

    Example:
      >>> P = projection_transport(jnp.eye(2), (jnp.ones(2) / 2, jnp.ones(2) / 2))
    """
    a, b = marginals
    return _transport(-jnp.asarray(sim_matrix), jnp.asarray(a), jnp.asarray(b), make_solver,
                      use_semi_dual, "l2")


def kl_projection_transport(sim_matrix: jax.Array, marginals: tuple,
                            make_solver: Callable | None = None,
                            use_semi_dual: bool = True) -> jax.Array:
    """Kullback–Leibler projection of ``exp(sim_matrix)`` onto the transportation polytope
    (the entropic optimal transport plan; what Sinkhorn computes). Arguments as
    :func:`projection_transport`.

    Example:
      >>> P = kl_projection_transport(jnp.eye(2), (jnp.ones(2) / 2, jnp.ones(2) / 2))
    """
    a, b = marginals
    return _transport(-jnp.asarray(sim_matrix), jnp.asarray(a), jnp.asarray(b), make_solver,
                      use_semi_dual, "kl")


def projection_birkhoff(sim_matrix: jax.Array, make_solver: Callable | None = None,
                        use_semi_dual: bool = True) -> jax.Array:
    """Projection onto the doubly stochastic matrices (unit marginals).

    Example:
      >>> P = projection_birkhoff(jnp.array([[0.6, 0.4], [0.4, 0.6]]))
    """
    m, n = jnp.shape(sim_matrix)
    return projection_transport(sim_matrix, (jnp.ones(m), jnp.ones(n)), make_solver,
                                use_semi_dual)


def kl_projection_birkhoff(sim_matrix: jax.Array, make_solver: Callable | None = None,
                           use_semi_dual: bool = True) -> jax.Array:
    """Kullback–Leibler projection onto the doubly stochastic matrices.

    Example:
      >>> P = kl_projection_birkhoff(jnp.array([[0.6, 0.4], [0.4, 0.6]]))
    """
    m, n = jnp.shape(sim_matrix)
    return kl_projection_transport(sim_matrix, (jnp.ones(m), jnp.ones(n)), make_solver,
                                   use_semi_dual)
