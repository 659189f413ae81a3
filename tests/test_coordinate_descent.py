"""Coordinate descent for the lasso / elastic net: scikit-learn's solutions and duality gap,
and the support-restricted hypergradient against the full proximal fixed point and float64
central finite differences."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import ElasticNet, Lasso

from hyperopt import LinearSolveWarning, prox, root_vjp
from hyperopt.linear_solve import solve_lu
from hyperopt.solvers import CoordinateDescent

N, P = 60, 40


@pytest.fixture(scope="module")
def data():
    X, y = make_regression(n_samples=N, n_features=P, n_informative=8, noise=5.0, random_state=0)
    y = y / np.std(y) + 3.0  # an offset the intercept has to find
    sw = np.random.default_rng(0).uniform(0.5, 2.0, N)
    return X, y, sw


def _lam_max(X, y, sw, fit_intercept):
    sw = np.ones(len(y)) if sw is None else sw
    if fit_intercept:
        X = X - sw @ X / sw.sum()
        y = y - sw @ y / sw.sum()
    return np.max(np.abs(X.T @ (sw * y))) / sw.sum()


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b)))


# ws_caps=(8, 38): working sets and supports gathered into 8, 38 or all P columns (the
# lax.switch branches that large p takes); the default caps exceed P here (one branch).
CAPS = pytest.mark.parametrize("caps", [(128, 1024), (8, 38)], ids=["caps_default", "caps_8_38"])


@CAPS
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_lasso_matches_sklearn(data, fit_intercept, weighted, caps):
    X, y, sw = data
    sw = sw if weighted else None
    lam = 0.05 * _lam_max(X, y, sw, fit_intercept)
    cd = CoordinateDescent(fit_intercept=fit_intercept, tol=1e-14, maxiter=500, ws_caps=caps)
    out = cd.run(jnp.zeros(P), lam, X, y, sw)
    sk = Lasso(alpha=lam, fit_intercept=fit_intercept, tol=1e-14, max_iter=100_000).fit(X, y, sample_weight=sw)
    assert 3 < np.count_nonzero(sk.coef_) < P  # sparse, not trivial
    assert _rel(out.params, sk.coef_) < 1e-6
    assert float(cd.intercept(out.params, X, y, sw)) == pytest.approx(sk.intercept_, rel=1e-6, abs=1e-9)
    assert bool(out.state.converged)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_elastic_net_matches_sklearn(data, fit_intercept):
    X, y, sw = data
    l1, l2 = 0.03, 0.2
    cd = CoordinateDescent(fit_intercept=fit_intercept, tol=1e-14, maxiter=500)
    out = cd.run(jnp.zeros(P), (l1, l2), X, y, sw)
    sk = ElasticNet(alpha=l1 + l2, l1_ratio=l1 / (l1 + l2), fit_intercept=fit_intercept, tol=1e-14,
                    max_iter=100_000).fit(X, y, sample_weight=sw)
    assert _rel(out.params, sk.coef_) < 1e-6
    assert float(cd.intercept(out.params, X, y, sw)) == pytest.approx(sk.intercept_, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_per_feature_penalties_match_sklearn_on_scaled_columns(data, fit_intercept):
    """λ_j = α c_j is scikit-learn's Lasso(α) on the columns X_j / c_j, with w_j = v_j / c_j."""
    X, y, _ = data
    c = np.random.default_rng(1).uniform(0.3, 3.0, P)
    alpha = 0.05 * _lam_max(X / c, y, None, fit_intercept)
    out = CoordinateDescent(fit_intercept=fit_intercept, tol=1e-14, maxiter=500).run(
        jnp.zeros(P), jnp.asarray(alpha * c), X, y)
    sk = Lasso(alpha=alpha, fit_intercept=fit_intercept, tol=1e-14, max_iter=100_000).fit(X / c, y)
    assert 3 < np.count_nonzero(sk.coef_) < P
    assert _rel(out.params, sk.coef_ / c) < 1e-6


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_duality_gap_is_sklearns(data, fit_intercept):
    """``state.gap`` at scikit-learn's (unconverged) solution is its ``dual_gap_``, with sample
    weights; ``error`` divides it by Σ s y_c² / Σ s, so that ``tol`` means scikit-learn's."""
    X, y, sw = data
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = ElasticNet(alpha=0.5, l1_ratio=0.7, fit_intercept=fit_intercept, tol=1e-12, max_iter=2).fit(
            X, y, sample_weight=sw)
    state = CoordinateDescent(fit_intercept=fit_intercept).init_state(jnp.asarray(sk.coef_), (0.35, 0.15), X, y, sw)
    assert float(state.gap) == pytest.approx(sk.dual_gap_, rel=1e-10)
    yc = y - (sw @ y / sw.sum() if fit_intercept else 0.0)
    assert float(state.error) == pytest.approx(sk.dual_gap_ / (sw @ yc ** 2 / sw.sum()), rel=1e-10)


