"""Every linear solver against numpy's dense answer, and failures that are not silent."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperopt
from hyperopt import linear_solve as ls


def _spd(p, seed=0, cond=100.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    return Q @ np.diag(np.geomspace(1.0, cond, p)) @ Q.T


def _nonsymmetric(p, seed=1):
    rng = np.random.default_rng(seed)
    return _spd(p, seed) + 0.3 * rng.normal(size=(p, p)) / np.sqrt(p)


ALL_SOLVERS = {
    "cg": ls.solve_cg,
    "normal_cg": ls.solve_normal_cg,
    "gmres": ls.solve_gmres,
    "bicgstab": ls.solve_bicgstab,
    "cholesky": ls.solve_cholesky,
    "lu": ls.solve_lu,
    "auto": ls.solve_auto,
    "auto_iterative": functools.partial(ls.solve_auto, dense_threshold=0),
}
GENERAL_SOLVERS = {k: v for k, v in ALL_SOLVERS.items() if k not in ("cg", "cholesky")}


@pytest.mark.parametrize("name", ALL_SOLVERS)
def test_spd_system_matches_dense(name):
    A = _spd(40)
    b = np.random.default_rng(2).normal(size=40)
    x = ALL_SOLVERS[name](lambda v: jnp.asarray(A) @ v, jnp.asarray(b))
    assert np.linalg.norm(x - np.linalg.solve(A, b)) / np.linalg.norm(np.linalg.solve(A, b)) < 1e-8


@pytest.mark.parametrize("name", GENERAL_SOLVERS)
def test_nonsymmetric_system_matches_dense(name):
    A = _nonsymmetric(30)
    b = np.random.default_rng(3).normal(size=30)
    x = GENERAL_SOLVERS[name](lambda v: jnp.asarray(A) @ v, jnp.asarray(b))
    ref = np.linalg.solve(A, b)
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 1e-8


@pytest.mark.parametrize("name", ALL_SOLVERS)
def test_pytree_system_and_ridge(name):
    """A block-diagonal SPD system on {"a": (5,), "b": (2, 3)} with a ridge term."""
    Aa, Ab = _spd(5, 4), _spd(6, 5)
    matvec = lambda x: {"a": jnp.asarray(Aa) @ x["a"], "b": (jnp.asarray(Ab) @ x["b"].ravel()).reshape(2, 3)}
    rng = np.random.default_rng(6)
    b = {"a": jnp.asarray(rng.normal(size=5)), "b": jnp.asarray(rng.normal(size=(2, 3)))}
    ridge = 0.5
    solver = ALL_SOLVERS[name]
    if name.startswith("auto"):
        matvec_r = lambda x: jax.tree.map(lambda u, v: u + ridge * v, matvec(x), x)
        x = jax.jit(lambda b: solver(matvec_r, b))(b)  # solve_auto has no ridge option
    elif name == "normal_cg":
        x = solver(matvec, b)  # ridge regularizes the normal system there: checked apart
        ridge = 0.0
    else:
        x = solver(matvec, b, ridge=ridge)
    ref_a = np.linalg.solve(Aa + ridge * np.eye(5), np.asarray(b["a"]))
    ref_b = np.linalg.solve(Ab + ridge * np.eye(6), np.asarray(b["b"]).ravel()).reshape(2, 3)
    np.testing.assert_allclose(x["a"], ref_a, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(x["b"], ref_b, rtol=1e-8, atol=1e-10)


def test_normal_cg_ridge_solves_regularized_normal_equations():
    A = _nonsymmetric(20)
    b = np.random.default_rng(7).normal(size=20)
    x = ls.solve_normal_cg(lambda v: jnp.asarray(A) @ v, jnp.asarray(b), ridge=0.1)
    ref = np.linalg.solve(A.T @ A + 0.1 * np.eye(20), A.T @ b)
    np.testing.assert_allclose(x, ref, rtol=1e-8)


def test_warm_start_init_is_used():
    A = _spd(30, cond=1e4)
    b = np.random.default_rng(8).normal(size=30)
    exact = np.linalg.solve(A, b)
    matvec = lambda v: jnp.asarray(A) @ v
    # Starting at the answer, one iteration suffices; from zero it does not.
    x = ls.solve_cg(matvec, jnp.asarray(b), init=jnp.asarray(exact), maxiter=1)
    np.testing.assert_allclose(x, exact, rtol=1e-8)
    with pytest.warns(hyperopt.LinearSolveWarning):
        ls.solve_cg(matvec, jnp.asarray(b), maxiter=1)


@pytest.mark.parametrize("name", ["cg", "gmres", "bicgstab", "normal_cg"])
def test_nonconverged_solve_warns_with_residual(name):
    A = _spd(50, cond=1e6)
    b = jnp.ones(50)
    solver = functools.partial(ALL_SOLVERS[name], maxiter=1)
    with pytest.warns(hyperopt.LinearSolveWarning, match=r"relative residual [0-9.e+-]+ >"):
        solver(lambda v: jnp.asarray(A) @ v, b)


def test_gmres_default_caps_matvecs_when_it_stagnates():
    # The cyclic shift with b = e_1: restarted GMRES(m), m < n, makes no progress at all
    # (the classic stagnation example). By default it now stops after ~10 * size(b)
    # products (JAX's default, 10 * size(b) restarts, is `restart` times more; on the
    # badly conditioned implicit system of a loosely solved SVM dual, 10 790 unknowns, that
    # ran for hours)
    # and reports the residual, which is still 1.
    n, restart = 40, 10
    A = jnp.roll(jnp.eye(n), 1, axis=0)
    calls = []

    def matvec(v):
        jax.debug.callback(lambda: calls.append(1))
        return A @ v

    with pytest.warns(hyperopt.LinearSolveWarning, match=r"solve_gmres did not converge: relative "
                                                         r"residual 1 > .*maxiter=40\)"):
        x = ls.solve_gmres(matvec, jnp.eye(n)[0], restart=restart)
    assert 10 * n <= len(calls) <= 10 * n + 3 * 40  # JAX's default: 10 * n * restart = 4000
    np.testing.assert_allclose(x, 0.0, atol=1e-12)  # no progress, as the theory says
    # an explicit maxiter is kept: 2 restarts
    calls.clear()
    with pytest.warns(hyperopt.LinearSolveWarning, match=r"maxiter=2\)"):
        ls.solve_gmres(matvec, jnp.eye(n)[0], restart=restart, maxiter=2)
    assert 2 * restart <= len(calls) <= 2 * restart + 6


def test_nonconverged_solve_raises_when_asked_eager_and_jit():
    A = jnp.asarray(_spd(50, cond=1e6))
    solve = functools.partial(ls.solve_cg, maxiter=1, on_failure="raise")
    with pytest.raises(hyperopt.LinearSolveError, match="solve_cg did not converge"):
        solve(lambda v: A @ v, jnp.ones(50))
    with pytest.raises(Exception, match="solve_cg did not converge"):
        jax.jit(lambda b: solve(lambda v: A @ v, b))(jnp.ones(50)).block_until_ready()


def test_cholesky_on_indefinite_matrix_reports_failure():
    A = jnp.diag(jnp.array([1.0, -1.0, 2.0]))
    with pytest.warns(hyperopt.LinearSolveWarning, match="solve_cholesky"):
        ls.solve_cholesky(lambda v: A @ v, jnp.ones(3))


def test_ignore_is_silent():
    A = jnp.asarray(_spd(50, cond=1e6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ls.solve_cg(lambda v: A @ v, jnp.ones(50), maxiter=1, on_failure="ignore")


def test_failed_solve_inside_grad_warns():
    """JAXopt #466: a failing solve in a hypergradient must not pass silently."""
    A = jnp.asarray(_spd(20, cond=1e6))
    F = lambda x, theta: A @ x - theta
    solver = hyperopt.custom_root(F, solve=functools.partial(ls.solve_cg, maxiter=1))(
        lambda init, theta: jnp.linalg.solve(A, theta))
    with pytest.warns(hyperopt.LinearSolveWarning):
        jax.grad(lambda t: jnp.sum(solver(None, t)))(jnp.ones(20))


