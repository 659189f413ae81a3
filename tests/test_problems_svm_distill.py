"""The multiclass SVM dual and dataset distillation against independent answers.

SVM (wine: 106 training samples, 13 features, 3 classes): primal weights against
scikit-learn's Crammer–Singer LinearSVC with ``C = 1/λ`` and the duality gap; hypergradients
d(validation cross-entropy)/d(log λ) against central finite differences of a solve run to
1e-13. Distillation (digits): the inner model against scikit-learn's LogisticRegression
with ``C = 1/(kλ)``, the hypergradient of one pixel against a central difference, and a
short adam run that must beat the random-real-image baseline.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from hyperopt import linear_solve
from hyperopt.data import load_dataset
from hyperopt.problems.distillation import Distillation, baseline_accuracies
from hyperopt.problems.svm_dual import SVMDual, duality_gap, primal_objective
from hyperopt.solvers import (
    LBFGS,
    BlockCoordinateDescent,
    GradientDescent,
    MirrorDescent,
    ProjectedGradient,
)

LAM = 10.0  # wine: a soft margin (λ <= 1 separates the training set, where dW/dλ = 0)

# Entropic mirror descent approaches the vertices of the simplices only geometrically in
# the (small) gradient gaps: ~30k steps at 3/L to reach tol 1e-8 here (~90k at the
# always-safe step 1/L), against ~250 epochs of BCD.
SVM_SOLVERS = {
    "bcd": functools.partial(BlockCoordinateDescent, maxiter=5000),
    "pg": functools.partial(ProjectedGradient, maxiter=5000),
    "md": functools.partial(MirrorDescent, stepsize=3.0, maxiter=40_000),
}


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def central_difference(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


# ---------------------------------------------------------------------------------------
# Multiclass SVM dual
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wine():
    return load_dataset("wine")


@pytest.fixture(scope="module")
def svm_inners():
    """One wired solver per kind, built once so that each compiles once."""
    problem = SVMDual()
    return {name: problem.inner_solver(make) for name, make in SVM_SOLVERS.items()}


def svm_val_loss(problem, inner, theta, data, w):
    X, y = data.train
    beta = inner.run(problem.init_params(data), theta, X, y, w).params
    W = problem.readout(beta, theta, X, y, w)
    return problem.outer_loss(W, theta, *data.val, jnp.ones(data.n_val, X.dtype))


@pytest.mark.parametrize("name", list(SVM_SOLVERS))
def test_svm_dual_matches_sklearn_crammer_singer(wine, svm_inners, name):
    problem, theta = SVMDual(), jnp.log(LAM)
    X, y = wine.train
    w = jnp.ones(wine.n_train)
    sol = svm_inners[name].run(problem.init_params(wine), theta, X, y, w)
    assert bool(sol.state.converged)
    W = problem.readout(sol.params, theta, X, y, w)
    ref = LinearSVC(multi_class="crammer_singer", C=1 / LAM, fit_intercept=False, tol=1e-14,
                    max_iter=10**7).fit(np.asarray(X), np.asarray(y)).coef_.T
    assert rel(W, ref) < 5e-6
    assert np.all(np.asarray(sol.params) >= 0)
    np.testing.assert_allclose(jnp.sum(sol.params, axis=1), 1.0, atol=1e-12)
    gap = float(duality_gap(sol.params, LAM, X, y, w))
    assert 0 <= gap < 1e-6 * float(primal_objective(W, LAM, X, y, w))
    assert float(problem.metrics(W, theta, *wine.val)["accuracy"]) > 0.9


@pytest.fixture(scope="module")
def tight_bcd():
    return SVMDual().inner_solver(functools.partial(BlockCoordinateDescent, maxiter=1000, tol=1e-12))


@pytest.mark.parametrize("lam", [0.01, 100.0])
def test_bcd_converges_for_small_and_large_lambda(wine, tight_bcd, lam):
    """With JAXopt's block Lipschitz constant (no 1/λ) the steps are λ times too large
    or too small, and BCD stalls (duality gap 1.16 after 1000 epochs at λ=100).

    tol is tight because W = Xᵀ(Y - β)/λ: the residual in β (default 1e-8) leaves a
    relative error of 1e-4 in W at λ = 0.01 (1e-8 with tol 1e-12).
    """
    problem = SVMDual()
    X, y = wine.train
    w = jnp.ones(wine.n_train)
    sol = tight_bcd.run(problem.init_params(wine), jnp.log(lam), X, y, w)
    assert bool(sol.state.converged)  # within 1000 epochs; measured 217 and 133
    W = problem.readout(sol.params, jnp.log(lam), X, y, w)
    ref = LinearSVC(multi_class="crammer_singer", C=1 / lam, fit_intercept=False, tol=1e-14,
                    max_iter=10**7).fit(np.asarray(X), np.asarray(y)).coef_.T
    assert rel(W, ref) < 1e-6  # measured 1e-8 and 4e-11
    # The primal is non-smooth, so the gap is first order in W's error: measured 4e-6, 2e-13.
    assert 0 <= float(duality_gap(sol.params, lam, X, y, w)) < 1e-5 * float(
        primal_objective(W, lam, X, y, w))


def _np_simplex_projection(v):
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = k[u - css / k > 0][-1]
    return np.maximum(v - css[rho - 1] / rho, 0.0)


def test_bcd_epochs_match_a_numpy_gauss_seidel_loop(wine):
    """Three epochs of cyclic BCD on the SVM dual against a plain numpy loop: block i sees
    the rows before it already updated (Gauss–Seidel, through z = Xwᵀβ), takes the step
    1/L_i = λ/||Xw_i||² on ``1/(2λ)||XwᵀY - z||² + Σ_i w_i <β_i, Y_i>`` and projects onto
    the simplex. Guards the block loop's rewrite (the blocks are scanned over)."""
    problem = SVMDual()
    X, y = (np.asarray(a) for a in wine.train)
    w = np.linspace(0.5, 1.5, len(y))  # sample weights: rows of Xw and coefficients differ
    lam, k = 3.0, wine.n_classes
    bcd = problem.inner_solver(functools.partial(BlockCoordinateDescent, maxiter=3, tol=1e-300))
    beta0 = np.full((len(y), k), 1.0 / k)
    got = bcd.run(jnp.asarray(beta0), jnp.log(lam), jnp.asarray(X), jnp.asarray(y), jnp.asarray(w)).params

    Xw, Y = w[:, None] * X, np.eye(k)[y]
    XwY, beta = Xw.T @ Y, beta0.copy()
    for _ in range(3):
        z = Xw.T @ beta
        for i in range(len(y)):
            g_i = Xw[i] @ (z - XwY) / lam + w[i] * Y[i]
            eta = lam / (Xw[i] @ Xw[i])
            new = _np_simplex_projection(beta[i] - eta * g_i)
            z += np.outer(Xw[i], new - beta[i])
            beta[i] = new
    assert rel(got, beta) < 1e-12  # measured: 8e-16
    assert rel(got, beta0) > 0.1  # it moved


