"""hyperopt vs the real jaxopt package, name by name: line searches, LBFGS, BFGS, NonlinearCG,
GradientDescent/ProximalGradient/ProjectedGradient; plus the eager (``jit=False``) loop.

Same seeded problems through both packages: same solution, same state fields, same implicit
hypergradient. Needs the ``compat`` extra (``jaxopt``).
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.interpreters.partial_eval import DynamicJaxprTracer

import hyperopt
from hyperopt import prox

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import jaxopt


@pytest.fixture(autouse=True)
def _x64():
    jax.config.update("jax_enable_x64", True)
    yield


def _logreg_data(n=40, p=5, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, p).astype(dtype)
    y = (X @ rng.randn(p) + 0.5 * rng.randn(n) > 0).astype(dtype)
    return jnp.asarray(X), jnp.asarray(y)


def logreg(w, lam, X, y):
    z = X @ w
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 0.5 * jnp.exp(lam) * jnp.sum(w ** 2)


def ridge(w, lam, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.sum(w ** 2)


def _fields(state):
    return set(state._fields)


# -- line searches ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs", [
    ("BacktrackingLineSearch", dict(condition="armijo")),
    ("BacktrackingLineSearch", dict(condition="strong-wolfe")),
    ("BacktrackingLineSearch", dict(condition="wolfe")),
    ("BacktrackingLineSearch", dict(condition="goldstein")),
    ("ZoomLineSearch", {}),
    ("HagerZhangLineSearch", {}),
])
def test_linesearch_matches_jaxopt(name, kwargs):
    X, y = _logreg_data()
    w = jnp.asarray(np.random.RandomState(1).randn(5))
    fun = lambda w, X, y: logreg(w, -2.0, X, y)
    ours = getattr(hyperopt, name)(fun=fun, maxiter=20, **kwargs)
    theirs = getattr(jaxopt, name)(fun=fun, maxiter=20, **kwargs)
    s1, st1 = ours.run(init_stepsize=1.0, params=w, fun_args=[X, y])
    s2, st2 = theirs.run(init_stepsize=1.0, params=w, fun_args=[X, y])
    assert _fields(st1) == _fields(st2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12)
    np.testing.assert_allclose(st1.params, st2.params, rtol=1e-10)
    np.testing.assert_allclose(st1.value, st2.value, rtol=1e-12)
    assert int(st1.num_fun_eval) == int(st2.num_fun_eval)
    assert bool(st1.done) and not bool(st1.failed)


# -- quasi-Newton and nonlinear CG ------------------------------------------------------------
QN_CASES = [
    ("LBFGS", dict(linesearch="zoom")),
    ("LBFGS", dict(linesearch="backtracking", use_gamma=False)),
    ("LBFGS", dict(linesearch="hager-zhang", linesearch_init="current")),
    ("LBFGS", dict(stepsize=0.5)),
    ("BFGS", dict(linesearch="zoom")),
    ("BFGS", dict(linesearch="backtracking", linesearch_init="max")),
    ("NonlinearCG", dict(method="polak-ribiere")),
    ("NonlinearCG", dict(method="fletcher-reeves", linesearch="backtracking")),
    ("NonlinearCG", dict(method="hestenes-stiefel")),
]


@pytest.mark.parametrize("name,kwargs", QN_CASES)
def test_solver_matches_jaxopt(name, kwargs):
    X, y = _logreg_data()
    w0 = jnp.zeros(5)
    opts = dict(fun=logreg, tol=1e-6, maxiter=200, **kwargs)
    w1, st1 = getattr(hyperopt, name)(**opts).run(w0, -2.0, X, y)
    w2, st2 = getattr(jaxopt, name)(**opts).run(w0, -2.0, X, y)
    assert _fields(st2) <= _fields(st1)  # JAXopt's fields, plus `converged`
    assert int(st1.iter_num) == int(st2.iter_num)
    np.testing.assert_allclose(w1, w2, rtol=1e-8, atol=1e-10)
    for field in ("value", "error", "stepsize", "num_fun_eval", "num_grad_eval"):
        np.testing.assert_allclose(getattr(st1, field), getattr(st2, field), rtol=1e-6,
                                   err_msg=field)


@pytest.mark.parametrize("name", ["LBFGS", "BFGS", "NonlinearCG"])
def test_implicit_hypergradient_matches_jaxopt(name):
    X, y = _logreg_data()
    Xv, yv = _logreg_data(seed=3)

    def outer(package, lam):
        solver = getattr(package, name)(fun=logreg, tol=1e-10, maxiter=500)
        w = solver.run(jnp.zeros(5), lam, X, y).params
        return logreg(w, -30.0, Xv, yv)

    g1 = jax.grad(lambda lam: outer(hyperopt, lam))(-2.0)
    g2 = jax.grad(lambda lam: outer(jaxopt, lam))(-2.0)
    eps = 1e-5  # float64 central difference through hyperopt's solution
    fd = (outer(hyperopt, -2.0 + eps) - outer(hyperopt, -2.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)
    np.testing.assert_allclose(g1, fd, rtol=1e-5)


def test_lbfgs_float32_matches_jaxopt():
    X, y = _logreg_data(dtype=np.float32)
    w0 = jnp.zeros(5, jnp.float32)
    opts = dict(fun=logreg, tol=1e-3, maxiter=100)
    w1, st1 = hyperopt.LBFGS(**opts).run(w0, jnp.float32(-2.0), X, y)
    w2, st2 = jaxopt.LBFGS(**opts).run(w0, jnp.float32(-2.0), X, y)
    assert w1.dtype == jnp.float32 and st1.s_history.dtype == jnp.float32
    np.testing.assert_allclose(w1, w2, rtol=1e-4, atol=1e-5)


def test_lbfgs_complex_params():
    # min |A z - b|² over complex z: the solution is the least-squares solution.
    rng = np.random.RandomState(0)
    A = jnp.asarray(rng.randn(8, 3) + 1j * rng.randn(8, 3))
    b = jnp.asarray(rng.randn(8) + 1j * rng.randn(8))
    fun = lambda z: jnp.sum(jnp.abs(A @ z - b) ** 2)
    z, _ = hyperopt.LBFGS(fun=fun, tol=1e-9, maxiter=200).run(jnp.zeros(3, jnp.complex128))
    np.testing.assert_allclose(z, np.linalg.lstsq(np.asarray(A), np.asarray(b), rcond=None)[0],
                               atol=1e-7)


def test_unrolled_lbfgs_derivative_is_finite_and_matches_implicit():
    X, y = _logreg_data()

    def solution(lam, implicit):
        solver = hyperopt.LBFGS(fun=logreg, tol=1e-12, maxiter=100, implicit_diff=implicit)
        return solver.run(jnp.zeros(5), lam, X, y).params

    j_unrolled = jax.jacrev(lambda lam: solution(lam, False))(-2.0)
    j_implicit = jax.jacrev(lambda lam: solution(lam, True))(-2.0)
    assert np.all(np.isfinite(j_unrolled))
    np.testing.assert_allclose(j_unrolled, j_implicit, rtol=1e-4, atol=1e-8)


def test_bad_linesearch_name_is_one_line():
    with pytest.raises(ValueError, match=r"linesearch='wolfe'; allowed: 'backtracking', 'zoom'"):
        hyperopt.LBFGS(fun=logreg, linesearch="wolfe")
    with pytest.raises(ValueError, match=r"method='cg'; allowed"):
        hyperopt.NonlinearCG(fun=logreg, method="cg")


# -- first-order solvers ------------------------------------------------------------------------
def _lasso_data():
    rng = np.random.RandomState(0)
    X = rng.randn(30, 10)
    y = X @ (rng.randn(10) * (rng.rand(10) > 0.5)) + 0.1 * rng.randn(30)
    return jnp.asarray(X), jnp.asarray(y)


def test_proximal_gradient_backtracking_accepts_1_over_L():
    """After 10 iterations on a lasso, the error is close to JAXopt's (the old curvature
    test accepted only 1/(2L) steps: 0.25 vs 0.009)."""
    X, y = _lasso_data()
    fun = lambda w, X, y: 0.5 * jnp.sum((X @ w - y) ** 2)
    lam = 1.0
    L = float(np.linalg.eigvalsh(np.asarray(X.T @ X)).max())
    ours = hyperopt.ProximalGradient(fun=fun, prox=prox.prox_lasso, maxiter=10, tol=1e-30,
                                     acceleration=False)
    theirs = jaxopt.ProximalGradient(fun=fun, prox=jaxopt.prox.prox_lasso, maxiter=10,
                                     tol=1e-30, acceleration=False)
    w1, st1 = ours.run(jnp.zeros(10), lam, X, y)
    w2, st2 = theirs.run(jnp.zeros(10), lam, X, y)
    # the same sufficient-decrease search as JAXopt: the same iterates, and no step
    # below decrease_factor/L (the state holds the next search's start, η/decrease_factor)
    np.testing.assert_allclose(w1, w2, rtol=1e-8, atol=1e-10)
    assert float(st1.stepsize) * ours.decrease_factor > 0.5 / L
    obj = lambda w: fun(w, X, y) + lam * jnp.sum(jnp.abs(w))
    assert obj(w1) <= obj(w2) * (1 + 1e-10)


def test_gradient_descent_stays_robust_near_the_optimum():
    """Value differences drown in rounding near the optimum (|f| ~ 1e4 here): the search then
    decides by curvature, so the step does not collapse and GD reaches a 1e-11 gradient norm
    in a few dozen iterations."""
    rng = np.random.RandomState(0)
    X = jnp.asarray(rng.randn(50, 8))
    y = jnp.asarray(rng.randn(50) * 30 + 100)
    lam = 0.5
    w_star = np.linalg.solve(np.asarray(X.T @ X) / 50 + lam * np.eye(8), np.asarray(X.T @ y) / 50)
    gd = hyperopt.GradientDescent(fun=ridge, tol=1e-11, maxiter=3000)
    w, state = gd.run(jnp.zeros(8), lam, X, y)
    assert bool(state.converged)
    np.testing.assert_allclose(w, w_star, rtol=1e-9)
    # no collapse of the step: condition number ~5, so ~30 iterations at 1/L steps
    assert int(state.iter_num) < 100


@pytest.mark.parametrize("acceleration", [False, True])
def test_proximal_gradient_stays_robust_near_the_optimum(acceleration):
    """With a prox, <∇f, d> stays far above the rounding of f near the optimum while the
    sufficient-decrease margin ||d||²/(2η) falls below it: the curvature test must decide
    there, or the step collapses (ISTA here: 3000 iterations at steps ~1e-5, unconverged)."""
    from sklearn.linear_model import Lasso

    X, y = _lasso_data()
    fun = lambda w, X, y: 0.5 * jnp.mean((X @ w - y) ** 2)
    lam = 0.1
    pg = hyperopt.ProximalGradient(fun=fun, prox=prox.prox_lasso, tol=1e-12, maxiter=3000,
                                   acceleration=acceleration)
    w, state = pg.run(jnp.zeros(10), lam, X, y)
    assert bool(state.converged)
    assert int(state.iter_num) < 200  # 1/L steps: ~30 iterations
    L = float(np.linalg.eigvalsh(np.asarray(X.T @ X) / X.shape[0]).max())
    assert float(state.stepsize) * pg.decrease_factor > 0.5 / L
    ref = Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
    assert 0 < np.sum(ref == 0)
    np.testing.assert_allclose(w, ref, atol=1e-10)


def test_gradient_descent_implicit_hypergradient_matches_jaxopt():
    X, y = _logreg_data()
    Xv, yv = _logreg_data(seed=3)

    def outer(package, lam):
        w = package.GradientDescent(fun=logreg, tol=1e-10, maxiter=5000).run(
            jnp.zeros(5), lam, X, y).params
        return logreg(w, -30.0, Xv, yv)

    np.testing.assert_allclose(jax.grad(lambda lam: outer(hyperopt, lam))(-2.0),
                               jax.grad(lambda lam: outer(jaxopt, lam))(-2.0), rtol=1e-6)


def test_proximal_gradient_stepsize_schedule():
    X, y = _lasso_data()
    fun = lambda w, X, y: 0.5 * jnp.mean((X @ w - y) ** 2)
    schedule = lambda t: 0.5 / (1.0 + 0.001 * t)
    kw = dict(fun=fun, stepsize=schedule, maxiter=50, tol=1e-30, acceleration=False)
    w1, st1 = hyperopt.ProximalGradient(prox=prox.prox_lasso, **kw).run(jnp.zeros(10), 0.1, X, y)
    w2, _ = jaxopt.ProximalGradient(prox=jaxopt.prox.prox_lasso, **kw).run(jnp.zeros(10), 0.1, X, y)
    np.testing.assert_allclose(st1.stepsize, schedule(49), rtol=1e-12)
    np.testing.assert_allclose(w1, w2, rtol=1e-10, atol=1e-12)


def test_projected_gradient_hyperparams_proj_keyword():
    X, y = _lasso_data()
    fun = lambda w, X, y: 0.5 * jnp.mean((X @ w - y) ** 2)
    pg = hyperopt.ProjectedGradient(fun=fun, projection=prox.projection_non_negative, tol=1e-10)
    w_default = pg.run(jnp.zeros(10), X=X, y=y).params  # hyperparams_proj defaults to None
    w_keyword = pg.run(jnp.zeros(10), hyperparams_proj=None, X=X, y=y).params
    ref = jaxopt.ProjectedGradient(fun=fun, projection=jaxopt.projection.projection_non_negative,
                                   tol=1e-10, maxiter=5000).run(jnp.zeros(10), X=X, y=y).params
    np.testing.assert_allclose(w_default, w_keyword)
    np.testing.assert_allclose(w_default, ref, atol=1e-7)
    assert np.all(np.asarray(w_default) >= 0)


def _matyas(p):
    return 0.26 * (p[0] ** 2 + p[1] ** 2) - 0.48 * p[0] * p[1]


@pytest.mark.parametrize("init_stepsize", [1.0, 1.5])
def test_zoom_stops_at_the_max_stepsize_as_jaxopt(init_stepsize):
    # Along -∇f from (6, 6) the strong Wolfe step is beyond max_stepsize=1: the search is done
    # at the first trial (sufficient decrease, no interval); another step would move the
    # accepted point again (the state's params would no longer be params + stepsize * p)
    x = jnp.array([6.0, 6.0])
    ours = hyperopt.ZoomLineSearch(_matyas, max_stepsize=1.0).run(init_stepsize, x)
    theirs = jaxopt.ZoomLineSearch(_matyas, max_stepsize=1.0).run(init_stepsize, x)
    p = -jax.grad(_matyas)(x)
    assert float(ours.stepsize) == float(theirs.stepsize) == 1.0
    np.testing.assert_allclose(ours.state.params, x + ours.stepsize * p, rtol=1e-15)
    np.testing.assert_allclose(ours.state.params, theirs.state.params, rtol=1e-15)
    assert bool(ours.state.done) and int(ours.state.iter_num) == int(theirs.state.iter_num) == 1


def test_lbfgs_float32_matyas_matches_jaxopt():
    # JAXopt's test_against_scipy case in float32: the iterates are JAXopt's
    with jax.enable_x64(False):
        x0 = jnp.ones(2, jnp.float32) * 6.0
        ours = hyperopt.LBFGS(_matyas, tol=1e-7).run(x0)
        theirs = jaxopt.LBFGS(_matyas, tol=1e-7).run(x0)
        assert int(ours.state.iter_num) == int(theirs.state.iter_num)
        np.testing.assert_allclose(ours.params, theirs.params, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ours.params, 0.0, atol=1e-6)  # the minimum


def test_projected_gradient_init_state_needs_no_objective_arguments():
    # JAXopt's manual loop: init_state(params) alone, the data only in update
    X, y = _lasso_data()
    fun = lambda w, data: 0.5 * jnp.mean((data[0] @ w - data[1]) ** 2)
    kw = dict(fun=fun, projection=prox.projection_l2_ball)
    ours = hyperopt.ProjectedGradient(**kw)
    theirs = jaxopt.ProjectedGradient(fun=fun, projection=jaxopt.projection.projection_l2_ball)
    w, state = jnp.zeros(10), ours.init_state(jnp.zeros(10))
    w_ref, state_ref = jnp.zeros(10), theirs.init_state(jnp.zeros(10))
    for _ in range(10):
        w, state = ours.update(w, state, hyperparams_proj=0.5, data=(X, y))
        w_ref, state_ref = theirs.update(w_ref, state_ref, hyperparams_proj=0.5, data=(X, y))
    # the same iterates as run() for the same number of steps
    w_run = dataclasses.replace(ours, maxiter=10, tol=1e-30).run(
        jnp.zeros(10), hyperparams_proj=0.5, data=(X, y)).params
    np.testing.assert_allclose(w, w_run, rtol=1e-12)
    assert float(jnp.linalg.norm(w)) <= 0.5 + 1e-12
    # and the solution both packages converge to
    sol = ours.run(jnp.zeros(10), 0.5, (X, y)).params
    sol_ref = dataclasses.replace(theirs, tol=1e-12, maxiter=5000).run(
        jnp.zeros(10), 0.5, (X, y)).params
    np.testing.assert_allclose(sol, sol_ref, atol=1e-8)


@pytest.mark.parametrize("acceleration", [False, True])
def test_fixed_step_run_calls_fun_once_per_iteration_as_jaxopt(acceleration):
    X, y = _lasso_data()
    counts = {}

    def counted(package):
        def fun(w, X, y):
            counts[package] = counts.get(package, 0) + 1
            return 0.5 * jnp.mean((X @ w - y) ** 2)
        return fun

    kw = dict(maxiter=10, tol=1e-30, stepsize=1e-3, acceleration=acceleration, jit=False)
    w1 = hyperopt.ProximalGradient(fun=counted("ours"), prox=prox.prox_lasso, **kw).run(
        jnp.zeros(10), 0.1, X, y).params
    w2 = jaxopt.ProximalGradient(fun=counted("theirs"), prox=jaxopt.prox.prox_lasso, **kw).run(
        jnp.zeros(10), 0.1, X, y).params
    assert counts["ours"] == counts["theirs"] == 10
    if not acceleration:  # ISTA with a fixed step: the same iterates (FISTA restarts differ)
        np.testing.assert_allclose(w1, w2, rtol=1e-12)


# -- jit=False: a plain Python loop -------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda **kw: hyperopt.LBFGS(fun=kw.pop("fun"), **kw),
    lambda **kw: hyperopt.GradientDescent(fun=kw.pop("fun"), **kw),
], ids=["LBFGS", "GradientDescent"])
def test_eager_loop_runs_python_and_keeps_implicit_diff(make):
    X, y = _logreg_data()
    seen = []

    def fun(w, lam, X, y):
        # eager: never staged out by jit (value_and_grad's own linearize tracer is expected,
        # as in JAXopt: it carries concrete values, prints them, and pdb works)
        seen.append(isinstance(w, DynamicJaxprTracer))
        return logreg(w, lam, X, y)

    eager = make(fun=fun, tol=1e-10, maxiter=500, jit=False)
    compiled = dataclasses.replace(eager, jit=True, fun=logreg)
    w_e, st_e = eager.run(jnp.zeros(5), -2.0, X, y)
    assert seen and not any(seen)
    w_c, st_c = compiled.run(jnp.zeros(5), -2.0, X, y)
    assert int(st_e.iter_num) == int(st_c.iter_num)
    np.testing.assert_allclose(w_e, w_c, rtol=1e-10)

    outer = lambda solver, lam: jnp.sum(solver.run(jnp.zeros(5), lam, X, y).params ** 2)
    np.testing.assert_allclose(jax.grad(lambda lam: outer(eager, lam))(-2.0),
                               jax.grad(lambda lam: outer(compiled, lam))(-2.0), rtol=1e-8)
