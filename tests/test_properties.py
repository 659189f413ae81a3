"""Property-based tests of implicit differentiation (Hypothesis).

Three families of random problems, each checked against an answer that does not use the
library's implicit rule:

1. linear roots ``F(x, θ) = A x - Bθ`` with a well-conditioned, nonsymmetric ``A``:
   ``dx*/dθ = A⁻¹B`` in numpy and by central finite differences of ``np.linalg.solve``;
2. L2-regularized logistic regression solved to machine precision by a damped Newton loop:
   derivatives w.r.t. λ and X against central finite differences of that loop;
3. separable problems on random pytrees ``a ⊙ x - g(θ) = 0``: structure, shapes, dtypes and
   values of the solution, and gradients against autodiff of the closed form ``g(θ) / a``.

Dimensions are drawn from small sets so that JAX compiles each shape once.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperopt
from hyperopt import linear_solve as ls

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ---------------------------------------------------------------------------------------
# 1. Linear roots F(x, θ) = A x - B θ
# ---------------------------------------------------------------------------------------


def linear_optimality(x, theta, A, B):
    return A @ x - B @ theta


def linear_solver(init, theta, A, B):
    return jnp.linalg.solve(A, B @ theta)


def random_well_conditioned(rng, n, skew):
    """Q diag(eigs) Qᵀ + a skew part of spectral norm ``skew``; σ_min(A) ≥ min(eigs) ≥ 0.5."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = rng.uniform(0.5, 5.0, size=n)
    K = rng.standard_normal((n, n))
    S = K - K.T
    norm = np.linalg.norm(S, 2)
    S = skew * S / norm if norm > 0 else S
    return Q @ np.diag(eigs) @ Q.T + S


@jax.jit
def linear_jacobians(theta, A, B, dA):
    """dx*/dθ four ways (default solve), plus the derivative along a direction dA of A."""
    solver = hyperopt.custom_root(linear_optimality)(linear_solver)
    J_rev = jax.jacrev(solver, argnums=1)(None, theta, A, B)
    J_fwd = jax.jacfwd(solver, argnums=1)(None, theta, A, B)
    x = linear_solver(None, theta, A, B)
    n, m = x.shape[0], theta.shape[0]
    vjp_rows = jax.vmap(
        lambda v: hyperopt.root_vjp(linear_optimality, x, (theta, A, B), v)[0]
    )(jnp.eye(n))
    jvp_cols = jax.vmap(
        lambda t: hyperopt.root_jvp(linear_optimality, x, (theta, A, B),
                                    (t, jnp.zeros_like(A), jnp.zeros_like(B)))
    )(jnp.eye(m)).T
    _, dx_dA = jax.jvp(lambda A_: solver(None, theta, A_, B), (A,), (dA,))
    return x, J_rev, J_fwd, vjp_rows, jvp_cols, dx_dA


@settings(max_examples=15, deadline=None, database=None)
@given(seed=seeds, n=st.sampled_from([2, 5, 8]), m=st.sampled_from([1, 4]),
       skew=st.floats(min_value=0.0, max_value=0.45))
def test_linear_root_jacobian_equals_inverse_times_b(seed, n, m, skew):
    rng = np.random.default_rng(seed)
    A = random_well_conditioned(rng, n, skew)
    B = rng.standard_normal((n, m))
    theta = rng.standard_normal(m)
    dA = rng.standard_normal((n, n))
    assert np.linalg.cond(A) <= 10.0 * (1 + 2 * skew)  # well conditioned by construction

    exact = np.linalg.solve(A, B)
    np_solve = lambda th, A_=A: np.linalg.solve(A_, B @ th)
    h = 1e-5
    fd = np.stack([(np_solve(theta + h * e) - np_solve(theta - h * e)) / (2 * h)
                   for e in np.eye(m)], axis=1)
    assert rel_err(fd, exact) < 1e-8  # the reference itself

    x, J_rev, J_fwd, vjp_rows, jvp_cols, dx_dA = linear_jacobians(
        jnp.asarray(theta), jnp.asarray(A), jnp.asarray(B), jnp.asarray(dA))
    np.testing.assert_allclose(x, np_solve(theta), rtol=1e-10, atol=1e-12)
    for J in (J_rev, J_fwd, vjp_rows, jvp_cols):
        assert J.shape == (n, m)
        assert rel_err(J, exact) < 1e-8
        assert rel_err(J, fd) < 1e-7
    # x*(A) = A⁻¹Bθ: dx = -A⁻¹ dA x*
    x_np = np_solve(theta)
    exact_dA = -np.linalg.solve(A, dA @ x_np)
    fd_dA = (np_solve(theta, A + h * dA) - np_solve(theta, A - h * dA)) / (2 * h)
    assert rel_err(dx_dA, exact_dA) < 1e-8
    assert rel_err(dx_dA, fd_dA) < 1e-6