@pytest.fixture(scope="module")
def svm_reference_hypergradient(wine):
    problem = SVMDual()
    inner = problem.inner_solver(functools.partial(BlockCoordinateDescent, maxiter=100_000,
                                                   tol=1e-13))
    w = jnp.ones(wine.n_train)
    f = lambda t: float(svm_val_loss(problem, inner, t, wine, w))
    return central_difference(f, float(np.log(LAM)), 1e-4)


@pytest.mark.parametrize("name,implicit", [
    ("bcd", True), ("bcd", False), ("pg", True), ("pg", False), ("md", True)])
def test_svm_hypergradient_matches_finite_differences(wine, svm_inners,
                                                      svm_reference_hypergradient, name, implicit):
    """Implicit (default tol, default linear solve) and unrolled (1000 steps, no early stop).

    Unrolled mirror descent is left out: after 3000 steps it is still 5% off (its iterates
    are not converged), while its implicit hypergradient is exact once the solve is.
    """
    problem = SVMDual()
    if implicit:
        inner = svm_inners[name]
    else:
        make = functools.partial(SVM_SOLVERS[name], maxiter=1000, tol=1e-14, implicit_diff=False)
        inner = problem.inner_solver(make)
    w = jnp.ones(wine.n_train)
    g = jax.grad(lambda t: svm_val_loss(problem, inner, t, wine, w))(jnp.log(LAM))
    fd = svm_reference_hypergradient
    assert abs(fd) > 1e-2  # a real test: the soft-margin hypergradient is not zero
    # measured: bcd 3e-8 / 8e-10, pg 8e-9 / 9e-10 (implicit / unrolled), md 5e-8
    assert abs(float(g) - fd) < 1e-6 * abs(fd)


