"""hyperopt vs the real jaxopt package on JAXopt options found missing by JAXopt's own tests:
``unroll``, ``LBFGS(stop_if_linesearch_fails=)``, ``MirrorDescent(has_aux=)`` and
``value_and_grad=`` of the first-order solvers. Needs the ``compat`` extra (``jaxopt``).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperopt

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import jaxopt


@pytest.fixture(autouse=True)
def _x64():
    jax.config.update("jax_enable_x64", True)
    yield


def _data(n=30, p=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, p)
    y = X @ rng.randn(p) + 0.3 * rng.randn(n)
    return jnp.asarray(X), jnp.asarray(y)


def ridge(w, lam, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.sum(w ** 2)


def _closed_form(lam, X, y):
    n, p = X.shape
    return jnp.linalg.solve(X.T @ X / n + lam * jnp.eye(p), X.T @ y / n)


# -- unroll ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["GradientDescent", "LBFGS"])
@pytest.mark.parametrize("implicit_diff", [True, False])
def test_unroll_true_matches_jaxopt_and_closed_form(name, implicit_diff):
    X, y = _data()
    lam = 0.3
    opts = dict(fun=ridge, maxiter=300, tol=1e-9, implicit_diff=implicit_diff, unroll=True)
    if name == "GradientDescent":
        opts["acceleration"] = False
    ours = getattr(hyperopt, name)(**opts)
    theirs = getattr(jaxopt, name)(**opts)
    w0 = jnp.zeros(X.shape[1])

    def hyper(solver):
        return jax.grad(lambda lam_: jnp.sum(solver.run(w0, lam_, X, y).params))(lam)

    w_ours, w_theirs = ours.run(w0, lam, X, y).params, theirs.run(w0, lam, X, y).params
    np.testing.assert_allclose(w_ours, _closed_form(lam, X, y), rtol=1e-7)
    np.testing.assert_allclose(w_ours, w_theirs, rtol=1e-7)
    # d/dλ sum(w*(λ)) by a float64 central difference of the closed form
    eps = 1e-6
    fd = (jnp.sum(_closed_form(lam + eps, X, y)) - jnp.sum(_closed_form(lam - eps, X, y))) / (2 * eps)
    np.testing.assert_allclose(hyper(ours), fd, rtol=1e-6)
    if name == "LBFGS" and not implicit_diff:
        # JAXopt differentiates its line search and history: NaN (a documented difference)
        assert not np.isfinite(hyper(theirs))
    else:
        np.testing.assert_allclose(hyper(ours), hyper(theirs), rtol=1e-6)


def test_unroll_false_without_implicit_diff_is_not_reverse_differentiable_as_jaxopt():
    X, y = _data()
    w0 = jnp.zeros(X.shape[1])
    for package in (hyperopt, jaxopt):
        solver = package.GradientDescent(fun=ridge, maxiter=500, tol=1e-9, implicit_diff=False,
                                         unroll=False)
        np.testing.assert_allclose(solver.run(w0, 0.3, X, y).params,
                                   _closed_form(0.3, X, y), rtol=1e-3)
        with pytest.raises(ValueError, match="while_loop"):
            jax.grad(lambda lam_: jnp.sum(solver.run(w0, lam_, X, y).params))(0.3)
        # forward mode goes through the while loop
        jax.jvp(lambda lam_: solver.run(w0, lam_, X, y).params, (0.3,), (1.0,))


def test_unroll_bad_value_is_one_line():
    with pytest.raises(ValueError, match=r"^unroll='yes'; allowed: 'auto', True, False$"):
        hyperopt.GradientDescent(fun=ridge, unroll="yes")


# -- LBFGS(stop_if_linesearch_fails=) --------------------------------------------------------
def _nasty(x):
    # a line search along the first direction fails (maxls=1, a huge first step on a steep
    # quartic), so the iterations stop there with the flag and continue without it
    return jnp.sum(x ** 4) * 1e3 + jnp.sum(x ** 2)


@pytest.mark.parametrize("stop", [True, False])
@pytest.mark.parametrize("linesearch", ["zoom", "backtracking"])
def test_lbfgs_stop_if_linesearch_fails_matches_jaxopt(stop, linesearch):
    x0 = jnp.array([3.0, -2.0, 1.0])
    opts = dict(fun=_nasty, maxiter=20, tol=1e-12, maxls=1, linesearch=linesearch,
                stop_if_linesearch_fails=stop)
    ours = hyperopt.LBFGS(**opts).run(x0)
    theirs = jaxopt.LBFGS(**opts).run(x0)
    assert bool(jaxopt.LBFGS(**{**opts, "maxiter": 1}).run(x0).state.failed_linesearch)
    assert int(ours.state.iter_num) == int(theirs.state.iter_num)
    assert (int(ours.state.iter_num) < 20) == stop
    assert bool(ours.state.failed_linesearch) == bool(theirs.state.failed_linesearch)
    np.testing.assert_allclose(ours.params, theirs.params, rtol=1e-8, atol=1e-12)


def test_lbfgs_stop_if_linesearch_fails_eager_and_unrolled_agree():
    x0 = jnp.array([3.0, -2.0, 1.0])
    opts = dict(fun=_nasty, maxiter=20, tol=1e-12, maxls=1, stop_if_linesearch_fails=True)
    compiled = hyperopt.LBFGS(**opts).run(x0)
    for extra in (dict(jit=False), dict(implicit_diff=False)):
        other = hyperopt.LBFGS(**opts, **extra).run(x0)
        assert int(other.state.iter_num) == int(compiled.state.iter_num)
        np.testing.assert_allclose(other.params, compiled.params, rtol=1e-12)


# -- MirrorDescent(has_aux=) -----------------------------------------------------------------
def _kl_projection(x, hyperparams_proj=None):
    return jax.nn.softmax(x, -1)


def _simplex_objective(x, c):
    value = jnp.sum(c * x) + 0.5 * jnp.sum(x ** 2)
    return value, {"value": value, "max": jnp.max(x)}


@pytest.mark.parametrize("implicit_diff", [True, False])
def test_mirror_descent_has_aux_matches_jaxopt(implicit_diff):
    c = jnp.array([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]])
    x0 = jnp.full((2, 3), 1 / 3)
    pg = jaxopt.MirrorDescent.make_projection_grad(_kl_projection, lambda x: jnp.log(x) + 1)
    opts = dict(fun=_simplex_objective, projection_grad=pg, stepsize=0.5, maxiter=400,
                tol=1e-9, has_aux=True, implicit_diff=implicit_diff)
    ours = hyperopt.MirrorDescent(**opts)
    theirs = jaxopt.MirrorDescent(**opts)
    r_ours, r_theirs = ours.run(x0, None, c), theirs.run(x0, None, c)
    np.testing.assert_allclose(r_ours.params, r_theirs.params, rtol=1e-8)
    assert int(r_ours.state.iter_num) == int(r_theirs.state.iter_num)
    for key in ("value", "max"):
        np.testing.assert_allclose(r_ours.state.aux[key], r_theirs.state.aux[key], rtol=1e-8)
    assert int(r_ours.state.num_fun_eval) == int(r_theirs.state.num_fun_eval)
    g = lambda s: jax.grad(lambda c: jnp.sum(s.run(x0, None, c).params[:, 0]))(c)
    np.testing.assert_allclose(g(ours), g(theirs), rtol=1e-5, atol=1e-8)


def test_mirror_descent_has_aux_without_projection_grad():
    c = jnp.array([[0.1, -0.1, 0.05]])  # interior solution (0.25, 0.45, 0.3)
    x0 = jnp.full((1, 3), 1 / 3)
    md = hyperopt.MirrorDescent(fun=_simplex_objective, stepsize=0.5, has_aux=True, tol=1e-10)
    x, state = md.run(x0, c)
    # the aux belongs to the last gradient evaluation, at the previous iterate ~ x
    np.testing.assert_allclose(state.aux["value"], _simplex_objective(x, c)[0], rtol=1e-8)
    # minimizer of <c, x> + ||x||²/2 on the simplex: projection of -c
    np.testing.assert_allclose(x, hyperopt.projection.projection_simplex(-c[0])[None], atol=1e-8)


# -- value_and_grad= of GradientDescent, ProximalGradient, ProjectedGradient -----------------
def _ridge_vg(w, lam, X, y):
    return jax.value_and_grad(ridge)(w, lam, X, y)


def _ridge_vg_aux(w, lam, X, y):
    value, grad = jax.value_and_grad(ridge)(w, lam, X, y)
    return (value, jnp.sum(w ** 2)), grad  # JAXopt's first step needs an array aux


@pytest.mark.parametrize("name", ["GradientDescent", "ProximalGradient", "ProjectedGradient"])
@pytest.mark.parametrize("has_aux", [False, True])
def test_value_and_grad_option_matches_jaxopt(name, has_aux):
    X, y = _data()
    lam = 0.2
    fun = _ridge_vg_aux if has_aux else _ridge_vg
    opts = dict(fun=fun, value_and_grad=True, has_aux=has_aux, maxiter=500, tol=1e-9)
    w0 = jnp.zeros(X.shape[1])
    extra = () if name == "GradientDescent" else (None,)
    if name == "ProjectedGradient":  # JAXopt requires a projection
        ours = hyperopt.ProjectedGradient(**opts,
                                          projection=hyperopt.projection.projection_non_negative)
        theirs = jaxopt.ProjectedGradient(**opts,
                                          projection=jaxopt.projection.projection_non_negative)
    else:
        ours = getattr(hyperopt, name)(**opts)
        theirs = getattr(jaxopt, name)(**opts)
    r_ours = ours.run(w0, *extra, lam, X, y)
    r_theirs = theirs.run(w0, *extra, lam, X, y)
    expected = _closed_form(lam, X, y)
    if name == "ProjectedGradient":
        expected = r_theirs.params  # non-negative orthant: no closed form
        assert bool(jnp.all(r_ours.params >= 0))
    np.testing.assert_allclose(r_ours.params, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(r_ours.params, r_theirs.params, rtol=1e-6, atol=1e-9)
    if has_aux:
        np.testing.assert_allclose(r_ours.state.aux, r_theirs.state.aux, rtol=1e-5)
    plain = getattr(hyperopt, name)(fun=ridge, maxiter=500, tol=1e-9,
                                    **({"projection": hyperopt.projection.projection_non_negative}
                                       if name == "ProjectedGradient" else {}))
    g = lambda s: jax.grad(lambda lam_: jnp.sum(s.run(w0, *extra, lam_, X, y).params))(lam)
    np.testing.assert_allclose(g(ours), g(plain), rtol=1e-6)
    np.testing.assert_allclose(g(ours), g(theirs), rtol=1e-4)


# -- solve_cg(M=) ----------------------------------------------------------------------------
def test_solve_cg_preconditioner_matches_jaxopt_and_numpy():
    rng = np.random.RandomState(0)
    B = rng.randn(30, 30)
    A = jnp.asarray(B @ B.T + np.diag(np.linspace(1, 100, 30)))
    b = jnp.asarray(rng.randn(30))
    jacobi = lambda v: v / jnp.diag(A)
    ours = hyperopt.linear_solve.solve_cg(lambda v: A @ v, b, tol=1e-12, M=jacobi)
    theirs = jaxopt.linear_solve.solve_cg(lambda v: A @ v, b, tol=1e-12, M=jacobi)
    np.testing.assert_allclose(ours, np.linalg.solve(np.asarray(A), np.asarray(b)), rtol=1e-9)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
