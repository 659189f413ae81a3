"""Solvers against scikit-learn / scipy, and implicit vs unrolled hypergradients against
closed forms and central finite differences (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import Lasso, LogisticRegression, Ridge

import hyperopt
from hyperopt import prox


def _standardize(X):
    return (X - X.mean(0)) / X.std(0)


@pytest.fixture(scope="module")
def regression():
    X, y = load_diabetes(return_X_y=True)
    X, y = _standardize(X), (y - y.mean()) / y.std()
    return jnp.asarray(X[:150]), jnp.asarray(y[:150]), jnp.asarray(X[150:250]), jnp.asarray(y[150:250])


@pytest.fixture(scope="module")
def classification():
    X, y = load_breast_cancer(return_X_y=True)
    X = _standardize(X)[:, :10]
    y = y.astype(float)
    return jnp.asarray(X[:200]), jnp.asarray(y[:200]), jnp.asarray(X[200:300]), jnp.asarray(y[200:300])


def ridge_objective(w, lam, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.vdot(w, w)


def least_squares(w, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2)


def logistic_objective(w, lam, X, y):
    z = X @ w
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 0.5 * lam * jnp.vdot(w, w)


def val_mse(w, X, y):
    return jnp.mean((X @ w - y) ** 2)


def ridge_closed_form(lam, X, y):
    X, y = np.asarray(X), np.asarray(y)
    n, p = X.shape
    return np.linalg.solve(X.T @ X / n + lam * np.eye(p), X.T @ y / n)


def ridge_hypergradient(lam, X, y, Xv, yv):
    """d/dλ of val_mse(w*(λ)) in closed form (numpy)."""
    X, y, Xv, yv = map(np.asarray, (X, y, Xv, yv))
    n, p = X.shape
    K = X.T @ X / n + lam * np.eye(p)
    w = np.linalg.solve(K, X.T @ y / n)
    dw = -np.linalg.solve(K, w)
    return 2 * np.mean((Xv @ w - yv) * (Xv @ dw))


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ---------------------------------------------------------------------------------------
# Solutions against scikit-learn / scipy
# ---------------------------------------------------------------------------------------

# 1/L for the standardized diabetes subset (largest eigenvalue of XᵀX/n is about 4.1)
GD_VARIANTS = {
    "fixed_step": dict(stepsize=0.2),
    "line_search": dict(),
    "nesterov": dict(stepsize=0.2, acceleration=True),
}


@pytest.mark.parametrize("variant", GD_VARIANTS)
def test_gradient_descent_matches_sklearn_ridge(regression, variant):
    X, y, _, _ = regression
    lam = 0.1
    gd = hyperopt.GradientDescent(fun=ridge_objective, maxiter=2000, tol=1e-10, **GD_VARIANTS[variant])
    sol = gd.run(jnp.zeros(X.shape[1]), lam, X, y)
    ref = Ridge(alpha=lam * X.shape[0], fit_intercept=False, tol=1e-12).fit(X, y).coef_
    assert bool(sol.state.converged)
    assert rel(sol.params, ref) < 1e-8


def test_lbfgs_matches_sklearn_logistic(classification):
    X, y, _, _ = classification
    lam = 0.01
    sol = hyperopt.LBFGS(fun=logistic_objective, tol=1e-10).run(jnp.zeros(X.shape[1]), lam, X, y)
    ref = LogisticRegression(C=1 / (lam * X.shape[0]), fit_intercept=False, tol=1e-12,
                             max_iter=10_000).fit(X, y).coef_[0]
    assert bool(sol.state.converged) and int(sol.state.iter_num) < 100
    assert rel(sol.params, ref) < 1e-6


def _sklearn_lasso(lam, X, y):
    return Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_


def lasso_fun():
    return hyperopt.CompositeLinearFunction(
        subfun=lambda z, X, y: 0.5 * jnp.mean((z - y) ** 2),
        design=lambda X, y: X.T,
        subfun_lipschitz=lambda X, y: 1.0 / y.shape[0])


@pytest.mark.parametrize("solver_name", ["proximal_gradient", "bcd"])
def test_lasso_solvers_match_sklearn(regression, solver_name):
    X, y, _, _ = regression
    lam = 0.05
    if solver_name == "bcd":
        solver = hyperopt.BlockCoordinateDescent(fun=lasso_fun(), block_prox=prox.prox_lasso, tol=1e-12)
    else:
        solver = hyperopt.ProximalGradient(fun=least_squares, prox=prox.prox_lasso, tol=1e-12, maxiter=5000)
    sol = solver.run(jnp.zeros(X.shape[1]), lam, X, y)
    ref = _sklearn_lasso(lam, np.asarray(X), np.asarray(y))
    assert bool(sol.state.converged)
    assert 0 < np.sum(ref == 0) < X.shape[1]  # a non-trivial support
    np.testing.assert_allclose(sol.params, ref, atol=1e-9)


def test_projected_gradient_matches_scipy_nnls(regression):
    X, y, _, _ = regression
    pg = hyperopt.ProjectedGradient(fun=least_squares, projection=prox.projection_non_negative,
                                    tol=1e-12, maxiter=5000)
    sol = pg.run(jnp.zeros(X.shape[1]), None, X, y)
    ref, _ = scipy.optimize.nnls(np.asarray(X), np.asarray(y))
    assert 0 < np.sum(ref == 0) < X.shape[1]
    np.testing.assert_allclose(sol.params, ref, atol=1e-8)


def simplex_qp(beta, A, b):
    """½||A β_row - b||² summed over rows of β (each row on a simplex)."""
    return 0.5 * jnp.sum((beta @ A.T - b) ** 2)


@pytest.fixture(scope="module")
def simplex_problem():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=(3, 6)))


def test_mirror_descent_matches_scipy_on_simplices(simplex_problem):
    A, b = simplex_problem
    md = hyperopt.MirrorDescent(fun=simplex_qp, stepsize=0.05, maxiter=20_000, tol=1e-10)
    sol = md.run(jnp.full((3, 4), 0.25), A, b)
    for i in range(3):
        res = scipy.optimize.minimize(
            lambda v: 0.5 * np.sum((np.asarray(A) @ v - np.asarray(b[i])) ** 2), np.full(4, 0.25),
            method="SLSQP", bounds=[(0, None)] * 4,
            constraints={"type": "eq", "fun": lambda v: v.sum() - 1}, options={"ftol": 1e-14})
        np.testing.assert_allclose(sol.params[i], res.x, atol=1e-6)
    assert bool(sol.state.converged)


# ---------------------------------------------------------------------------------------
# Hypergradients: implicit vs unrolled vs closed form / finite differences
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["fixed_step", "line_search"])
def test_gd_ridge_hypergradient_implicit_and_unrolled(regression, variant):
    X, y, Xv, yv = regression
    lam = 0.1
    exact = ridge_hypergradient(lam, X, y, Xv, yv)
    grads = {}
    for implicit in (True, False):
        gd = hyperopt.GradientDescent(fun=ridge_objective, maxiter=3000, tol=1e-12,
                                      implicit_diff=implicit, **GD_VARIANTS[variant])
        assert bool(gd.run(jnp.zeros(X.shape[1]), lam, X, y).state.converged)
        loss = lambda lam: val_mse(gd.run(jnp.zeros(X.shape[1]), lam, X, y).params, Xv, yv)
        grads[implicit] = float(jax.grad(loss)(lam))
    assert abs(grads[True] - exact) / abs(exact) < 1e-8
    assert abs(grads[False] - exact) / abs(exact) < 1e-8


def _fd(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_lbfgs_logistic_hypergradient_implicit_unrolled_fd(classification):
    X, y, Xv, yv = classification
    lam = 1e-3

    def val_logloss(w):
        z = Xv @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - yv * z)

    def loss(lam, implicit):
        solver = hyperopt.LBFGS(fun=logistic_objective, maxiter=300, tol=1e-12, implicit_diff=implicit)
        return val_logloss(solver.run(jnp.zeros(X.shape[1]), lam, X, y).params)

    g_implicit = float(jax.grad(loss)(lam, True))
    g_unrolled = float(jax.grad(loss)(lam, False))
    fd = _fd(lambda lam_: float(loss(lam_, True)), lam)
    assert np.isfinite(g_unrolled)
    assert abs(g_implicit - fd) / abs(fd) < 1e-6
    # Unrolled quasi-Newton derivatives converge more slowly than the iterates (measured
    # 2e-5 here when the iterate is at 1e-12): finite and right to a few digits.
    assert abs(g_unrolled - fd) / abs(fd) < 1e-4


def lasso_hypergradient(lam, X, y, Xv, yv):
    """On the support S: w_S = (X_SᵀX_S/n)⁻¹(X_Sᵀy/n − λ sign w_S), so dw_S/dλ = −(X_SᵀX_S/n)⁻¹ sign w_S."""
    X, y, Xv, yv = map(np.asarray, (X, y, Xv, yv))
    w = _sklearn_lasso(lam, X, y)
    S = w != 0
    dw = np.zeros_like(w)
    dw[S] = -np.linalg.solve(X[:, S].T @ X[:, S] / X.shape[0], np.sign(w[S]))
    return 2 * np.mean((Xv @ w - yv) * (Xv @ dw))


@pytest.mark.parametrize("solver_name", ["proximal_gradient", "bcd"])
def test_lasso_hypergradient_implicit_and_unrolled(regression, solver_name):
    X, y, Xv, yv = regression
    lam = 0.05
    exact = lasso_hypergradient(lam, X, y, Xv, yv)
    for implicit in (True, False):
        if solver_name == "bcd":
            solver = hyperopt.BlockCoordinateDescent(fun=lasso_fun(), block_prox=prox.prox_lasso,
                                                     tol=1e-12, maxiter=300, implicit_diff=implicit)
        else:
            solver = hyperopt.ProximalGradient(fun=least_squares, prox=prox.prox_lasso, tol=1e-12,
                                               maxiter=3000, implicit_diff=implicit)
        g = jax.grad(lambda lam: val_mse(solver.run(jnp.zeros(X.shape[1]), lam, X, y).params, Xv, yv))(lam)
        assert abs(float(g) - exact) / abs(exact) < 1e-6, (implicit, float(g), exact)


def test_projected_gradient_hypergradient_wrt_data(regression):
    """NNLS: derivative of the solution w.r.t. a scaling of y, implicit vs unrolled vs FD."""
    X, y, Xv, yv = regression

    def loss(s, implicit):
        pg = hyperopt.ProjectedGradient(fun=least_squares, projection=prox.projection_non_negative,
                                        tol=1e-12, maxiter=3000, implicit_diff=implicit)
        return val_mse(pg.run(jnp.zeros(X.shape[1]), None, X, s * y).params, Xv, yv)

    fd = _fd(lambda s: float(loss(s, True)), 1.0)
    for implicit in (True, False):
        assert abs(float(jax.grad(loss)(1.0, implicit)) - fd) / abs(fd) < 1e-6


def test_mirror_descent_hypergradient(simplex_problem):
    A, b = simplex_problem

    def loss(s, implicit):
        # a coordinate close to (not on) the boundary makes entropic MD slow: ~10k steps
        md = hyperopt.MirrorDescent(fun=simplex_qp, stepsize=0.05, maxiter=20_000, tol=1e-11,
                                    implicit_diff=implicit)
        sol = md.run(jnp.full((3, 4), 0.25), A, s * b)
        assert bool(sol.state.converged)
        beta = sol.params
        return jnp.sum(beta * jnp.arange(4.0))

    fd = _fd(lambda s: float(loss(s, True)), 1.0)
    assert abs(float(jax.grad(loss)(1.0, True)) - fd) < 1e-6 * max(1.0, abs(fd))
    assert abs(float(jax.grad(loss)(1.0, False)) - fd) < 1e-5 * max(1.0, abs(fd))


# ---------------------------------------------------------------------------------------
# Transformations and compilation
# ---------------------------------------------------------------------------------------


def test_seed_example_runs_as_written(regression):
    """The seed's ridge example with `jaxopt` replaced by `hyperopt` (its two typos fixed)."""
    X_train, y_train, X_val, y_val = regression
    X, y = X_train, y_train
    init_params = jnp.zeros(X.shape[1])
    l2reg = 0.1

    def ridge_reg_objective(params, l2reg, X, y):
        residuals = jnp.dot(X, params) - y
        return jnp.mean(residuals ** 2) + 0.5 * l2reg * jnp.dot(params, params)

    def ridge_reg_solution(l2reg, X, y):
        gd = hyperopt.GradientDescent(fun=ridge_reg_objective, maxiter=500, implicit_diff=True)
        return gd.run(init_params, l2reg=l2reg, X=X, y=y).params

    J = jax.jacobian(ridge_reg_solution, argnums=0)(l2reg, X, y)
    n, p = X.shape
    K = 2 * np.asarray(X).T @ np.asarray(X) / n + l2reg * np.eye(p)
    w = np.linalg.solve(K, 2 * np.asarray(X).T @ np.asarray(y) / n)
    assert rel(J, -np.linalg.solve(K, w)) < 1e-5  # 500 GD steps, as the seed has it

    def validation_loss(l2reg):
        sol = ridge_reg_solution(l2reg, X_train, y_train)
        residuals = jnp.dot(X_val, sol) - y_val
        return jnp.mean(residuals ** 2)

    g = float(jax.grad(validation_loss)(l2reg))
    Xv, yv = np.asarray(X_val), np.asarray(y_val)
    exact = 2 * np.mean((Xv @ w - yv) * (Xv @ -np.linalg.solve(K, w)))
    assert abs(g - exact) / abs(exact) < 1e-5