# ---------------------------------------------------------------------------------------
# 2. L2-regularized logistic regression
# ---------------------------------------------------------------------------------------


def logistic_optimality(w, lam, X, y):
    return X.T @ (jax.nn.sigmoid(X @ w) - y) / y.shape[0] + lam * w


def logistic_newton(w0, lam, X, y):
    """Damped Newton (step 1/(1 + decrement) far away, full steps near w*) to machine precision."""
    n, p = X.shape

    def step(w, _):
        g = logistic_optimality(w, lam, X, y)
        s = jax.nn.sigmoid(X @ w)
        H = (X.T * (s * (1 - s))) @ X / n + lam * jnp.eye(p)
        d = jnp.linalg.solve(H, g)
        decrement = jnp.sqrt(jnp.maximum(g @ d, 0.0))
        t = jnp.where(decrement < 0.25, 1.0, 1.0 / (1.0 + decrement))
        return w - t * d, None

    return jax.lax.scan(step, w0, None, length=60)[0]


newton_jit = jax.jit(logistic_newton)
implicit_logistic = hyperopt.custom_root(logistic_optimality)(logistic_newton)


@jax.jit
def logistic_derivatives(w0, lam, X, y, V):
    """Derivatives of w* along λ and along V in X, in reverse mode and in forward mode."""
    f = lambda lam_, X_: implicit_logistic(w0, lam_, X_, y)
    # reverse: the full Jacobian w.r.t. (λ, X), one VJP per output coordinate
    w, vjp = jax.vjp(f, lam, X)
    J_lam, J_X = jax.vmap(vjp)(jnp.eye(w.shape[0]))
    rev = (J_lam, jnp.einsum("inp,np->i", J_X, V))
    # forward: the two directions (1, 0) and (0, V) in one batched JVP
    tangents = (jnp.array([1.0, 0.0]), jnp.stack([jnp.zeros_like(V), V]))
    fwd = jax.vmap(lambda t_lam, t_X: jax.jvp(f, (lam, X), (t_lam, t_X))[1])(*tangents)
    return rev, (fwd[0], fwd[1])


@settings(max_examples=10, deadline=None, database=None)
@given(seed=seeds, n=st.sampled_from([20, 40, 60]), p=st.sampled_from([2, 6]),
       log_lam=st.floats(min_value=-2.0, max_value=0.0))
def test_logistic_implicit_derivatives_match_finite_differences(seed, n, p, log_lam):
    rng = np.random.default_rng(seed)
    lam = float(10.0 ** log_lam)
    X = rng.standard_normal((n, p))
    w_true = rng.standard_normal(p)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ w_true))).astype(np.float64)
    V = rng.standard_normal((n, p))
    X, y, V = map(jnp.asarray, (X, y, V))
    w0 = jnp.zeros(p)

    w = newton_jit(w0, lam, X, y)
    assert float(jnp.linalg.norm(logistic_optimality(w, lam, X, y))) < 1e-13  # machine precision

    rev, fwd = logistic_derivatives(w0, lam, X, y, V)
    h = 1e-6
    fd_lam = (newton_jit(w0, lam + h, X, y) - newton_jit(w0, lam - h, X, y)) / (2 * h)
    fd_X = (newton_jit(w0, lam, X + h * V, y) - newton_jit(w0, lam, X - h * V, y)) / (2 * h)
    for dw_dlam, dw_dX in (rev, fwd):
        assert dw_dlam.shape == dw_dX.shape == (p,)
        assert rel_err(dw_dlam, fd_lam) < 1e-6
        assert rel_err(dw_dX, fd_X) < 1e-6
    # and in closed form, dw*/dλ = -H⁻¹w* with H the Hessian at w*
    s = jax.nn.sigmoid(X @ w)
    H = (X.T * (s * (1 - s))) @ X / n + lam * jnp.eye(p)
    assert rel_err(rev[0], -np.linalg.solve(np.asarray(H), np.asarray(w))) < 1e-9


# ---------------------------------------------------------------------------------------
# 3. Separable problems on random pytrees
# ---------------------------------------------------------------------------------------