def test_a_looser_tol_stops_earlier_at_its_gap(data):
    X, y, _ = data
    lam = 0.05 * _lam_max(X, y, None, False)
    loose = CoordinateDescent(tol=1e-4, newton=False).run(jnp.zeros(P), lam, X, y)
    tight = CoordinateDescent(tol=1e-12, maxiter=1000, newton=False).run(jnp.zeros(P), lam, X, y)
    assert float(loose.state.error) <= 1e-4 < float(CoordinateDescent().init_state(
        jnp.zeros(P), lam, X, y).error)
    assert float(tight.state.error) <= 1e-12
    assert int(loose.state.epochs) < int(tight.state.epochs)
    # the Newton step on the support reaches the tight gap without the epochs' slow tail
    newton = CoordinateDescent(tol=1e-12, maxiter=1000).run(jnp.zeros(P), lam, X, y)
    assert float(newton.state.error) <= 1e-12
    assert int(newton.state.epochs) < int(tight.state.epochs)
    assert _rel(newton.params, tight.params) < 1e-8


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_newton_step_on_the_support_gives_sklearns_solution(data, fit_intercept):
    """The support's Newton step (signs kept) lands on scikit-learn's Lasso / ElasticNet
    solution, with sample weights, in fewer epochs than the epochs alone."""
    from sklearn.linear_model import ElasticNet, Lasso

    X, y, sw = data
    lam = 0.1 * _lam_max(X, y, sw, fit_intercept)
    for hp, ref in ((lam, Lasso(alpha=lam, fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000)),
                    ((lam, 0.3 * lam), ElasticNet(alpha=1.3 * lam, l1_ratio=1 / 1.3,
                                                 fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000))):
        ref.fit(X, y, sample_weight=sw)
        runs = {nt: CoordinateDescent(fit_intercept=fit_intercept, tol=1e-12, maxiter=1000, newton=nt).run(
            jnp.zeros(P), hp, X, y, sw) for nt in (False, True)}
        assert _rel(runs[True].params, ref.coef_) < 1e-6
        assert _rel(runs[True].params, runs[False].params) < 1e-8
        assert int(runs[True].state.epochs) < int(runs[False].state.epochs)


def test_unrolled_epochs_reach_the_same_solution(data):
    X, y, sw = data
    lam = 0.05 * _lam_max(X, y, sw, True)
    ws = CoordinateDescent(fit_intercept=True, tol=1e-13, maxiter=500).run(jnp.zeros(P), lam, X, y, sw)
    full = CoordinateDescent(fit_intercept=True, tol=1e-13, maxiter=2000, implicit_diff=False).run(
        jnp.zeros(P), lam, X, y, sw)
    assert _rel(full.params, ws.params) < 1e-6


# ---------------------------------------------------------------------------------------
# Hypergradients
# ---------------------------------------------------------------------------------------

def _smooth(w, X, y, sw, fit_intercept):
    r = y - X @ w
    if fit_intercept:
        r = r - jnp.sum(sw * r) / jnp.sum(sw)
    return 0.5 * jnp.sum(sw * r ** 2) / jnp.sum(sw)