@pytest.mark.parametrize("name,tol", [("bcd", None), ("pg", 1e-5)])
def test_svm_hypergradient_float32(wine, svm_inners, name, tol):
    """float32 against float64, with every fifth sample weighted 0. The default float32
    tol (1e-4) suffices for BCD (error 7e-5), but projected gradient (FISTA) has not yet
    identified the active set there and its hypergradient is 36% off (0.068 vs 0.105); at
    tol=1e-5 it is right (6e-5)."""
    problem, theta = SVMDual(), jnp.log(LAM)
    mask = np.arange(wine.n_train) % 5 != 0
    reference = jax.grad(lambda t: svm_val_loss(problem, svm_inners["bcd"], t, wine,
                                                jnp.asarray(mask, jnp.float64)))(theta)
    data = load_dataset("wine", dtype="float32")
    inner = problem.inner_solver(functools.partial(SVM_SOLVERS[name], tol=tol))
    w = jnp.asarray(mask, jnp.float32)
    g = jax.grad(lambda t: svm_val_loss(problem, inner, t, data, w))(jnp.log(jnp.float32(LAM)))
    assert g.dtype == jnp.float32
    assert abs(float(g) - float(reference)) < 1e-3 * abs(float(reference))


@pytest.mark.parametrize("name", ["bcd", "md"])  # ProjectedGradient shares MD's arguments
def test_svm_zero_weight_samples_are_dropped(wine, svm_inners, name):
    """A weight-0 sample does not change W (compared with dropping it); for BCD neither
    does it change the hypergradient, which also shows that the implicit system stays
    non-singular with the pinned rows."""
    problem = SVMDual()
    X, y = wine.train
    keep = np.arange(wine.n_train) % 4 != 0
    w = jnp.asarray(keep, X.dtype)
    theta = jnp.log(LAM)
    inner = svm_inners[name]

    def primal(theta, X, y, w):
        init = problem.init_params(wine, n_samples=len(y))
        return problem.readout(inner.run(init, theta, X, y, w).params, theta, X, y, w)

    W_masked = primal(theta, X, y, w)
    W_dropped = primal(theta, X[keep], y[keep], jnp.ones(int(keep.sum())))
    assert rel(W_masked, W_dropped) < 1e-6
    beta = inner.run(problem.init_params(wine), theta, X, y, w).params
    # pinned at their labels' vertices (exactly for BCD; to 1e-301 for mirror descent)
    np.testing.assert_allclose(beta[~keep], jax.nn.one_hot(y[~keep], wine.n_classes), atol=1e-12)
    if name == "bcd":
        loss = lambda t, *split: problem.outer_loss(primal(t, *split), t, *wine.val,
                                                    jnp.ones(wine.n_val))
        g_masked = jax.grad(loss)(theta, X, y, w)
        g_dropped = jax.grad(loss)(theta, X[keep], y[keep], jnp.ones(int(keep.sum())))
        assert abs(float(g_masked - g_dropped)) < 1e-7 * abs(float(g_dropped))


def test_svm_rejects_other_solvers():
    with pytest.raises(ValueError, match="cannot use solver LBFGS"):
        SVMDual().inner_solver(LBFGS)


# ---------------------------------------------------------------------------------------
# Dataset distillation
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_distillation_init_options(digits):
    X, y = np.asarray(digits.X_train), np.asarray(digits.y_train)
    problem = Distillation()
    theta = problem.init_hparams(digits)
    assert theta.shape == (10, 64) and theta.dtype == digits.X_train.dtype
    labels = np.asarray(problem.image_labels(10))
    np.testing.assert_array_equal(labels, np.arange(10))
    for image, label in zip(np.asarray(theta), labels, strict=True):  # a real image of its class
        assert np.any(np.all(X[y == label] == image, axis=1))
    means = Distillation(init="class_mean").init_hparams(digits)
    np.testing.assert_allclose(means, np.stack([X[y == c].mean(0) for c in range(10)]), atol=1e-12)
    three = Distillation(images_per_class=3, init="noise", seed=1)
    assert three.init_hparams(digits).shape == (30, 64)
    np.testing.assert_array_equal(three.image_labels(10), np.repeat(np.arange(10), 3))
    assert problem.images(theta).shape == (10, 8, 8)
    with pytest.raises(ValueError, match="init='zeros'"):
        Distillation(init="zeros")


@pytest.mark.parametrize("make_solver", [
    functools.partial(LBFGS, tol=1e-10),
    functools.partial(GradientDescent, tol=1e-10, maxiter=20_000)])
