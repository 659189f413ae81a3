"""Ridge, logistic and lasso problems: inner solutions against scikit-learn, hypergradients
(implicit and unrolled) against central finite differences, and the k-fold outer loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sklearn.linear_model as sk

import hyperopt
from hyperopt.bilevel import Bilevel, make_splits
from hyperopt.data import load_dataset
from hyperopt.problems import Lasso, Logistic, Ridge, RidgeCholesky


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes", seed=0)


@pytest.fixture(scope="module")
def cancer():
    return load_dataset("breast_cancer", seed=0)


@pytest.fixture(scope="module")
def wine():
    return load_dataset("wine", seed=0)


def _run(problem, make_solver, data, theta):
    inner = problem.inner_solver(make_solver)
    return inner.run(problem.init_params(data), theta, data.X_train, data.y_train,
                     jnp.ones(data.n_train)).params


@pytest.mark.parametrize("make_solver", [
    functools.partial(hyperopt.LBFGS, tol=1e-11),
    functools.partial(hyperopt.GradientDescent, tol=1e-11, maxiter=5000),
    RidgeCholesky,
], ids=["lbfgs", "gd", "cholesky"])
def test_ridge_matches_sklearn(diabetes, make_solver):
    lam = 0.05
    w = _run(Ridge(), make_solver, diabetes, jnp.log(lam))
    ref = sk.Ridge(alpha=lam * diabetes.n_train, fit_intercept=False).fit(diabetes.X_train, diabetes.y_train)
    np.testing.assert_allclose(w, ref.coef_, atol=1e-9)


def test_per_feature_ridge_matches_scaled_closed_form(diabetes):
    lams = np.geomspace(1e-3, 1.0, diabetes.n_features)
    w = _run(Ridge(per_feature=True), RidgeCholesky, diabetes, jnp.log(lams))
    X, y = np.asarray(diabetes.X_train), np.asarray(diabetes.y_train)
    ref = np.linalg.solve(X.T @ X / len(y) + np.diag(lams), X.T @ y / len(y))
    np.testing.assert_allclose(w, ref, atol=1e-10)


@pytest.mark.parametrize("dataset", ["cancer", "wine"])
def test_logistic_matches_sklearn(dataset, request):
    data = request.getfixturevalue(dataset)
    lam = 1e-2
    params = _run(Logistic(), functools.partial(hyperopt.LBFGS, tol=1e-11), data, jnp.log(lam))
    ref = sk.LogisticRegression(C=1 / (data.n_train * lam), tol=1e-12, max_iter=10_000).fit(
        data.X_train, data.y_train)
    logits = data.X_test @ params["W"] + params["b"]
    if data.task == "binary":
        proba = jax.nn.sigmoid(logits[:, 0])
        np.testing.assert_allclose(proba, ref.predict_proba(data.X_test)[:, 1], atol=1e-6)
    else:  # the multinomial model is over-parameterized: compare probabilities
        np.testing.assert_allclose(jax.nn.softmax(logits), ref.predict_proba(data.X_test), atol=1e-6)


@pytest.mark.parametrize("make_solver", [
    functools.partial(hyperopt.ProximalGradient, tol=1e-12),
    # diabetes has strongly correlated features: cyclic coordinate descent needs many epochs
    functools.partial(hyperopt.BlockCoordinateDescent, tol=1e-12, maxiter=20_000),
], ids=["proximal_gradient", "bcd"])
@pytest.mark.parametrize("per_feature", [False, True])
def test_lasso_matches_sklearn(diabetes, make_solver, per_feature):
    lam = 0.03
    weights = np.linspace(0.5, 2.0, diabetes.n_features) if per_feature else np.ones(diabetes.n_features)
    theta = {"l1reg": jnp.log(lam * weights) if per_feature else jnp.log(lam)}
    w = _run(Lasso(per_feature=per_feature), make_solver, diabetes, theta)
    # weighted lasso = plain lasso on rescaled features X_j / weight_j
    X = np.asarray(diabetes.X_train) / weights
    ref = sk.Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, diabetes.y_train)
    np.testing.assert_allclose(w, ref.coef_ / weights, atol=1e-9)
    assert 0 < np.sum(ref.coef_ == 0) or per_feature


@pytest.mark.parametrize("make_solver", [
    functools.partial(hyperopt.ProximalGradient, tol=1e-12),
    functools.partial(hyperopt.BlockCoordinateDescent, tol=1e-12, maxiter=20_000),
    # takes (λ, μ) itself where the prox-based solvers take prox_elastic_net's (λ, μ / λ)
    functools.partial(hyperopt.CoordinateDescent, tol=1e-14),
], ids=["proximal_gradient", "bcd", "coordinate_descent"])
def test_elastic_net_matches_sklearn(diabetes, make_solver):
    """The same objective ½ mean((Xw - y)²) + l1 ||w||₁ + ½ l2 ||w||² whichever the solver."""
    l1, l2 = 0.02, 0.1
    w = _run(Lasso(elastic_net=True, fit_intercept=False), make_solver,
             diabetes, {"l1reg": jnp.log(l1), "l2reg": jnp.log(l2)})
    # sklearn: alpha * (r ||w||_1 + (1 - r)/2 ||w||²) => alpha r = l1, alpha (1 - r) = l2
    alpha = l1 + l2
    ref = sk.ElasticNet(alpha=alpha, l1_ratio=l1 / alpha, fit_intercept=False, tol=1e-14,
                        max_iter=100_000).fit(diabetes.X_train, diabetes.y_train)
    np.testing.assert_allclose(w, ref.coef_, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Hypergradients through the Bilevel pieces: implicit, unrolled, finite differences
# ---------------------------------------------------------------------------------------

CASES = {
    "ridge_lbfgs": (Ridge(), functools.partial(hyperopt.LBFGS, tol=1e-11, maxiter=300), "diabetes", -2.0),
    "ridge_per_feature_cholesky": (Ridge(per_feature=True), RidgeCholesky, "diabetes",
                                   np.linspace(-3, 0, 10)),
    "logistic_binary": (Logistic(), functools.partial(hyperopt.LBFGS, tol=1e-11, maxiter=300), "cancer", -4.0),
    "logistic_multiclass": (Logistic(), functools.partial(hyperopt.LBFGS, tol=1e-11, maxiter=500), "wine", -3.0),
    "lasso_pg": (Lasso(), functools.partial(hyperopt.ProximalGradient, tol=1e-12, maxiter=2000),
                 "diabetes", {"l1reg": np.log(0.03)}),
    "lasso_bcd": (Lasso(), functools.partial(hyperopt.BlockCoordinateDescent, tol=1e-12, maxiter=20_000),
                  "diabetes", {"l1reg": np.log(0.03)}),
    "elastic_net_pg": (Lasso(elastic_net=True), functools.partial(hyperopt.ProximalGradient, tol=1e-12,
                       maxiter=2000), "diabetes", {"l1reg": np.log(0.03), "l2reg": np.log(0.1)}),
    "elastic_net_cd": (Lasso(elastic_net=True), functools.partial(hyperopt.CoordinateDescent, tol=1e-14),
                       "diabetes", {"l1reg": np.log(0.03), "l2reg": np.log(0.1)}),
}


def _direction(theta, seed=0):
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves, strict=True)])


@pytest.mark.parametrize("case", CASES)
def test_hypergradient_implicit_unrolled_fd(case, request):
    problem, make_solver, dataset, theta = CASES[case]
    data = request.getfixturevalue(dataset)
    theta = jax.tree.map(lambda t: jnp.asarray(t, jnp.float64), theta)
    splits = make_splits(problem, data)
    init = jax.tree.map(lambda p: p[None], problem.init_params(data))
    tol = jnp.asarray(1e-12)

    implicit = Bilevel(problem, make_solver, optax.sgd(1.0))
    unrolled = Bilevel(problem, functools.partial(make_solver, implicit_diff=False), optax.sgd(1.0))

    @jax.jit
    def outer(theta):
        params, _ = implicit.inner_solve(theta, init, splits, tol)
        return implicit._outer_objective(jax.tree.map(lambda p: p[0], params), theta, splits, 0)

    params, states = jax.jit(implicit.inner_solve)(theta, init, splits, tol)
    assert bool(states.converged.all())
    _, g_imp, residual = jax.jit(implicit.implicit_hypergradient)(theta, params, splits, tol)
    _, g_unr, _ = jax.jit(unrolled.unrolled_hypergradient)(theta, init, splits, tol)
    v = _direction(theta)
    h = 1e-5
    plus = jax.tree.map(lambda t, d: t + h * d, theta, v)
    minus = jax.tree.map(lambda t, d: t - h * d, theta, v)
    fd = float(outer(plus) - outer(minus)) / (2 * h)
    dot = lambda g: float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True)))
    assert float(residual) < 1e-10
    assert abs(dot(g_imp) - fd) <= 1e-6 * max(abs(fd), 1e-3), (dot(g_imp), fd)
    assert abs(dot(g_unr) - fd) <= 1e-5 * max(abs(fd), 1e-3), (dot(g_unr), fd)


# ---------------------------------------------------------------------------------------
# Cross-validated outer loss
# ---------------------------------------------------------------------------------------

def test_kfold_splits_partition_train_and_val(diabetes):
    splits = make_splits(Ridge(), diabetes, cv_folds=5, seed=3)
    masks = np.asarray(splits.outer_w)
    assert masks.shape == (5, diabetes.n_train + diabetes.n_val)
    np.testing.assert_array_equal(masks.sum(0), 1)  # every sample validates exactly once
    np.testing.assert_array_equal(np.asarray(splits.inner_w), 1 - masks)
    assert masks.sum(1).min() >= (diabetes.n_train + diabetes.n_val) // 5


def test_cv_outer_loss_equals_loop_over_folds(diabetes):
    """vmap over fold masks == a Python loop fitting scikit-learn's Ridge on each fold."""
    lam = 0.1
    problem = Ridge()
    bl = Bilevel(problem, RidgeCholesky, optax.sgd(0.1), cv_folds=4)
    splits = make_splits(problem, diabetes, cv_folds=4)
    init = jnp.zeros((4, diabetes.n_features))
    params, _ = jax.jit(bl.inner_solve)(jnp.log(lam), init, splits, jnp.asarray(1e-8))
    loss, _, _ = jax.jit(bl.implicit_hypergradient)(jnp.log(lam), params, splits, jnp.asarray(1e-8))
    X, y = map(np.asarray, splits.inner)
    expected = []
    for mask in np.asarray(splits.outer_w).astype(bool):
        model = sk.Ridge(alpha=lam * (~mask).sum(), fit_intercept=False).fit(X[~mask], y[~mask])
        expected.append(np.mean((model.predict(X[mask]) - y[mask]) ** 2))
    assert abs(float(loss) - np.mean(expected)) < 1e-10


def test_problem_rejects_wrong_task_and_solver(diabetes, cancer):
    with pytest.raises(ValueError, match="problem 'logistic' needs a binary or multiclass dataset; "
                                         "'diabetes' is a regression dataset"):
        Logistic().check_data(diabetes)
    with pytest.raises(ValueError, match="problem 'ridge' cannot use solver ProximalGradient; allowed:"):
        Ridge().inner_solver(hyperopt.ProximalGradient)
    with pytest.raises(ValueError, match="cv_folds=1; allowed"):
        make_splits(Ridge(), diabetes, cv_folds=1)