def _full_system_vjp(w, hyper, X, y, sw, g, fit_intercept, elastic):
    """The same vjp through the full proximal fixed point w = prox(w - η∇f(w)) (p×p, dense LU).

    CD's ``(λ, μ)`` penalize ``λ|w| + ½ μ w²``; prox_elastic_net's ``(a, b)`` penalize
    ``a (|w| + ½ b w²)`` (JAXopt's definition): the same objective is ``(λ, μ / λ)``, and the
    vjp is taken with respect to CD's ``(λ, μ)``."""
    eta = 1.0 / np.linalg.norm(np.sqrt(sw)[:, None] * X, 2) ** 2 * np.sum(sw)

    def prox_fn(x, hyper, eta):
        if not elastic:
            return prox.prox_lasso(x, hyper, eta)
        lam, mu = hyper
        return prox.prox_elastic_net(x, (lam, mu / lam), eta)

    def fixed_point(w, hyper, X, y, sw):
        grad = jax.grad(_smooth)(w, X, y, sw, fit_intercept)
        return prox_fn(w - eta * grad, hyper, eta) - w

    return root_vjp(fixed_point, w, (hyper, X, y, sw), g, solve=solve_lu)


@CAPS
@pytest.mark.parametrize("case", ["lasso", "lasso_intercept", "per_feature", "elastic_net"])
def test_support_hypergradient_equals_full_system(data, case, caps):
    X, y, sw = (jnp.asarray(a) for a in data)
    fit_intercept = case == "lasso_intercept"
    lam = 0.05 * _lam_max(*data, fit_intercept)
    if case == "per_feature":
        hyper = jnp.asarray(lam * np.random.default_rng(2).uniform(0.5, 2.0, P))
    elif case == "elastic_net":
        hyper = (jnp.asarray(lam), jnp.asarray(0.1))
    else:
        hyper = jnp.asarray(lam)
    cd = CoordinateDescent(fit_intercept=fit_intercept, tol=1e-14, maxiter=500, ws_caps=caps)
    w = cd.run(jnp.zeros(P), hyper, X, y, sw).params
    support = np.flatnonzero(np.asarray(w))
    assert 3 < support.size < P
    if caps == (8, 38):
        assert support.size <= 38  # a gathered branch (8 or 38 columns), not the full one
    g = jnp.asarray(np.random.default_rng(3).normal(size=P))
    restricted = root_vjp(cd.optimality_fun, w, (hyper, X, y, sw), g)  # default: CG on the support
    full = _full_system_vjp(w, hyper, X, y, sw, g, fit_intercept, case == "elastic_net")
    for a, b in zip(jax.tree.leaves(restricted), jax.tree.leaves(full), strict=True):
        assert _rel(a, b) < 1e-8
    # the restricted system is (X_Sᵀ W X_S / n + μ I) v = g_S; check its closed form for λ
    if case == "lasso":
        Xs = np.asarray(X)[:, support]
        H = Xs.T @ (np.asarray(sw)[:, None] * Xs) / np.sum(sw)
        v = np.linalg.solve(H, np.asarray(g)[support])
        expected = -np.sign(np.asarray(w)[support]) @ v
        assert float(restricted[0]) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("implicit", [True, False])
def test_hypergradient_matches_finite_differences(data, fit_intercept, implicit):
    """d/dlog λ of the validation MSE of (w*, b*) — implicit (support CG) and unrolled."""
    X, y, _ = (jnp.asarray(a) for a in data)
    Xt, yt, Xv, yv = X[:40], y[:40], X[40:], y[40:]
    sw = jnp.ones(40)
    cd = CoordinateDescent(fit_intercept=fit_intercept, tol=1e-15, maxiter=300 if implicit else 3000,
                           implicit_diff=implicit)

    def val_loss(t):
        w = cd.run(jnp.zeros(P), jnp.exp(t), Xt, yt, sw).params
        b = cd.intercept(w, Xt, yt, sw)
        return jnp.mean((Xv @ w + b - yv) ** 2)

    t0 = float(np.log(0.1 * _lam_max(np.asarray(Xt), np.asarray(yt), None, fit_intercept)))
    grad = float(jax.grad(val_loss)(t0))
    h = 1e-4
    fd = (float(val_loss(t0 + h)) - float(val_loss(t0 - h))) / (2 * h)
    assert abs(grad) > 1e-3
    assert grad == pytest.approx(fd, rel=1e-6)


def test_bad_options():
    with pytest.raises(ValueError, match="ws_start=0; allowed: a positive integer"):
        CoordinateDescent(ws_start=0)
    with pytest.raises(ValueError, match="ws_ratio=1.5; allowed"):
        CoordinateDescent(ws_ratio=1.5)


