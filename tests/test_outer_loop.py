"""What a run hands back and when it stops: the refit model equals scikit-learn's, user folds
match scikit-learn's KFold, the stopping rule stops at the exact optimum, the tolerance
schedule changes nothing in the answer, and a flat outer loss is reported."""

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import Lasso as SkLasso
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model import Ridge as SkRidge
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold

import hyperopt
from hyperopt import compile_cache
from hyperopt.bilevel import Bilevel, ZeroHypergradientWarning, fit, init_state, make_splits, model_arrays
from hyperopt.data import load_dataset
from hyperopt.folds import fold_masks, load_folds
from hyperopt.outer import lbfgs_backtracking
from hyperopt.problems import Lasso, Logistic, Ridge


@pytest.fixture(scope="module", autouse=True)
def shared_compilations(tmp_path_factory):
    """Runs of equal shapes compile equal programs: read them from a persistent cache."""
    compile_cache.enable(tmp_path_factory.mktemp("jax_cache"))
    yield
    compile_cache.disable()


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes", seed=0)


@pytest.fixture(scope="module")
def default_run(diabetes):
    """Ridge on diabetes, hold-out, with the defaults: L-BFGS outer steps, tolerance schedule,
    stopping rule, refit on train ∪ val."""
    return fit(Bilevel(_without_intercept(Ridge), hyperopt.LBFGS, lbfgs_backtracking()), diabetes, steps=100)


@pytest.fixture(scope="module")
def sparse_regression():
    return load_dataset("make_regression", n_samples=120, n_features=30, n_informative=5,
                        noise=5.0, seed=1)


def _without_intercept(cls, **options):
    """The problem without an intercept where it has the option (closed forms below assume none)."""
    if "fit_intercept" in {f.name for f in dataclasses.fields(cls)}:
        options["fit_intercept"] = False
    return cls(**options)


def _coef_intercept(model):
    arrays = model_arrays(model)
    return arrays["coef"], float(arrays.get("intercept", 0.0))


def _trval(data):
    return (np.concatenate([data.X_train, data.X_val]), np.concatenate([data.y_train, data.y_val]))


def _ridge_w(X, y, lam):
    return np.linalg.solve(X.T @ X / len(y) + lam * np.eye(X.shape[1]), X.T @ y / len(y))


def _exact_holdout_lambda(data):
    """argmin over log λ of the closed-form hold-out validation MSE (to 1e-10 in log λ)."""
    X, y = np.asarray(data.X_train), np.asarray(data.y_train)
    Xv, yv = np.asarray(data.X_val), np.asarray(data.y_val)
    val = lambda t: np.mean((Xv @ _ridge_w(X, y, np.exp(t)) - yv) ** 2)
    return float(np.exp(minimize_scalar(val, bounds=(-10, 3), method="bounded",
                                        options={"xatol": 1e-10}).x))


# ---------------------------------------------------------------------------------------
# The returned model
# ---------------------------------------------------------------------------------------

def test_holdout_ridge_returns_the_train_val_refit(diabetes, default_run):
    result = default_run
    lam = result.best_hparams["l2reg"]
    X, y = _trval(diabetes)
    sk = SkRidge(alpha=lam * len(y), fit_intercept=False, solver="cholesky").fit(X, y)
    coef, intercept = _coef_intercept(result.model)
    np.testing.assert_allclose(coef, sk.coef_, rtol=1e-6)
    assert intercept == 0
    Xt, yt = np.asarray(diabetes.X_test), np.asarray(diabetes.y_test)
    assert result.model_metrics["test_loss"] == pytest.approx(np.mean((Xt @ sk.coef_ - yt) ** 2), rel=1e-9)
    assert result.best_metrics["test_loss"] == result.model_metrics["test_loss"]
    # test metrics are computed at the end only, never per step
    assert not any(k.startswith("test_") for r in result.history for k in r)
    # the initial model is the same refit at the initial λ = 1
    w0 = _ridge_w(X, y, 1.0)
    assert result.initial["test_loss"] == pytest.approx(np.mean((Xt @ w0 - yt) ** 2), rel=1e-8)
    assert result.initial["val_loss"] == result.history[0]["val_loss"]


