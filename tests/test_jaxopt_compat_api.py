"""hyperopt against the real JAXopt (the ``compat`` extra), name by name, in float64.

Every prox, projection, objective and dense linear solver JAXopt exports is compared on
seeded inputs (values, and Jacobians where JAXopt differentiates); BlockCoordinateDescent and
MirrorDescent are compared on solutions, state fields and hypergradients. Where JAXopt's own
answer is only as accurate as its loose default tolerance (OSQP, bisection, LBFGS at 1e-3),
both are compared with an independent reference instead (scipy, a closed form).
"""

import dataclasses
import doctest
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from sklearn import datasets, preprocessing

import hyperopt
from hyperopt import linear_solve, objective, projection, prox, tree_util

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import jaxopt
    import jaxopt.linear_solve
    import jaxopt.tree_util


def _public(module):
    return sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))


@pytest.mark.parametrize("ours, theirs", [
    (prox, jaxopt.prox), (projection, jaxopt.projection), (objective, jaxopt.objective),
    (linear_solve, jaxopt.linear_solve), (tree_util, jaxopt.tree_util)])
def test_every_public_name_exists(ours, theirs):
    missing = [n for n in _public(theirs) if not hasattr(ours, n)]
    assert missing == []


@pytest.mark.parametrize("module", [projection, objective, tree_util])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, extraglobs={"jnp": jnp, "jax": jax})
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------
# Proximal operators
# ---------------------------------------------------------------------------------------

def _rng(seed=0):
    return np.random.default_rng(seed)


PROX_CASES = [
    ("prox_none", None),
    ("prox_lasso", 0.4),
    ("prox_non_negative_lasso", 0.4),
    ("prox_ridge", 0.7),
    ("prox_non_negative_ridge", 0.7),
    ("prox_elastic_net", (0.4, 1.3)),
    ("prox_elastic_net", (np.linspace(0.1, 1.0, 9), np.linspace(2.0, 0.5, 9))),
    ("prox_group_lasso", 0.8),
    ("prox_group_lasso", 50.0),        # the whole group thresholded to 0
]


@pytest.mark.parametrize("name, hp", PROX_CASES)
@pytest.mark.parametrize("scaling", [1.0, 0.3])
def test_prox_matches_jaxopt(name, hp, scaling):
    x = jnp.asarray(_rng(1).normal(size=9) * 2)
    ours = getattr(prox, name)(x, hp, scaling)
    theirs = getattr(jaxopt.prox, name)(x, hp, scaling)
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-14)
    jac = lambda f: jax.jacobian(lambda v: f(v, hp, scaling))(x)
    np.testing.assert_allclose(jac(getattr(prox, name)), jac(getattr(jaxopt.prox, name)), atol=1e-14)


def test_elastic_net_is_the_prox_of_jaxopt_penalty():
    """soft(x, a)/(1 + a·b) minimizes ½(y - x)² + a(|y| + ½ b y²): checked by scipy."""
    a, b, scaling = 0.6, 2.5, 0.8
    for x0 in (-2.0, 0.3, 1.7):
        res = optimize.minimize_scalar(
            lambda y: 0.5 * (y - x0) ** 2 + scaling * a * (abs(y) + 0.5 * b * y ** 2),
            bounds=(-5, 5), method="bounded", options={"xatol": 1e-12})
        assert float(prox.prox_elastic_net(jnp.asarray(x0), (a, b), scaling)) == pytest.approx(
            res.x, abs=1e-8)


def test_make_prox_from_projection_matches_jaxopt():
    x = jnp.asarray(_rng(2).normal(size=6))
    ours = prox.make_prox_from_projection(projection.projection_simplex)(x, None, 0.3)
    theirs = jaxopt.prox.make_prox_from_projection(jaxopt.projection.projection_simplex)(x, None, 0.3)
    np.testing.assert_allclose(ours, theirs, atol=1e-15)