# ---------------------------------------------------------------------------------------
# The lasso problem's start
# ---------------------------------------------------------------------------------------

def test_lasso_starts_below_lambda_max_and_refuses_a_start_above():
    from hyperopt.data import load_dataset
    from hyperopt.problems import Lasso as LassoProblem

    data = load_dataset("make_regression", n_samples=80, n_features=30, n_informative=5, noise=5.0, seed=1)
    X, y = np.asarray(data.X_train), np.asarray(data.y_train) + 2.0  # not centred: the intercept matters
    data = dataclasses.replace(data, y_train=jnp.asarray(y))
    problem = LassoProblem()
    lam_max = problem.lambda_max(data)
    # scikit-learn's own boundary: all zero at λ_max, not just below it
    assert np.all(Lasso(alpha=lam_max * (1 + 1e-9), tol=1e-12).fit(X, y).coef_ == 0)
    assert np.any(Lasso(alpha=lam_max * (1 - 1e-3), tol=1e-12).fit(X, y).coef_ != 0)
    assert float(jnp.exp(problem.init_hparams(data)["l1reg"])) == pytest.approx(0.1 * lam_max, rel=1e-12)
    assert float(jnp.exp(LassoProblem(init_ratio=0.5).init_hparams(data)["l1reg"])) == pytest.approx(0.5 * lam_max)
    with pytest.raises(ValueError, match=r"init_l1reg=.* is at or above lambda_max=.*all zero"):
        LassoProblem(init_l1reg=1.01 * lam_max).init_hparams(data)
    with pytest.raises(ValueError, match=r"init_ratio=1.5; allowed: a number in \(0, 1\)"):
        LassoProblem(init_ratio=1.5)


def test_ridge_intercept_matches_sklearn_and_l2_starts_are_data_relative():
    """Ridge(fit_intercept=True) = scikit-learn's Ridge(fit_intercept=True) (the readout's
    intercept too); Ridge/Logistic start at init_ratio × the mean feature variance."""
    from sklearn.linear_model import Ridge as SkRidge

    from hyperopt.data import load_dataset
    from hyperopt.problems import Logistic, Ridge, RidgeCholesky
    from hyperopt.problems.base import feature_scale
    from hyperopt.solvers import LBFGS

    X, y = make_regression(n_samples=50, n_features=8, noise=3.0, random_state=4)
    X = 3.0 * X + 1.5
    y = y + 7.0
    lam = 0.2
    sk = SkRidge(alpha=lam * len(y), fit_intercept=True).fit(X, y)
    problem = Ridge(fit_intercept=True)
    sw = jnp.ones(len(y))
    for make in (RidgeCholesky, functools.partial(LBFGS, tol=1e-12, maxiter=500)):
        inner = problem.inner_solver(make)
        w = inner.run(jnp.zeros(8), jnp.log(lam), jnp.asarray(X), jnp.asarray(y), sw).params
        model = problem.readout(w, None, jnp.asarray(X), jnp.asarray(y), sw)
        assert _rel(model["coef"], sk.coef_) < 1e-8
        assert float(model["intercept"]) == pytest.approx(sk.intercept_, rel=1e-8)
    assert feature_scale(X) == pytest.approx(9.0 * np.mean(np.var(X / 3.0, axis=0)), rel=1e-12)
    data = load_dataset("diabetes", seed=0)  # standardized: scale 1, the old absolute defaults
    assert float(jnp.exp(Ridge().init_hparams(data))) == pytest.approx(1.0, rel=1e-10)
    assert float(jnp.exp(Ridge(init_ratio=0.5).init_hparams(data))) == pytest.approx(0.5, rel=1e-10)
    assert float(jnp.exp(Ridge(init_l2reg=3.0).init_hparams(data))) == pytest.approx(3.0)
    cancer = load_dataset("breast_cancer", seed=0)
    assert float(jnp.exp(Logistic().init_hparams(cancer))) == pytest.approx(1e-2, rel=1e-10)