def test_vmap_over_hyperparameters_equals_loop(regression):
    X, y, Xv, yv = regression
    gd = hyperopt.GradientDescent(fun=ridge_objective, stepsize=0.2, maxiter=3000, tol=1e-12)
    hypergrad = jax.grad(lambda lam: val_mse(gd.run(jnp.zeros(X.shape[1]), lam, X, y).params, Xv, yv))
    lams = jnp.array([0.05, 0.1, 1.0])
    batched = jax.vmap(hypergrad)(lams)
    for i, lam in enumerate(lams):
        # tol 1e-12: the batched and the single programs round differently, agreeing to ~1e-12
        assert abs(float(batched[i]) - float(hypergrad(lam))) < 1e-11
        assert abs(float(batched[i]) - ridge_hypergradient(float(lam), X, y, Xv, yv)) < 1e-8


def test_second_call_does_not_recompile(regression):
    X, y, _, _ = regression
    traces = []

    def objective(w, lam, X, y):
        traces.append(1)  # runs once per trace, not per call
        return ridge_objective(w, lam, X, y)

    solver = hyperopt.LBFGS(fun=objective, tol=1e-10)
    solver.run(jnp.zeros(X.shape[1]), 0.1, X, y)
    n_traces = len(traces)
    sol = solver.run(jnp.zeros(X.shape[1]), 0.2, X, y)
    assert len(traces) == n_traces
    np.testing.assert_allclose(sol.params, ridge_closed_form(0.2, X, y), rtol=1e-7)