def test_old_prox_projection_names_are_the_projection_module():
    for name in ("projection_box", "projection_l2_ball", "projection_non_negative",
                 "projection_simplex"):
        assert getattr(prox, name) is getattr(projection, name)


# ---------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------

def _vec(seed, n=8, scale=1.0):
    return jnp.asarray(_rng(seed).normal(size=n) * scale)


CLOSED_FORM_PROJECTIONS = [
    ("projection_non_negative", None),
    ("projection_box", (-0.3, 0.5)),
    ("projection_hypercube", 0.7),
    ("projection_simplex", 1.0),
    ("projection_simplex", 2.5),
    ("projection_l1_sphere", 1.5),
    ("projection_l1_ball", 1.5),
    ("projection_l1_ball", 100.0),      # inside
    ("projection_l2_sphere", 1.5),
    ("projection_l2_ball", 1.5),
    ("projection_l2_ball", 100.0),      # inside
    ("projection_linf_ball", 0.4),
    ("projection_hyperplane", (jnp.linspace(-1.0, 2.0, 8), 0.7)),
    ("projection_halfspace", (jnp.linspace(-1.0, 2.0, 8), 0.7)),
    ("projection_halfspace", (jnp.linspace(-1.0, 2.0, 8), 100.0)),   # inside
    ("projection_affine_set", (jnp.asarray(_rng(5).normal(size=(3, 8))), _vec(6, 3))),
]


@pytest.mark.parametrize("name, hp", CLOSED_FORM_PROJECTIONS)
def test_projection_matches_jaxopt(name, hp):
    x = _vec(3, scale=2.0)
    ours, theirs = getattr(projection, name), getattr(jaxopt.projection, name)
    call = (lambda f, v: f(v)) if hp is None else (lambda f, v: f(v, hp))
    np.testing.assert_allclose(call(ours, x), call(theirs, x), atol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(lambda v: call(ours, v))(x),
                               jax.jacrev(lambda v: call(theirs, v))(x), atol=1e-10)


@pytest.mark.parametrize("max_nz", [1, 3, 8])
def test_sparse_simplex_matches_jaxopt(max_nz):
    x = _vec(7)
    np.testing.assert_allclose(projection.projection_sparse_simplex(x, max_nz, value=2.0),
                               jaxopt.projection.projection_sparse_simplex(x, max_nz, value=2.0),
                               atol=1e-14)


def test_simplex_is_scale_robust_in_float32():
    """float32 input at scale 1e9: the result is on the simplex (the issue's 1.8e10 sum)."""
    x = (1e9 * _rng(8).normal(size=50)).astype(np.float32)
    for value in (1.0, 0.8):
        p = projection.projection_simplex(jnp.asarray(x), value)
        assert p.dtype == jnp.float32
        assert float(jnp.sum(p)) == pytest.approx(value, rel=1e-6)
        assert float(jnp.min(p)) >= 0.0
    # ties and -inf
    np.testing.assert_allclose(projection.projection_simplex(jnp.array([0.0, 0.0, -jnp.inf])),
                               [0.5, 0.5, 0.0])


def test_box_section_against_closed_form_and_finite_differences():
    """With w = 1, α = 0, β = 1, c = 1 the box section is the simplex (closed form)."""
    x = jnp.asarray(_rng(9).uniform(size=6))
    ones = jnp.ones(6)
    hp = (0 * ones, ones, ones, 1.0)
    np.testing.assert_allclose(projection.projection_box_section(x, hp),
                               projection.projection_simplex(x), atol=1e-14)
    np.testing.assert_allclose(jax.jacrev(projection.projection_box_section)(x, hp),
                               jax.jacrev(projection.projection_simplex)(x), atol=1e-12)
    # general weights: feasibility, and JAXopt's (bisection at tol 1e-5) answer
    w = jnp.asarray(_rng(10).uniform(0.5, 2.0, size=6))
    hp = (0 * ones, 0.4 * ones, w, 1.0)
    p = projection.projection_box_section(x, hp)
    assert float(jnp.dot(w, p)) == pytest.approx(1.0, abs=1e-13)
    np.testing.assert_allclose(p, jaxopt.projection.projection_box_section(x, hp), atol=1e-5)
    v = jnp.asarray(_rng(11).normal(size=6))
    eps = 1e-6
    fd = (projection.projection_box_section(x + eps * v, hp)
          - projection.projection_box_section(x - eps * v, hp)) / (2 * eps)
    np.testing.assert_allclose(jax.jvp(lambda u: projection.projection_box_section(u, hp), (x,),
                                       (v,))[1], fd, atol=1e-7)
    with pytest.raises(ValueError, match="alpha"):
        projection.projection_box_section(x, (2 * ones, 3 * ones, w, 1.0), True)