def test_support_partition_and_ranking_equal_argsort():
    """The O(p) support partition and the one-sort ranking give argsort's order."""
    from hyperopt.solvers.coordinate_descent import _ranking, _support_first

    rng = np.random.default_rng(3)
    for p in (1, 7, 300, 7129):
        mask = jnp.asarray(rng.uniform(size=p) < 0.1)
        cap = min(128, p)
        assert np.array_equal(_support_first(mask, cap), np.argsort(~np.asarray(mask), kind="stable")[:cap])
        score = np.where(np.asarray(mask), -np.inf, rng.normal(size=p) * 10.0 ** rng.integers(-5, 5, p))
        assert np.array_equal(_ranking(jnp.asarray(score)), np.argsort(score, kind="stable"))


def test_p_much_larger_than_n_converges_cold_at_a_small_penalty():
    """p >> n (the leukemia shape of experiments/bench_lasso_cv.py, 44 x 7129 training rows): a
    cold solve at lambda_max / 20, where the support nears n and its signs change along the way.
    The Newton step up to the first sign change converges in a few working-set iterations
    (measured: 18; the all-or-nothing step it replaced was refused until the signs settled and
    this solve ran into maxiter=200 unconverged); scikit-learn's solution."""
    from hyperopt.data import load_dataset

    data = load_dataset("make_regression", n_samples=72, n_features=7129, n_informative=10, noise=10,
                        seed=0)
    X, y = np.asarray(data.X_train), np.asarray(data.y_train)
    lam = _lam_max(X, y, None, True) / 20
    out = CoordinateDescent(fit_intercept=True, tol=1e-10).run(jnp.zeros(X.shape[1]), lam, X, y)
    sk = Lasso(alpha=lam, tol=1e-14, max_iter=1_000_000).fit(X, y)
    assert bool(out.state.converged) and int(out.state.iter_num) < 60
    assert np.count_nonzero(sk.coef_) > 20
    assert _rel(out.params, sk.coef_) < 1e-6


def test_lasso_drops_the_gathered_sizes_it_cannot_need():
    """A lasso solution has at most n non-zeros: the sizes above the first that holds 2n
    (working sets) or n (the support system) would be dead code in the compiled program;
    the elastic net's supports are not bounded by n and keep them all."""
    cd = CoordinateDescent()  # ws_caps=(256, 1024)
    assert cd._caps(7129, 2 * 44, lasso=True) == (256,)
    assert cd._caps(7129, 2 * 44, lasso=False) == (256, 1024)
    assert cd._caps(7129, 2 * 400, lasso=True) == (256, 1024)
    assert cd._caps(7129, 2 * 600, lasso=True) == (256, 1024)
    assert cd._caps(1000, 2 * 400, lasso=True) == (256,)
    assert cd._caps(200, 2 * 44, lasso=True) == ()
    assert CoordinateDescent(ws_caps=(16, 64, 128))._caps(300, 30, lasso=True) == (16, 64)