def test_holdout_lasso_returns_the_train_val_refit(sparse_regression):
    """With the problem's own intercept setting (scikit-learn fits the same one)."""
    data = sparse_regression
    problem = Lasso(init_l1reg=0.05)
    result = fit(Bilevel(problem, functools.partial(hyperopt.ProximalGradient, maxiter=5000),
                         lbfgs_backtracking()), data, steps=4)
    lam = result.best_hparams["l1reg"]
    X, y = _trval(data)
    sk = SkLasso(alpha=lam, fit_intercept=getattr(problem, "fit_intercept", False), tol=1e-14,
                 max_iter=100_000).fit(X, y)
    assert np.count_nonzero(sk.coef_) < X.shape[1]  # a sparse solution: the test means something
    coef, intercept = _coef_intercept(result.model)
    np.testing.assert_allclose(coef, sk.coef_, rtol=1e-6, atol=1e-9 * np.abs(sk.coef_).max())
    assert intercept == pytest.approx(sk.intercept_, rel=1e-6, abs=1e-9)


def _sk_val_mse(lam, data, fit_intercept=True):
    model = SkLasso(alpha=lam, fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000).fit(
        np.asarray(data.X_train), np.asarray(data.y_train))
    return float(np.mean((model.predict(np.asarray(data.X_val)) - np.asarray(data.y_val)) ** 2))


def test_path_start_evaluates_the_path_and_starts_at_its_best(sparse_regression):
    """start="path" (the lasso's default): the grid λ_max·10^(-k/10) point nearest the
    problem's start (k = 10), every other point in the direction the hypergradient gives
    until the validation loss rises, then the two beside the best; each point's loss is
    scikit-learn's; the run starts at the best and ends at least as low as a fine grid."""
    data = sparse_regression
    problem = Lasso()
    result = fit(Bilevel(problem, hyperopt.CoordinateDescent, lbfgs_backtracking()), data, steps=30)
    lam_max = problem.lambda_max(data)
    lams = np.array([row["hparam/l1reg"] for row in result.path])
    ks = 10 * np.log10(lam_max / lams)
    np.testing.assert_allclose(ks, np.round(ks), atol=1e-9)
    ks = np.round(ks).astype(int)
    losses = np.array([row["val_loss"] for row in result.path])
    sk = np.array([_sk_val_mse(lam, data) for lam in lams])
    np.testing.assert_allclose(losses, sk, rtol=1e-6)  # solved to the final tolerance
    walk = len(ks) - 2
    assert ks[0] == 10  # init_ratio = 0.1: λ_max / 10
    # the direction: down the penalty where the validation loss falls with it (as here)
    assert _sk_val_mse(lam_max * 10 ** -1.1, data) < _sk_val_mse(lam_max * 10 ** -0.9, data)
    assert list(ks[:walk]) == list(range(10, 10 + 2 * walk, 2))  # every other point
    # it stopped where the loss rose, or at the walk's lowest point (its hypergradient
    # pointing back), and not before
    assert losses[walk - 1] > losses[walk - 2] or np.argmin(losses[:walk]) == walk - 1
    assert np.all(np.diff(losses[:walk - 1]) < 0)
    best_walk = ks[int(np.argmin(losses[:walk]))]
    assert sorted(ks[walk:]) == [best_walk - 1, best_walk + 1]
    assert result.initial["start"] == "path"
    assert result.initial["val_loss"] == pytest.approx(losses.min())
    assert result.initial["hparams"]["l1reg"] == pytest.approx(lams[np.argmin(losses)])
    fine = min(_sk_val_mse(lam, data) for lam in lam_max * np.geomspace(1, 1e-3, 301))
    assert result.status == "converged"
    assert "xtol=0.01" in result.stop_reason  # the lasso's own (its loss has kinks)
    assert _sk_val_mse(result.best_hparams["l1reg"], data) <= fine * (1 + 1e-5)


def test_start_is_checked_and_init_starts_at_the_problems_start(sparse_regression):
    data = sparse_regression
    bilevel = Bilevel(Lasso(), hyperopt.CoordinateDescent, lbfgs_backtracking())
    with pytest.raises(ValueError, match="start='grid'; allowed: auto, path, init"):
        fit(bilevel, data, steps=1, start="grid")
    with pytest.raises(ValueError, match="start='path': problem 'lasso' has no regularization path"):
        fit(Bilevel(Lasso(init_l1reg=0.05), hyperopt.CoordinateDescent, lbfgs_backtracking()), data,
            steps=1, start="path")
    result = fit(bilevel, data, steps=1, start="init")
    assert result.path is None and "start" not in result.initial
    assert result.initial["hparams"]["l1reg"] == pytest.approx(0.1 * Lasso().lambda_max(data), rel=1e-12)