def _polyhedron_problem():
    rng = _rng(12)
    x = jnp.asarray(rng.normal(size=6))
    A, b = jnp.asarray(rng.normal(size=(2, 6))), jnp.asarray(rng.normal(size=2))
    G, h = jnp.asarray(rng.normal(size=(3, 6))), jnp.asarray(rng.normal(size=3) - 1.0)
    return x, (A, b, G, h)


def test_polyhedron_matches_scipy_and_jaxopt():
    x, (A, b, G, h) = _polyhedron_problem()
    p = projection.projection_polyhedron(x, (A, b, G, h))
    res = optimize.minimize(lambda y: 0.5 * np.sum((y - x) ** 2), np.zeros(6),
                            jac=lambda y: y - x, method="SLSQP",
                            constraints=[{"type": "eq", "fun": lambda y: A @ y - b, "jac": lambda y: A},
                                         {"type": "ineq", "fun": lambda y: h - G @ y,
                                          "jac": lambda y: -G}],
                            options={"ftol": 1e-15, "maxiter": 500})
    np.testing.assert_allclose(p, res.x, atol=1e-7)
    # JAXopt's OSQP answer is accurate to its default tolerance 1e-3
    np.testing.assert_allclose(p, jaxopt.projection.projection_polyhedron(x, (A, b, G, h)), atol=1e-3)


def test_polyhedron_accepts_integer_constraints():
    # JAXopt's test_polyhedron_projection passes integer A, b, G, h
    A, b = jnp.array([[0, 0]]), jnp.array([0])
    G, h = jnp.array([[-1, -1], [0, 1], [1, -1], [-1, 0], [0, -1]]), jnp.array([-1, 1, 1, 0, 0])
    x = jnp.array([0.3, 2.0])
    p = projection.projection_polyhedron(x, (A, b, G, h))
    as_float = tuple(t.astype(x.dtype) for t in (A, b, G, h))
    np.testing.assert_allclose(p, projection.projection_polyhedron(x, as_float), rtol=1e-12)
    # the closest point of {x0 + x1 >= 1, x1 <= 1, x0 - x1 <= 1, x >= 0} to (0.3, 2) is (0.3, 1)
    np.testing.assert_allclose(p, [0.3, 1.0], atol=1e-8)
    np.testing.assert_allclose(p, jaxopt.projection.projection_polyhedron(x, (A, b, G, h)),
                               atol=1e-3)


def test_polyhedron_jacobian_matches_finite_differences():
    x, hp = _polyhedron_problem()
    f = lambda u, b: projection.projection_polyhedron(u, (hp[0], b, hp[2], hp[3]), False)
    v = jnp.asarray(_rng(13).normal(size=6))
    vb = jnp.asarray(_rng(14).normal(size=2))
    eps = 1e-6
    fd = (f(x + eps * v, hp[1] + eps * vb) - f(x - eps * v, hp[1] - eps * vb)) / (2 * eps)
    np.testing.assert_allclose(jax.jvp(f, (x, hp[1]), (v, vb))[1], fd, atol=1e-6)
    rev = jax.jacrev(f, argnums=(0, 1))(x, hp[1])
    np.testing.assert_allclose(rev[0] @ v + rev[1] @ vb, fd, atol=1e-6)