@pytest.mark.parametrize("case", ["lasso", "elastic_net"])
def test_p_much_larger_than_n_with_the_sizes_kept(case):
    """n=30, p=300, ws_caps=(16, 64, 128): the lasso keeps 16 and 64 (2n = 60; its working
    sets end at 56 here), the elastic net all three (its support of 85 > n takes a working
    set of 170: the all-p branch). scikit-learn's solution from a cold start at a small
    penalty, and the support hypergradient equals the full proximal fixed point's."""
    X, y = make_regression(n_samples=30, n_features=300, n_informative=6, noise=2.0, random_state=4)
    y = y / np.std(y)
    lam = _lam_max(X, y, None, False) / 30
    hyper = lam if case == "lasso" else (lam, 0.5)
    cd = CoordinateDescent(tol=1e-14, maxiter=500, ws_caps=(16, 64, 128))
    out = cd.run(jnp.zeros(300), hyper, X, y)
    if case == "lasso":
        sk = Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(X, y)
    else:
        sk = ElasticNet(alpha=lam + 0.5, l1_ratio=lam / (lam + 0.5), fit_intercept=False, tol=1e-14,
                        max_iter=1_000_000).fit(X, y)
    assert bool(out.state.converged)
    # the largest working set of the run: within the lasso's kept 64; past the net's 128
    assert int(out.state.ws_size) <= 64 if case == "lasso" else int(out.state.ws_size) > 128
    assert 10 < np.count_nonzero(sk.coef_) and (case == "elastic_net" or np.count_nonzero(sk.coef_) <= 30)
    assert _rel(out.params, sk.coef_) < 1e-6
    sw = jnp.ones(30)
    g = jnp.asarray(np.random.default_rng(5).normal(size=300))
    hyper = jnp.asarray(lam) if case == "lasso" else (jnp.asarray(lam), jnp.asarray(0.5))
    restricted = root_vjp(cd.optimality_fun, out.params, (hyper, jnp.asarray(X), jnp.asarray(y), sw), g)
    full = _full_system_vjp(out.params, hyper, jnp.asarray(X), jnp.asarray(y), sw, g, False,
                            case == "elastic_net")
    for a, b in zip(jax.tree.leaves(restricted[0]), jax.tree.leaves(full[0]), strict=True):
        assert _rel(a, b) < 1e-8


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_lasso_without_an_all_p_copy_works_through_a_dense_start(fit_intercept):
    """n=30, p=300, ws_caps=(16, 64, 128): the lasso's largest kept size (64) holds 2n, so its
    program has no all-p copy and its working sets stop at 64. From a dense start (the
    least-norm interpolant: 300 non-zeros, past every kept size) it works through the support
    64 columns at a time and reaches scikit-learn's solution."""
    X, y = make_regression(n_samples=30, n_features=300, n_informative=6, noise=2.0, random_state=4)
    y = y / np.std(y)
    cd = CoordinateDescent(tol=1e-14, maxiter=500, ws_caps=(16, 64, 128), fit_intercept=fit_intercept)
    assert cd._branches(300, 2 * 30, lasso=True) == (16, 64)
    assert cd._branches(300, 2 * 30, lasso=False) == (16, 64, 128, 300)
    lam = _lam_max(X, y, None, fit_intercept) / 30
    w0 = np.linalg.pinv(X) @ y
    assert np.count_nonzero(w0) == 300
    out = cd.run(jnp.asarray(w0), lam, X, y)
    sk = Lasso(alpha=lam, fit_intercept=fit_intercept, tol=1e-14, max_iter=1_000_000).fit(X, y)
    assert bool(out.state.converged) and int(out.state.ws_size) == 64
    assert _rel(out.params, sk.coef_) < 1e-6


def test_lasso_support_system_past_the_kept_sizes_is_nan_not_wrong():
    """The lasso's support system keeps no all-p copy when a kept size holds n (here 64 ≥ 30):
    a support of 40 (> n, ≤ 64) is still exact (the gradient on the support, computed here by
    hand); a support of 100 (> 64) has no copy that holds it and is NaN — its system is
    singular (40 or 100 features, 30 rows) — so that the hypergradient's failure shows. The
    elastic net keeps the all-p copy and is exact at 100."""
    X, y = make_regression(n_samples=30, n_features=300, n_informative=6, noise=2.0, random_state=4)
    y = y / np.std(y)
    Xj, yj, sw = jnp.asarray(X), jnp.asarray(y), jnp.ones(30)
    cd = CoordinateDescent(ws_caps=(16, 64, 128))
    rng = np.random.default_rng(7)
    lam = 0.3
    for size, mu in ((40, 0.0), (100, 0.0), (100, 0.5)):
        w = np.zeros(300)
        w[rng.choice(300, size, replace=False)] = rng.normal(size=size)
        hyper = jnp.asarray(lam) if mu == 0 else (jnp.asarray(lam), jnp.asarray(mu))
        out = np.asarray(cd.optimality_fun(jnp.asarray(w), hyper, Xj, yj, sw))
        if mu == 0 and size > 64:
            assert np.all(np.isnan(out))
            g = jnp.asarray(rng.normal(size=300))
            with pytest.warns(LinearSolveWarning, match="backward error nan"):
                vjp = root_vjp(cd.optimality_fun, jnp.asarray(w), (hyper, Xj, yj, sw), g)
                assert np.isnan(float(vjp[0]))
            continue
        s = w != 0
        grad = -X.T @ (y - X @ w) / 30 + mu * w
        expected = np.where(s, grad + lam * np.sign(w), w)
        assert _rel(out, expected) < 1e-12