def test_distillation_inner_matches_sklearn(digits, make_solver):
    problem = Distillation()
    theta = problem.init_hparams(digits)
    labels = problem.image_labels(digits.n_classes)
    w = jnp.ones(digits.n_train)
    sol = problem.inner_solver(make_solver).run(problem.init_params(digits), theta,
                                                *digits.train, w)
    assert bool(sol.state.converged)
    k = theta.shape[0]
    ref = LogisticRegression(C=1 / (k * problem.l2reg), tol=1e-12, max_iter=100_000).fit(
        np.asarray(theta), np.asarray(labels))
    # scikit-learn stops at a gradient norm of 4e-8 (ours: 1e-10), hence 1e-5
    assert rel(sol.params["W"], ref.coef_.T) < 1e-5
    b = np.asarray(sol.params["b"])  # intercepts are defined up to a common shift
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-5)


PIXEL = (3, 20)  # image 3, a pixel that varies across the data set


@pytest.fixture(scope="module")
def pixel_problem(digits):
    """Outer loss on 300 real images; an implicit LBFGS solver solved to 1e-12; the central
    difference of the outer loss in one pixel (h = 1e-3: with h = 1e-5 the inner error
    already shows at 1e-6)."""
    problem = Distillation()
    X, y, w = digits.X_train[:300], digits.y_train[:300], jnp.ones(300)
    theta0 = problem.init_hparams(digits)
    inner = problem.inner_solver(functools.partial(LBFGS, tol=1e-12, maxiter=1000))

    def outer_at(v):
        theta = theta0.at[PIXEL].set(v)
        params = inner.run(problem.init_params(digits), theta, X, y, w).params
        return float(problem.outer_loss(params, theta, X, y, w))

    fd = central_difference(outer_at, float(theta0[PIXEL]), 1e-3)
    return problem, inner, (X, y, w), theta0, fd


@pytest.mark.parametrize("mode", ["lbfgs_implicit", "gd_unrolled"])
def test_distillation_pixel_hypergradient(digits, pixel_problem, mode):
    """Unrolled LBFGS is left out: its derivative is only ~1e-5 accurate (it differentiates
    the curvature history too); unrolled gradient descent converges to the exact one."""
    problem, inner, (X, y, w), theta0, fd = pixel_problem
    if mode == "gd_unrolled":  # GD needs ~680 steps to reach 1e-10 here
        inner = problem.inner_solver(functools.partial(GradientDescent, tol=1e-10, maxiter=1000,
                                                       implicit_diff=False))

    def outer(theta):
        params = inner.run(problem.init_params(digits), theta, X, y, w).params
        return problem.outer_loss(params, theta, X, y, w)

    g = jax.grad(outer)(theta0)[PIXEL]
    assert abs(fd) > 1e-4
    assert abs(float(g) - fd) < 1e-6 * abs(fd)  # measured 2e-9 (implicit), 9e-9 (unrolled GD)


@pytest.mark.slow
def test_distillation_beats_random_real_images():
    """A plain adam loop over the 10 images (float32, implicit hypergradients)."""
    data = load_dataset("digits", dtype="float32")
    baselines = baseline_accuracies(data, l2reg=0.1, seed=0)
    problem = Distillation(l2reg=0.1, init="random_real", seed=0)
    # The Hessian is positive semi-definite (singular only along a common intercept
    # shift, which no right-hand side excites), so CG is exact and much cheaper than
    # the default dense LU of 650 unknowns.
    inner = problem.inner_solver(functools.partial(LBFGS, implicit_diff_solve=linear_solve.solve_cg))
    X, y = data.train
    w = jnp.ones(data.n_train, X.dtype)
    init = problem.init_params(data)
    optimizer = optax.adam(0.1)

    def outer(theta):
        return problem.outer_loss(inner.run(init, theta, X, y, w).params, theta, X, y, w)

    @jax.jit
    def step(theta, opt_state):
        loss, grad = jax.value_and_grad(outer)(theta)
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss

    theta = problem.init_hparams(data)
    opt_state = optimizer.init(theta)
    start = time.perf_counter()
    for _ in range(150):
        theta, opt_state, loss = step(theta, opt_state)
    params = inner.run(init, theta, X, y, w).params
    learned = float(problem.metrics(params, theta, *data.test)["accuracy"])
    print(f"\ndistilled 10 images: test accuracy {learned:.3f} (final train loss {float(loss):.3f}, "
          f"{time.perf_counter() - start:.1f} s); baselines {baselines}")
    assert np.isfinite(float(loss))
    assert learned > baselines["random_real"] + 0.15
    assert learned > baselines["class_mean"]