def test_polyhedron_infeasible_raises():
    A = jnp.array([[1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    b = jnp.array([1.0, 1.0, -1.0])
    G, h = -jnp.eye(2), jnp.zeros(2)
    with pytest.raises(ValueError, match="empty"):
        projection.projection_polyhedron(jnp.zeros(2), (A, b, G, h))


def _sinkhorn(cost, a, b, iters=3000):
    K = np.exp(-cost)
    f = np.zeros_like(a)
    for _ in range(iters):
        g = np.log(b) - np.log(K.T @ np.exp(f))
        f = np.log(a) - np.log(K @ np.exp(g))
    return np.exp(f)[:, None] * K * np.exp(g)


@pytest.mark.parametrize("semi_dual", [True, False])
def test_transport_matches_sinkhorn_and_jaxopt(semi_dual):
    rng = _rng(15)
    S = rng.uniform(size=(4, 5))
    a, b = rng.uniform(size=4), rng.uniform(size=5)
    a, b = a / a.sum(), b / b.sum()
    T_kl = projection.kl_projection_transport(S, (a, b), use_semi_dual=semi_dual)
    np.testing.assert_allclose(T_kl, _sinkhorn(-S, a, b), atol=1e-8)
    T = projection.projection_transport(S, (a, b), use_semi_dual=semi_dual)
    np.testing.assert_allclose(T.sum(1), a, atol=1e-8)
    np.testing.assert_allclose(T.sum(0), b, atol=1e-8)
    assert float(T.min()) >= 0.0
    tight = lambda fun: jaxopt.LBFGS(fun=fun, tol=1e-10, maxiter=5000, linesearch="zoom")
    np.testing.assert_allclose(
        T, jaxopt.projection.projection_transport(S, (a, b), tight, use_semi_dual=semi_dual),
        atol=1e-7)


def test_birkhoff_keeps_a_doubly_stochastic_matrix():
    P = jnp.array([[0.6, 0.4], [0.4, 0.6]])
    np.testing.assert_allclose(projection.projection_birkhoff(P), P, atol=1e-8)
    Q = projection.kl_projection_birkhoff(jnp.asarray(_rng(16).uniform(size=(3, 3))))
    np.testing.assert_allclose(Q.sum(0), 1.0, atol=1e-8)
    np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-8)


# ---------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------

def _regression():
    X, y = datasets.make_regression(n_samples=12, n_features=4, random_state=0)
    return jnp.asarray(X), jnp.asarray(y)


def _classification(n_classes=3):
    X, y = datasets.make_classification(n_samples=15, n_features=4, n_informative=3,
                                        n_redundant=0, n_classes=n_classes, random_state=0)
    return jnp.asarray(X), jnp.asarray(y)


def _objective_cases():
    X, y = _regression()
    Xc, yc = _classification()
    Xb, yb = _classification(2)
    Y = jnp.asarray(preprocessing.LabelBinarizer().fit_transform(np.asarray(yc)), X.dtype)
    W = jnp.asarray(_rng(17).normal(size=(4, 3)))
    w = W[:, 0]
    beta = jax.vmap(projection.projection_simplex)(jnp.asarray(_rng(18).normal(size=(15, 3))))
    return [
        ("least_squares", w, (), (X, y)),
        ("least_squares", W, (), (X, jnp.stack([y, -y, 2 * y], 1))),
        ("ridge_regression", w, (0.3,), (X, y)),
        ("binary_logreg", w, (), (Xb, yb)),
        ("multiclass_logreg", W, (), (Xc, yc)),
        ("multiclass_logreg_with_intercept", (W, W[0]), (), (Xc, yc)),
        ("l2_multiclass_logreg", W, (0.3,), (Xc, yc)),
        ("l2_multiclass_logreg_with_intercept", (W, W[0]), (0.3,), (Xc, yc)),
        ("multiclass_linear_svm_dual", beta, (2.0,), (Xc, Y)),
    ]


@pytest.mark.parametrize("case", _objective_cases(), ids=lambda c: c[0])
def test_objective_matches_jaxopt(case):
    name, params, hp, data = case
    ours, theirs = getattr(objective, name), getattr(jaxopt.objective, name)
    assert float(ours(params, *hp, data)) == pytest.approx(float(theirs(params, *hp, data)),
                                                           rel=1e-13)
    g_ours, g_theirs = jax.grad(ours)(params, *hp, data), jax.grad(theirs)(params, *hp, data)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    if isinstance(ours, objective.CompositeLinearFunction):
        assert isinstance(theirs, jaxopt.objective.CompositeLinearFunction)
        np.testing.assert_allclose(ours.make_linop(*hp, data).A, theirs.make_linop(*hp, data).A)
        b_ours, b_theirs = ours.b(*hp, data), theirs.b(*hp, data)
        assert (b_ours is None) == (b_theirs is None)
        if b_ours is not None:
            np.testing.assert_allclose(b_ours, b_theirs)


@pytest.mark.parametrize("case", [c for c in _objective_cases() if isinstance(
    getattr(objective, c[0]), objective.CompositeLinearFunction)], ids=lambda c: c[0])
def test_columnwise_lipschitz_constants_bound_the_block_curvature(case):
    """L_j >= the largest eigenvalue of the block-j Hessian at random points (and is tight
    for least squares); JAXopt's constants omit 1/n and 1/l2reg (documented difference)."""
    name, params, hp, data = case
    fun = getattr(objective, name)
    L = np.asarray(fun.columnwise_lipschitz_const(*hp, data))
    H = jax.hessian(fun)(params, *hp, data)
    n_blocks = params.shape[0]
    H = np.asarray(H).reshape(n_blocks, -1, n_blocks, np.asarray(params[0]).size)
    for j in range(n_blocks):
        top = np.linalg.eigvalsh(H[j, :, j, :])[-1]
        assert top <= L[j] * (1 + 1e-10)
        if name == "least_squares":
            assert top == pytest.approx(L[j], rel=1e-10)


# ---------------------------------------------------------------------------------------
# Linear solvers
# ---------------------------------------------------------------------------------------

# (solve_iterative_refinement passes extra options to its inner solve, so there ``ridge`` would
# regularize the preconditioner only; JAXopt's refuses it)
@pytest.mark.parametrize("name, ridge", [
    (name, ridge) for name in ("solve_lu", "solve_qr", "solve_inv", "solve_cholesky")
    for ridge in (None, 0.5)] + [("solve_iterative_refinement", None)])
def test_dense_linear_solvers_match_jaxopt(name, ridge):
    rng = _rng(19)
    A = rng.normal(size=(6, 6))
    A = A @ A.T + 0.5 * np.eye(6)   # SPD, so that Cholesky applies too
    b = jnp.asarray(rng.normal(size=6))
    matvec = lambda v: jnp.asarray(A) @ v
    kw = {} if ridge is None else {"ridge": ridge}
    ours = getattr(linear_solve, name)(matvec, b, **kw)
    theirs = getattr(jaxopt.linear_solve, name)(matvec, b, **kw)
    expected = np.linalg.solve(A + (ridge or 0.0) * np.eye(6), np.asarray(b))
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)


def test_iterative_refinement_with_a_poor_inner_solve_still_converges():
    """A few GMRES iterations per refinement step: the refinement recovers full accuracy."""
    rng = _rng(20)
    A = rng.normal(size=(8, 8)) + 4 * np.eye(8)
    b = jnp.asarray(rng.normal(size=8))
    inner = functools.partial(linear_solve.solve_gmres, restart=2, maxiter=1, on_failure="ignore")
    assert not np.allclose(inner(lambda v: jnp.asarray(A) @ v, b), np.linalg.solve(A, b), atol=1e-6)
    x = linear_solve.solve_iterative_refinement(lambda v: jnp.asarray(A) @ v, b, maxiter=200,
                                                tol=1e-12, solve=inner)
    np.testing.assert_allclose(x, np.linalg.solve(A, np.asarray(b)), atol=1e-10)


# ---------------------------------------------------------------------------------------
# Block coordinate descent and mirror descent
# ---------------------------------------------------------------------------------------

def _bcd_pair(fun_name, block_prox_name, **kw):
    ours = hyperopt.BlockCoordinateDescent(fun=getattr(objective, fun_name),
                                           block_prox=getattr(prox, block_prox_name), **kw)
    theirs = jaxopt.BlockCoordinateDescent(fun=getattr(jaxopt.objective, fun_name),
                                           block_prox=getattr(jaxopt.prox, block_prox_name), **kw)
    return ours, theirs


@pytest.mark.parametrize("fun_name, block_prox_name, hp, data_kind", [
    ("least_squares", "prox_lasso", 5.0, "regression"),
    ("least_squares", "prox_elastic_net", (2.0, 0.8), "regression"),
    ("binary_logreg", "prox_lasso", 0.01, "binary"),
    ("multiclass_logreg", "prox_ridge", 0.05, "multiclass"),
])
def test_block_cd_matches_jaxopt(fun_name, block_prox_name, hp, data_kind):
    X, y = {"regression": _regression, "binary": lambda: _classification(2),
            "multiclass": _classification}[data_kind]()
    shape = (X.shape[1], 3) if data_kind == "multiclass" else (X.shape[1],)
    ours, theirs = _bcd_pair(fun_name, block_prox_name, maxiter=20_000, tol=1e-9)
    sol = ours.run(jnp.zeros(shape), hyperparams_prox=hp, data=(X, y))
    ref = theirs.run(jnp.zeros(shape), hyperparams_prox=hp, data=(X, y))
    np.testing.assert_allclose(sol.params, ref.params, atol=1e-6)
    assert set(ref.state._fields) <= set(sol.state._fields)
    np.testing.assert_allclose(sol.state.predictions, X @ sol.params, atol=1e-10)
    assert bool(sol.state.converged)
    # same result by position and by keyword, through the same compiled program
    again = ours.run(jnp.zeros(shape), hp, (X, y))
    np.testing.assert_allclose(again.params, sol.params, atol=1e-14)


def test_block_cd_hypergradient_matches_jaxopt_and_finite_differences():
    X, y = _regression()
    ours, theirs = _bcd_pair("least_squares", "prox_lasso", maxiter=20_000, tol=1e-11)
    f_ours = lambda lam: jnp.sum(ours.run(jnp.zeros(4), lam, data=(X, y)).params ** 2)
    f_theirs = lambda lam: jnp.sum(theirs.run(jnp.zeros(4), lam, data=(X, y)).params ** 2)
    g = jax.grad(f_ours)(5.0)
    assert float(g) == pytest.approx(float(jax.grad(f_theirs)(5.0)), rel=1e-6)
    eps = 1e-4
    assert float(g) == pytest.approx(float((f_ours(5.0 + eps) - f_ours(5.0 - eps)) / (2 * eps)),
                                     rel=1e-6)
    unrolled = hyperopt.BlockCoordinateDescent(fun=objective.least_squares,
                                               block_prox=prox.prox_lasso, maxiter=300, tol=1e-11,
                                               implicit_diff=False)
    g_unrolled = jax.grad(lambda lam: jnp.sum(unrolled.run(jnp.zeros(4), lam,
                                                           data=(X, y)).params ** 2))(5.0)
    assert float(g_unrolled) == pytest.approx(float(g), rel=1e-6)


def test_block_cd_multiclass_svm_dual_matches_jaxopt():
    X, yc = _classification()
    Y = jnp.asarray(preprocessing.LabelBinarizer().fit_transform(np.asarray(yc)), X.dtype)
    block_prox = prox.make_prox_from_projection(projection.projection_simplex)
    beta0 = jnp.ones((15, 3)) / 3
    ours = hyperopt.BlockCoordinateDescent(fun=objective.multiclass_linear_svm_dual,
                                           block_prox=block_prox, maxiter=20_000, tol=1e-10)
    theirs = jaxopt.BlockCoordinateDescent(
        fun=jaxopt.objective.multiclass_linear_svm_dual, maxiter=20_000, tol=1e-10,
        block_prox=jaxopt.prox.make_prox_from_projection(jaxopt.projection.projection_simplex))
    sol = ours.run(beta0, hyperparams_prox=None, l2reg=10.0, data=(X, Y))
    ref = theirs.run(beta0, hyperparams_prox=None, l2reg=10.0, data=(X, Y))
    W = lambda beta: X.T @ (Y - beta) / 10.0
    np.testing.assert_allclose(W(sol.params), W(ref.params), atol=1e-6)


def test_block_cd_rejects_a_non_composite_fun_at_construction():
    with pytest.raises(TypeError, match="not a composite linear function"):
        hyperopt.BlockCoordinateDescent(fun=lambda w, data: jnp.sum(w ** 2),
                                        block_prox=prox.prox_lasso)


def _kl_projection(x, hyperparams_proj=None):
    return jax.tree.map(lambda t: jax.nn.softmax(t, -1), x)


_kl_mapping = jax.vmap(jax.grad(lambda x: -jnp.sum(jax.scipy.special.entr(x) + x)))


def test_mirror_descent_projection_grad_matches_jaxopt():
    X, yc = _classification()
    X = jnp.asarray(preprocessing.Normalizer().fit_transform(np.asarray(X)))
    Y = jnp.asarray(preprocessing.LabelBinarizer().fit_transform(np.asarray(yc)), X.dtype)
    beta0 = jnp.ones((15, 3)) / 3
    fun_ours, fun_theirs = objective.multiclass_linear_svm_dual, jaxopt.objective.multiclass_linear_svm_dual
    md = hyperopt.MirrorDescent(
        fun=fun_ours, projection_grad=hyperopt.MirrorDescent.make_projection_grad(
            _kl_projection, _kl_mapping), stepsize=2.0, maxiter=3000, tol=1e-9)
    ref = jaxopt.MirrorDescent(
        fun=fun_theirs, projection_grad=jaxopt.MirrorDescent.make_projection_grad(
            _kl_projection, _kl_mapping), stepsize=2.0, maxiter=3000, tol=1e-9)
    sol, state = md.run(beta0, None, 10.0, (X, Y))
    ref_sol, ref_state = ref.run(beta0, None, 10.0, (X, Y))
    np.testing.assert_allclose(sol, ref_sol, atol=1e-7)
    assert set(ref_state._fields) <= set(state._fields)
    assert int(state.iter_num) == int(ref_state.iter_num)
    # by keyword too
    np.testing.assert_allclose(md.run(beta0, hyperparams_proj=None, l2reg=10.0, data=(X, Y)).params,
                               sol, atol=1e-12)
    # the hypergradient at the upstream test's settings (at a tight tol some entries of β
    # underflow to 0, where the KL mirror map log(β) has no derivative, in both libraries)
    md, ref = (dataclasses.replace(md, tol=1e-3, maxiter=500),
               type(ref)(fun=fun_theirs, projection_grad=ref.projection_grad, stepsize=2.0,
                         maxiter=500, tol=1e-3))
    primal = lambda solver: lambda lam: X.T @ (Y - solver.run(beta0, None, lam, (X, Y)).params) / lam
    np.testing.assert_allclose(jax.jacrev(primal(md))(10.0), jax.jacrev(primal(ref))(10.0),
                               atol=1e-6)