def test_refit_train_returns_the_training_split_model(diabetes):
    result = fit(Bilevel(_without_intercept(Ridge), hyperopt.LBFGS, lbfgs_backtracking()), diabetes, steps=3,
                 refit="train")
    w = _ridge_w(np.asarray(diabetes.X_train), np.asarray(diabetes.y_train), result.best_hparams["l2reg"])
    np.testing.assert_allclose(_coef_intercept(result.model)[0], w, rtol=1e-6)
    assert result.refit == "train"
    with pytest.raises(ValueError, match="refit='train' needs a hold-out"):
        fit(Bilevel(Ridge(), hyperopt.LBFGS, lbfgs_backtracking(), cv_folds=3), diabetes, steps=1,
            refit="train")
    with pytest.raises(ValueError, match="refit='nope'; allowed: train_val, train"):
        fit(Bilevel(Ridge(), hyperopt.LBFGS, lbfgs_backtracking()), diabetes, steps=1, refit="nope")


def test_fit_limits_the_blas_threads_while_it_runs(diabetes):
    """blas_threads=1 (default): the LAPACK calls of the run's programs on one thread, the
    caller's setting back afterwards; None leaves it."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    bilevel = Bilevel(_without_intercept(Ridge), hyperopt.LBFGS, lbfgs_backtracking())
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == {2}
        seen, kept = [], []
        fit(bilevel, diabetes, steps=2, callback=lambda state, record: seen.append(blas_threads()))
        assert seen == [{1}, {1}] and blas_threads() == {2}
        fit(bilevel, diabetes, steps=2, blas_threads=None,
            callback=lambda state, record: kept.append(blas_threads()))
        assert kept == [{2}, {2}]
    with pytest.raises(ValueError, match="blas_threads=0; allowed: a positive integer or None"):
        fit(bilevel, diabetes, steps=1, blas_threads=0)


def test_eval_every_logs_test_metrics_of_the_refit(diabetes):
    result = fit(Bilevel(_without_intercept(Ridge), hyperopt.LBFGS, optax.adam(0.3)), diabetes, steps=4,
                 eval_every=2, stop=None)
    assert ["test_loss" in r for r in result.history] == [False, True, False, True]
    X, y = _trval(diabetes)
    lam = result.history[1]["hparam/l2reg"]
    Xt, yt = np.asarray(diabetes.X_test), np.asarray(diabetes.y_test)
    expected = np.mean((Xt @ _ridge_w(X, y, lam) - yt) ** 2)
    assert result.history[1]["test_loss"] == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------------------------------
# Stopping rule, optimizer, tolerance schedule
# ---------------------------------------------------------------------------------------

def test_stopping_rule_stops_at_the_exact_optimum(diabetes, default_run):
    exact = _exact_holdout_lambda(diabetes)
    result = default_run
    assert result.status == "converged" and len(result.history) < 30, result.stop_reason
    assert "xtol=0.001" in result.stop_reason
    # the stop only fires at the final inner tolerance, after `window` small updates
    assert all(r["update_size"] <= 1e-3 and r["inner_tol"] == 1e-10 for r in result.history[-2:])
    assert result.history[-3]["update_size"] > 1e-3
    # the last steps are below xtol in log λ and the quasi-Newton steps shrink superlinearly,
    # so the answer is much closer than xtol to the optimum
    assert abs(result.best_hparams["l2reg"] / exact - 1) < 1e-5, (result.best_hparams, exact)  # measured 3e-7
    # a fixed-step adam does not settle: it uses every step
    adam = fit(Bilevel(_without_intercept(Ridge), hyperopt.LBFGS, optax.adam(0.1)), diabetes, steps=20)
    assert adam.status == "completed" and len(adam.history) == 20


def test_tolerance_schedule_finds_the_tight_tolerance_lambda(diabetes, default_run):
    """The loose-to-tight schedule (default) ends at the λ of tight solves throughout. Both
    stop after two updates below xtol = 1e-3 in log λ; the quasi-Newton steps shrink
    superlinearly, so both land far closer than that to the exact optimum (measured 3e-7)."""
    exact = _exact_holdout_lambda(diabetes)
    scheduled = default_run
    tight = fit(Bilevel(_without_intercept(Ridge), hyperopt.LBFGS, lbfgs_backtracking(), inner_tol=None),
                diabetes, steps=100)
    tols = [r["inner_tol"] for r in scheduled.history]
    assert tols[0] == pytest.approx(1e-4) and tols[-1] == pytest.approx(1e-10)
    assert {r["inner_tol"] for r in tight.history} == {1e-10}
    lam_s, lam_t = scheduled.best_hparams["l2reg"], tight.best_hparams["l2reg"]
    assert abs(lam_s / lam_t - 1) < 1e-5 and abs(lam_s / exact - 1) < 1e-5, (lam_s, lam_t, exact)
    # the loose early solves are cheaper
    assert scheduled.history[0]["inner_iterations"] < tight.history[0]["inner_iterations"]


def test_schedule_reaches_the_final_tolerance_exactly():
    """1e-4 · 0.1⁶ is 1.0000000000000004e-10 in floating point: the seventh step runs at the
    final tolerance itself (it counts for the stopping rule), not a rounding above it."""
    bilevel = Bilevel(Ridge(), hyperopt.LBFGS, lbfgs_backtracking())
    tols = [float(bilevel.tol_at(k, np.float64)) for k in range(9)]
    assert 1e-4 * 0.1 ** 6 > 1e-10  # the rounding this guards against
    assert tols[:6] == pytest.approx([1e-4 * 0.1 ** k for k in range(6)], rel=1e-12)
    assert tols[6:] == [1e-10] * 3
    assert [float(bilevel.tol_at(k, np.float32)) for k in range(2)] == [float(np.float32(1e-4))] * 2


def test_backtracking_lbfgs_minimizes_rosenbrock():
    """The optimizer alone, with the function value as ``value``: from the standard start it
    must backtrack (the first steps overshoot) and reach the minimum (1, 1)."""
    def rosenbrock(p):
        return (1 - p["a"]) ** 2 + 100 * (p["b"] - p["a"] ** 2) ** 2

    opt = lbfgs_backtracking(max_step=0.5)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(rosenbrock)(params)
        updates, state = opt.update(grad, state, params, value=value)
        return optax.apply_updates(params, updates), state, value

    params = {"a": jnp.asarray(-1.2), "b": jnp.asarray(1.0)}
    state = opt.init(params)
    values = []
    for _ in range(200):
        params, state, value = step(params, state)
        values.append(float(value))
    grad = jax.grad(rosenbrock)(params)
    assert float(params["a"]) == pytest.approx(1.0, abs=1e-6) and float(params["b"]) == pytest.approx(1.0, abs=1e-6)
    assert int(state.accepted) < 200 and any(b > a for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError, match="needs params and value="):
        opt.update(grad, state, params)


@pytest.mark.filterwarnings("ignore::hyperopt.bilevel.DivergenceWarning")
def test_zero_hypergradient_is_reported_once(sparse_regression):
    """A lasso penalty above λ_max gives an all-zero solution: the hypergradient is exactly
    zero and λ cannot move; the run says so once and records it."""
    data = sparse_regression
    lam_max = float(np.max(np.abs(np.asarray(data.X_train).T @ np.asarray(data.y_train))) / data.n_train)
    bl = Bilevel(Lasso(), hyperopt.ProximalGradient, lbfgs_backtracking())
    splits = make_splits(bl.problem, data)
    theta = {"l1reg": jnp.log(jnp.asarray(10 * lam_max))}
    state = init_state(bl, data, splits)._replace(theta=theta, best_theta=theta,
                                                  opt_state=bl.optimizer.init(theta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(bl, data, steps=8, state=state, stop=None)
    zero = [w for w in caught if issubclass(w.category, ZeroHypergradientWarning)]
    assert len(zero) == 1 and "exactly zero for 3 outer steps" in str(zero[0].message)
    assert len(result.warnings) == 1 and result.warnings[0].startswith("ZeroHypergradientWarning")
    assert np.all(_coef_intercept(result.model)[0] == 0)
    assert all(r["hypergrad_norm"] == 0 for r in result.history)


# ---------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------

def _kfold_ids(n, splitter):
    ids = np.empty(n, int)
    for k, (_, val) in enumerate(splitter.split(np.zeros((n, 1)))):
        ids[val] = k
    return ids


def test_user_folds_match_sklearn_kfold_ridge(diabetes):
    X, y = _trval(diabetes)
    lam = 0.1
    kf = KFold(5, shuffle=True, random_state=0)
    expected = np.mean([np.mean((X[va] @ SkRidge(alpha=lam * len(tr), fit_intercept=False).fit(
        X[tr], y[tr]).coef_ - y[va]) ** 2) for tr, va in kf.split(X)])
    solver = functools.partial(hyperopt.LBFGS, tol=1e-12)
    for cv in (kf, _kfold_ids(len(y), kf)):
        bl = Bilevel(_without_intercept(Ridge, init_l2reg=lam), solver, lbfgs_backtracking(), cv_folds=cv,
                     inner_tol=None)
        result = fit(bl, diabetes, steps=1, stop=None)
        assert result.history[0]["val_loss"] == pytest.approx(expected, rel=1e-8)


def test_user_folds_match_sklearn_kfold_logistic():
    data = load_dataset("breast_cancer", seed=0)
    X, y = _trval(data)
    lam = 0.01
    kf = KFold(4, shuffle=True, random_state=1)
    losses = []
    for tr, va in kf.split(X):
        clf = LogisticRegression(C=1 / (len(tr) * lam), solver="newton-cholesky", tol=1e-12,
                                 max_iter=1000).fit(X[tr], y[tr])
        losses.append(log_loss(y[va], clf.predict_proba(X[va])))
    bl = Bilevel(Logistic(init_l2reg=lam), functools.partial(hyperopt.LBFGS, tol=1e-12), optax.adam(0.1),
                 cv_folds=_kfold_ids(len(y), kf), inner_tol=None)
    assert fit(bl, data, steps=1, stop=None).history[0]["val_loss"] == pytest.approx(np.mean(losses), rel=1e-8)


def test_fold_masks_and_files(tmp_path):
    X, y = np.zeros((10, 2)), np.arange(10.0)
    inner, outer = fold_masks(3, X, y, seed=0)
    assert inner.shape == outer.shape == (3, 10)
    np.testing.assert_array_equal(outer.sum(0), 1)  # every sample validated exactly once
    np.testing.assert_array_equal(inner + outer, 1)
    assert sorted(outer.sum(1)) == [3, 3, 4]
    ids = np.array([0, 0, 1, 1, 2, 2, 7, 7, 7, 7])  # any labels; 4 folds
    np.testing.assert_array_equal(fold_masks(ids, X, y)[1].sum(1), [2, 2, 2, 4])
    np.save(tmp_path / "folds.npy", ids)
    np.savez(tmp_path / "folds.npz", folds=ids)
    (tmp_path / "folds.txt").write_text("\n".join(map(str, ids)) + "\n")
    for name in ("folds.npy", "folds.npz", "folds.txt"):
        np.testing.assert_array_equal(load_folds(tmp_path / name), ids)
    for cv, message in [(1, "cv_folds=1; allowed"), (11, "more folds than the 10 samples"),
                        (np.zeros(10, int), "1 distinct fold"), (np.zeros(9, int), "one integer fold id per sample"),
                        (np.linspace(0, 1, 10), "dtype float64")]:
        with pytest.raises(ValueError, match=message):
            fold_masks(cv, X, y)
    with pytest.raises(ValueError, match="file not found"):
        load_folds(tmp_path / "nope.npy")
    (tmp_path / "bad.txt").write_text("0\n0.5\n")
    with pytest.raises(ValueError, match="one integer fold id"):
        load_folds(tmp_path / "bad.txt")


def test_auto_folds_pick_cv_on_small_data(diabetes):
    assert make_splits(Ridge(), diabetes, "auto").n_folds == 5
    from hyperopt.problems import Distillation
    digits = load_dataset("digits", seed=0)
    assert make_splits(Distillation(), digits, "auto").n_folds == 1  # no k-fold outer loss