def test_has_aux_objective(regression):
    X, y, _, _ = regression

    def objective(w, lam, X, y):
        r = X @ w - y
        return 0.5 * jnp.mean(r ** 2) + 0.5 * lam * jnp.vdot(w, w), {"train_mse": jnp.mean(r ** 2)}

    sol = hyperopt.LBFGS(fun=objective, has_aux=True).run(jnp.zeros(X.shape[1]), 0.1, X, y)
    w = ridge_closed_form(0.1, X, y)
    assert abs(float(sol.state.aux["train_mse"]) - np.mean((np.asarray(X) @ w - np.asarray(y)) ** 2)) < 1e-8


@pytest.mark.parametrize("kwargs, match", [
    (dict(maxiter=0), "maxiter=0; allowed: a positive integer"),
    (dict(tol=-1.0), "tol=-1.0; allowed: a positive number"),
])
def test_bad_solver_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hyperopt.GradientDescent(fun=ridge_objective, **kwargs)


def test_lbfgs_converges_on_strongly_curved_quadratic():
    """Regression: the Armijo test must use the true slope gᵀd (a substituted -||g||² made
    every step fail its line search once the curvature exceeded ~1e4)."""
    A = jnp.diag(jnp.linspace(1.0, 3.0, 5)) * 1e5
    f = lambda x, s: 0.5 * x @ (s * A) @ x - jnp.sum(x)
    sol = hyperopt.LBFGS(fun=f, maxiter=200).run(jnp.zeros(5), 1.0)
    assert bool(sol.state.converged) and int(sol.state.iter_num) < 50
    np.testing.assert_allclose(sol.params, 1.0 / jnp.diag(A), rtol=1e-9)