@pytest.mark.parametrize("kwargs, match", [
    ({"tol": 0.0}, r"tol=0.0; allowed: a positive number"),
    ({"tol": -1e-3}, r"tol=-0.001; allowed"),
    ({"maxiter": 0}, r"maxiter=0; allowed: a positive integer"),
    ({"on_failure": "loud"}, r"on_failure='loud'; allowed: warn, raise, ignore"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ls.solve_cg(lambda v: v, jnp.ones(3), **kwargs)


def test_float32_default_tolerance_is_reachable():
    A = jnp.asarray(_spd(20, cond=10.0), dtype=jnp.float32)
    b = jnp.ones(20, dtype=jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = ls.solve_cg(lambda v: A @ v, b)
    assert x.dtype == jnp.float32


@pytest.mark.parametrize("init", [False, True], ids=["from_zero", "warm"])
@pytest.mark.parametrize("precondition", [False, True], ids=["plain", "jacobi"])
def test_cg_has_jax_scipy_iterates(init, precondition):
    """solve_cg runs its own loop (no product with A at x0 = 0) with jax.scipy's iterates: the
    same answer after any number of iterations, warm start and preconditioner included."""
    A = _spd(25, seed=9, cond=1e3)
    b = np.random.default_rng(10).normal(size=25)
    x0 = jnp.asarray(np.random.default_rng(11).normal(size=25)) if init else None
    M = (lambda v: v / jnp.asarray(np.diag(A))) if precondition else None
    matvec = lambda v: jnp.asarray(A) @ v
    for maxiter in (1, 3, 12, 200):
        ours = ls.solve_cg(matvec, jnp.asarray(b), init=x0, maxiter=maxiter, tol=1e-12, on_failure="ignore", M=M)
        ref, _ = jax.scipy.sparse.linalg.cg(matvec, jnp.asarray(b), x0=x0, maxiter=maxiter, tol=1e-12, M=M)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours, np.linalg.solve(A, b), rtol=1e-8)


def test_cg_is_differentiable_in_the_matrix_and_the_right_hand_side():
    """d/dt of x(t) = A(t)⁻¹ b(t) through solve_cg's custom_linear_solve, against float64
    central differences."""
    A0, A1 = _spd(8, seed=12), _spd(8, seed=13)
    b0, b1 = (np.random.default_rng(s).normal(size=8) for s in (14, 15))
    f = lambda t: jnp.sum(jnp.sin(ls.solve_cg(lambda v: (A0 + t * A1) @ v, b0 + t * b1, tol=1e-13)))
    h = 1e-5
    fd = (f(0.3 + h) - f(0.3 - h)) / (2 * h)
    assert float(jax.grad(f)(0.3)) == pytest.approx(float(fd), rel=1e-7)


def test_returns_least_squares_tells_which_solves_may_give_a_least_squares_answer():
    assert not ls.returns_least_squares(ls.solve_cg)
    assert not ls.returns_least_squares(functools.partial(functools.partial(ls.solve_cg, tol=1e-8), M=None))
    for solve in (ls.solve_auto, ls.solve_lstsq, ls.solve_normal_cg, lambda mv, b: b,
                  functools.partial(ls.solve_gmres, ridge=1e-6),  # solves A + rI: ~least squares
                  functools.partial(functools.partial(ls.solve_cg, ridge=1e-8), tol=1e-8)):
        assert ls.returns_least_squares(solve)
    assert not ls.returns_least_squares(functools.partial(ls.solve_gmres, ridge=None))


def test_system_residual_without_least_squares_is_the_relative_residual():
    """On a singular, inconsistent system the least-squares answer has a large relative
    residual and a zero normal-equations one: least_squares=False reports the former."""
    A = np.diag([1.0, 2.0, 0.0])
    b = np.array([1.0, 1.0, 1.0])
    x = np.linalg.pinv(A) @ b  # least squares: Aᵀ(Ax - b) = 0
    mv = lambda v: jnp.asarray(A) @ v
    rel = float(ls.relative_residual(mv, jnp.asarray(b), jnp.asarray(x)))
    assert rel == pytest.approx(1 / np.sqrt(3))
    assert float(ls.system_residual(mv, jnp.asarray(b), jnp.asarray(x))) < 1e-12
    assert float(ls.system_residual(mv, jnp.asarray(b), jnp.asarray(x), least_squares=False)) == rel