class Leaf:
    """A leaf of a drawn tree structure (a plain tuple would be a pytree node)."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    def __repr__(self):
        return f"Leaf({self.shape}, {np.dtype(self.dtype).name})"


def tree_specs(max_leaves):
    leaves = st.builds(Leaf, st.sampled_from([(), (2,), (3,), (2, 3)]),
                       st.sampled_from([np.float64, np.float64, np.float32]))
    keys = st.sampled_from(["a", "b", "c", "w"])
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.dictionaries(keys, children, min_size=1, max_size=3),
        ),
        max_leaves=max_leaves,
    )


def is_spec_leaf(node):
    return isinstance(node, Leaf)


def build(spec, fn, dtype=None):
    """Arrays ``fn(shape)`` at the spec's leaves, cast to the leaf's dtype (or to ``dtype``)."""
    return jax.tree.map(lambda leaf: jnp.asarray(fn(leaf.shape), dtype or leaf.dtype), spec,
                        is_leaf=is_spec_leaf)


def theta_features(theta, W):
    """One scalar per θ leaf, a smooth nonlinear function of that leaf."""
    return jnp.stack([jnp.sum(jnp.sin(t) * w) for t, w in
                      zip(jax.tree.leaves(theta), jax.tree.leaves(W), strict=True)])


def g(theta, W, C, D):
    s = theta_features(theta, W)
    return jax.tree.map(lambda c, d: (c @ s + d * jnp.sum(s) ** 2).astype(c.dtype), C, D)


def closed_form(theta, a, W, C, D):
    return jax.tree.map(jnp.divide, g(theta, W, C, D), a)


def separable_optimality(x, theta, a, W, C, D):
    return jax.tree.map(lambda a_, x_, g_: a_ * x_ - g_, a, x, g(theta, W, C, D))


def separable_solver(init, theta, a, W, C, D):
    """One exact Newton step from ``init``, with its own derivatives cut off."""
    x = jax.tree.map(lambda x0, r, a_: x0 - r / a_, init,
                     separable_optimality(init, theta, a, W, C, D), a)
    return jax.lax.stop_gradient(x)


def outer_loss(x, R):
    return sum(jnp.sum(jnp.cos(xl) * r) for xl, r in
               zip(jax.tree.leaves(x), jax.tree.leaves(R), strict=True))


@settings(max_examples=10, deadline=None, database=None)
@given(seed=seeds, x_spec=tree_specs(max_leaves=4), theta_spec=tree_specs(max_leaves=3),
       x_dtype=st.sampled_from([np.float64, np.float32]),
       solve=st.sampled_from([None, ls.solve_cg, ls.solve_gmres]))
def test_pytree_roundtrip_and_gradients(seed, x_spec, theta_spec, x_dtype, solve):
    """θ leaves mix float32 and float64; x leaves share one drawn dtype.

    Not mixed in x: there the dense solves check the residual of a partly float32 solution
    against float64's tolerance (a spurious LinearSolveWarning), and jax.scipy's iterative
    solvers promote the float32 leaves and fail.
    """
    rng = np.random.default_rng(seed)
    normal = lambda shape: rng.standard_normal(shape)
    theta = build(theta_spec, normal)
    W = build(theta_spec, normal)
    k = len(jax.tree.leaves(theta))
    C = build(x_spec, lambda shape: normal((*shape, k)), x_dtype)
    D = build(x_spec, normal, x_dtype)
    a = build(x_spec, lambda shape: rng.uniform(0.5, 2.0, shape), x_dtype)
    R = build(x_spec, normal, x_dtype)
    init = build(x_spec, np.zeros, x_dtype)
    has_f32 = any(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves((theta, a)))
    rtol, grad_rtol = (1e-5, 1e-4) if has_f32 else (1e-12, 1e-9)

    implicit = hyperopt.custom_root(separable_optimality, solve=solve)(separable_solver)

    @jax.jit
    def run(theta, a, W, C, D, R):
        sol = implicit(init, theta, a, W, C, D)
        L_implicit = lambda th, a_: outer_loss(implicit(init, th, a_, W, C, D), R)
        L_direct = lambda th, a_: outer_loss(closed_form(th, a_, W, C, D), R)  # plain autodiff
        return (sol, jax.value_and_grad(L_implicit, argnums=(0, 1))(theta, a),
                jax.value_and_grad(L_direct, argnums=(0, 1))(theta, a))

    sol, (v_implicit, g_implicit), (v_direct, g_direct) = run(theta, a, W, C, D, R)
    ref = closed_form(theta, a, W, C, D)
    assert jax.tree.structure(sol) == jax.tree.structure(ref) == jax.tree.structure(init)
    for s, r in zip(jax.tree.leaves(sol), jax.tree.leaves(ref), strict=True):
        assert s.shape == r.shape and s.dtype == r.dtype
        np.testing.assert_allclose(s, r, rtol=rtol, atol=rtol)

    # gradients w.r.t. θ and a, through jit, against autodiff of the closed form
    np.testing.assert_allclose(v_implicit, v_direct, rtol=rtol)
    assert jax.tree.structure(g_implicit) == jax.tree.structure(g_direct) == jax.tree.structure((theta, a))
    scale = max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(g_direct))
    assert scale > 0  # the comparison is not vacuous
    for gi, gd in zip(jax.tree.leaves(g_implicit), jax.tree.leaves(g_direct), strict=True):
        assert gi.shape == gd.shape and gi.dtype == gd.dtype
        np.testing.assert_allclose(gi, gd, rtol=grad_rtol, atol=0.1 * grad_rtol * scale)