@pytest.mark.parametrize("solver_cls", [hyperopt.GradientDescent, hyperopt.LBFGS])
def test_python_int_arguments_stay_static(solver_cls):
    """A Python int (here a class count used for one_hot) is static, as in custom_root."""
    X = jnp.asarray(np.random.default_rng(0).normal(size=(30, 3)))
    labels = jnp.arange(30) % 4

    def objective(W, k, X, labels):
        logits = X @ W
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.sum(jax.nn.one_hot(labels, k) * logits, -1)) \
            + 0.05 * jnp.sum(W ** 2)

    for k in (4, 5):  # a new static value compiles a new function
        W = solver_cls(fun=objective, maxiter=500).run(jnp.zeros((3, k)), k, X, labels).params
        assert W.shape == (3, k)
        assert float(jnp.linalg.norm(jax.grad(objective)(W, k, X, labels))) < 1e-8


def test_unroll_checkpoint_gives_the_same_hypergradient(classification):
    X, y, Xv, yv = classification

    def hypergrad(checkpoint):
        solver = hyperopt.LBFGS(fun=logistic_objective, maxiter=100, tol=1e-12, implicit_diff=False,
                                unroll_checkpoint=checkpoint)
        val = lambda lam: jnp.mean((Xv @ solver.run(jnp.zeros(X.shape[1]), lam, X, y).params - yv) ** 2)
        return float(jax.jit(jax.grad(val))(1e-2))

    # rounding only: recomputed iterations may pick a step differing in the last bits (the
    # zoom search's cubic interpolation), which the 100 unrolled steps amplify to ~1e-9
    assert abs(hypergrad(True) - hypergrad(False)) <= 1e-7 * abs(hypergrad(False))
