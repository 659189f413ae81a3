"""custom_root / custom_fixed_point / root_vjp / root_jvp against independent answers.

Ridge regression has a closed form: w*(λ) = (H + λI)⁻¹c with H = XᵀX/n, c = Xᵀy/n, so
dw*/dλ = -(H + λI)⁻¹ w* and d²w*/dλ² = 2 (H + λI)⁻² w*. Nonlinear cases are checked
against central finite differences of a solver run to machine precision.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes

import hyperopt
from hyperopt import linear_solve as ls

LAM = 0.05


@pytest.fixture(scope="module")
def data():
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    return jnp.asarray(X[:200]), jnp.asarray(y[:200])


def ridge_optimality(w, lam, X, y):
    """Gradient of 0.5/n ||Xw - y||² + 0.5 λ ||w||²."""
    return X.T @ (X @ w - y) / y.shape[0] + lam * w


def ridge_closed_form(init, lam, X, y):
    n, p = X.shape
    return jnp.linalg.solve(X.T @ X / n + lam * jnp.eye(p), X.T @ y / n)


def ridge_jacobian_exact(lam, X, y):
    """dw*/dλ computed in numpy from the closed form."""
    X, y = np.asarray(X), np.asarray(y)
    n, p = X.shape
    K = X.T @ X / n + lam * np.eye(p)
    w = np.linalg.solve(K, X.T @ y / n)
    return -np.linalg.solve(K, w)


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def test_root_vjp_full_jacobian(data):
    X, y = data
    w = ridge_closed_form(None, LAM, X, y)
    basis = jnp.eye(w.shape[0])
    rows = jax.jit(jax.vmap(lambda v: hyperopt.root_vjp(ridge_optimality, w, (LAM, X, y), v)[0]))(basis)
    assert rel_err(rows, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_root_jvp(data):
    X, y = data
    w = ridge_closed_form(None, LAM, X, y)
    zero_X, zero_y = jnp.zeros_like(X), jnp.zeros_like(y)
    dw = hyperopt.root_jvp(ridge_optimality, w, (LAM, X, y), (1.0, zero_X, zero_y))
    assert rel_err(dw, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_root_vjp_jvp_residual(data):
    X, y = data
    w = ridge_closed_form(None, LAM, X, y)
    _, res = hyperopt.root_vjp(ridge_optimality, w, (LAM, X, y), jnp.ones_like(w),
                               return_residual=True)
    assert res < 1e-12
    sloppy = functools.partial(ls.solve_cg, maxiter=1, on_failure="ignore")
    _, res = hyperopt.root_jvp(ridge_optimality, w, (LAM, X, y), (1.0, 0 * X, 0 * y),
                               solve=sloppy, return_residual=True)
    assert res > 1e-3


@pytest.mark.parametrize("jac", [jax.jacrev, jax.jacfwd])
def test_custom_root_jacobian_modes(data, jac):
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    J = jac(solver, argnums=1)(None, LAM, X, y)
    assert rel_err(J, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_custom_root_jvp(data):
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    _, dw = jax.jvp(lambda lam: solver(None, lam, X, y), (LAM,), (1.0,))
    assert rel_err(dw, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_custom_root_uses_implicit_rule_not_solver(data):
    """A solver whose output has no dependence on λ still gets the implicit Jacobian."""
    X, y = data
    w_fixed = ridge_closed_form(None, LAM, X, y)

    @hyperopt.custom_root(ridge_optimality)
    def frozen_solver(init, lam, X, y):
        return jax.lax.stop_gradient(w_fixed)

    J = jax.jacrev(frozen_solver, argnums=1)(None, LAM, X, y)
    assert rel_err(J, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_custom_fixed_point(data):
    X, y = data
    step = 0.1
    T = lambda w, lam, X, y: w - step * ridge_optimality(w, lam, X, y)
    solver = hyperopt.custom_fixed_point(T)(ridge_closed_form)
    J = jax.jacrev(solver, argnums=1)(None, LAM, X, y)
    assert rel_err(J, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_custom_fixed_point_binds_keywords_through_its_signature(data):
    """JAXopt's pattern: ``T = lambda x, *args`` carrying a named signature (functools.wraps),
    the solver called with keywords in any order: T must receive them positionally."""
    X, y = data
    grad_fun = jax.grad(lambda w, lam, X, y: 0.5 * jnp.mean((X @ w - y) ** 2)
                        + 0.5 * lam * jnp.sum(w ** 2))
    T = functools.wraps(grad_fun)(lambda w, *args: w - grad_fun(w, *args))
    solver = hyperopt.custom_fixed_point(T)(ridge_closed_form)
    J = jax.jacrev(lambda lam: solver(None, y=y, lam=lam, X=X))(LAM)
    assert rel_err(J, ridge_jacobian_exact(LAM, X, y)) < 1e-10
    J_jit = jax.jit(jax.jacrev(lambda lam: solver(None, X=X, y=y, lam=lam)))(LAM)
    assert rel_err(J_jit, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_has_aux_passes_aux_through(data):
    X, y = data

    @hyperopt.custom_root(ridge_optimality, has_aux=True)
    def solver(init, lam, X, y):
        w = ridge_closed_form(init, lam, X, y)
        return w, {"iters": jnp.asarray(7), "value": jnp.sum(w ** 2)}

    _, aux = solver(None, LAM, X, y)
    assert int(aux["iters"]) == 7
    J = jax.jacrev(lambda lam: solver(None, lam, X, y)[0])(LAM)
    assert rel_err(J, ridge_jacobian_exact(LAM, X, y)) < 1e-10
    # aux is not differentiated: its derivative is zero even though it depends on λ.
    assert float(jax.grad(lambda lam: solver(None, lam, X, y)[1]["value"])(LAM)) == 0.0


def test_keyword_arguments_any_order(data):
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    J1 = jax.jacrev(lambda lam: solver(None, lam=lam, X=X, y=y))(LAM)
    J2 = jax.jacrev(lambda lam: solver(None, y=y, X=X, lam=lam))(LAM)
    J3 = jax.jacrev(lambda lam: solver(None, lam, y=y, X=X))(LAM)
    exact = ridge_jacobian_exact(LAM, X, y)
    for J in (J1, J2, J3):
        assert rel_err(J, exact) < 1e-10
    # derivative w.r.t. a keyword data argument, compared with the closed form's autodiff
    gy = jax.grad(lambda y_: jnp.sum(solver(None, y=y_, lam=LAM, X=X) ** 2))(y)
    gy_ref = jax.grad(lambda y_: jnp.sum(ridge_closed_form(None, LAM, X, y_) ** 2))(y)
    assert rel_err(gy, gy_ref) < 1e-10


def test_reference_signature_for_kwargs_only_optimality(data):
    X, y = data

    def optimality(w, **kw):
        return ridge_optimality(w, kw["lam"], kw["X"], kw["y"])

    def signature(w, lam, X, y):
        pass

    solver = hyperopt.custom_root(optimality, reference_signature=signature)(ridge_closed_form)
    J = jax.jacrev(lambda lam: solver(None, X=X, y=y, lam=lam))(LAM)
    assert rel_err(J, ridge_jacobian_exact(LAM, X, y)) < 1e-10


def test_bad_arguments_name_the_signature(data):
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    with pytest.raises(TypeError, match="signature"):
        solver(None, LAM, X, y, bogus=1.0)


def test_eager_equals_jit(data):
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    f = lambda lam: jax.jacrev(solver, argnums=1)(None, lam, X, y)
    np.testing.assert_allclose(f(LAM), jax.jit(f)(LAM), rtol=1e-12)


def test_hessian_matches_closed_form(data):
    """g(λ) = ½||w*(λ)||²: g'' = w'ᵀw' + wᵀw'' with w' = -K⁻¹w, w'' = 2K⁻²w."""
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    g = lambda lam: 0.5 * jnp.sum(solver(None, lam, X, y) ** 2)
    Xn, yn = np.asarray(X), np.asarray(y)
    n, p = Xn.shape
    K = Xn.T @ Xn / n + LAM * np.eye(p)
    w = np.linalg.solve(K, Xn.T @ yn / n)
    w1 = -np.linalg.solve(K, w)
    w2 = 2 * np.linalg.solve(K, np.linalg.solve(K, w))
    expected = w1 @ w1 + w @ w2
    assert abs(float(jax.jit(jax.hessian(g))(LAM)) - expected) / abs(expected) < 1e-9
    # forward-over-forward too
    assert abs(float(jax.jit(jax.jacfwd(jax.jacfwd(g)))(LAM)) - expected) / abs(expected) < 1e-9


def test_vmap_equals_loop(data):
    X, y = data
    solver = hyperopt.custom_root(ridge_optimality)(ridge_closed_form)
    lams = jnp.array([1e-3, 1e-2, 0.1, 1.0])
    jac = jax.jit(lambda lam: jax.jacrev(solver, argnums=1)(None, lam, X, y))
    batched = jax.vmap(jac)(lams)
    for i, lam in enumerate(lams):
        np.testing.assert_allclose(batched[i], jac(lam), rtol=1e-10)
        assert rel_err(batched[i], ridge_jacobian_exact(float(lam), X, y)) < 1e-9


def test_pytree_solution_and_arguments(data):
    """Ridge with intercept: x = {"w", "b"}, θ = {"l2": {"w": λ_w, "b": λ_b}}."""
    X, y = data
    n, p = X.shape

    def optimality(params, hp, X, y):
        r = X @ params["w"] + params["b"] - y
        return {"w": X.T @ r / n + hp["l2"]["w"] * params["w"],
                "b": jnp.mean(r) + hp["l2"]["b"] * params["b"]}

    def solver(init, hp, X, y):
        Z = jnp.hstack([X, jnp.ones((n, 1))])
        reg = jnp.diag(jnp.concatenate([jnp.full(p, hp["l2"]["w"]), hp["l2"]["b"][None]]))
        sol = jnp.linalg.solve(Z.T @ Z / n + reg, Z.T @ y / n)
        return {"w": sol[:p], "b": sol[p]}

    hp = {"l2": {"w": jnp.asarray(LAM), "b": jnp.asarray(0.3)}}
    implicit = hyperopt.custom_root(optimality)(solver)
    loss = lambda hp, s: jnp.sum(s(None, hp, X, y)["w"] ** 2) + s(None, hp, X, y)["b"] ** 2
    g_implicit = jax.jit(jax.grad(lambda h: loss(h, implicit)))(hp)
    g_direct = jax.jit(jax.grad(lambda h: loss(h, solver)))(hp)  # autodiff through the closed form
    for a, b in zip(jax.tree.leaves(g_implicit), jax.tree.leaves(g_direct), strict=True):
        assert abs(float(a) - float(b)) <= 1e-10 * max(1.0, abs(float(b)))
    # forward mode with a pytree tangent
    t = {"l2": {"w": jnp.asarray(1.0), "b": jnp.asarray(-2.0)}}
    _, dsol = jax.jvp(lambda h: implicit(None, h, X, y), (hp,), (t,))
    _, dref = jax.jvp(lambda h: solver(None, h, X, y), (hp,), (t,))
    assert rel_err(dsol["w"], dref["w"]) < 1e-10


def test_closed_over_arrays_get_correct_derivatives(data):
    """The optimality function and solver close over X (a tracer under grad w.r.t. X)."""
    X, y = data

    def loss(X, lam):
        opt = lambda w, lam: ridge_optimality(w, lam, X, y)

        @hyperopt.custom_root(opt)
        def solver(init, lam):
            return ridge_closed_form(init, lam, X, y)

        return jnp.sum(solver(None, lam) ** 2)

    direct = lambda X, lam: jnp.sum(ridge_closed_form(None, lam, X, y) ** 2)
    gX = jax.grad(loss)(X, LAM)
    assert rel_err(gX, jax.grad(direct)(X, LAM)) < 1e-9
    glam = jax.jit(jax.grad(loss, argnums=1))(X, LAM)
    assert abs(float(glam) - float(jax.grad(direct, argnums=1)(X, LAM))) < 1e-10


def _logistic_newton(w0, lam, X, y):
    """Newton's method to machine precision (independent of the library's solvers)."""
    n = y.shape[0]
    grad = lambda w: X.T @ (jax.nn.sigmoid(X @ w) - y) / n + lam * w

    def step(w, _):
        s = jax.nn.sigmoid(X @ w)
        H = (X.T * (s * (1 - s))) @ X / n + lam * jnp.eye(X.shape[1])
        return w - jnp.linalg.solve(H, grad(w)), None

    return jax.lax.scan(step, w0, None, length=30)[0]


def logistic_optimality(w, lam, X, y):
    return X.T @ (jax.nn.sigmoid(X @ w) - y) / y.shape[0] + lam * w


@pytest.mark.parametrize("solve", [None, ls.solve_cg, ls.solve_gmres, ls.solve_bicgstab])
def test_nonlinear_logistic_against_finite_differences(data, solve):
    X, y_reg = data
    y = (y_reg > 0).astype(X.dtype)
    lam = 0.01
    solver = hyperopt.custom_root(logistic_optimality, solve=solve)(_logistic_newton)
    w0 = jnp.zeros(X.shape[1])
    J = jax.jit(jax.jacrev(solver, argnums=1))(w0, lam, X, y)
    h = 1e-6  # truncation error ~h², rounding ~eps/h: both below 1e-8 here
    fd = (_logistic_newton(w0, lam + h, X, y) - _logistic_newton(w0, lam - h, X, y)) / (2 * h)
    assert rel_err(J, fd) < 1e-7
    # derivative w.r.t. the data, along a random direction
    V = jax.random.normal(jax.random.PRNGKey(0), X.shape)
    _, dw = jax.jit(lambda X, V: jax.jvp(lambda X_: solver(w0, lam, X_, y), (X,), (V,)))(X, V)
    fd = (_logistic_newton(w0, lam, X + h * V, y) - _logistic_newton(w0, lam, X - h * V, y)) / (2 * h)
    assert rel_err(dw, fd) < 1e-7


def test_grad_through_a_pytree_solution_with_a_structurally_zero_block():
    """∂₂F·dθ is identically zero on the intercept ``b`` (the L2 penalty is on ``W`` only):
    JAX cannot transpose ``custom_linear_solve`` with such a constant block unless the
    solve sees one flat vector. The gradient matches a float64 central difference."""
    X = jax.random.normal(jax.random.PRNGKey(0), (20, 3))
    y = (X[:, 0] > 0).astype(jnp.float64)

    def f(p, lam):
        z = X @ p["W"] + p["b"]
        return jnp.mean(jnp.logaddexp(0, z) - y * z) + 0.5 * lam * jnp.sum(p["W"] ** 2)

    solver = hyperopt.LBFGS(fun=f, tol=1e-12, maxiter=500)

    def outer(lam):
        p = solver.run({"W": jnp.zeros(3), "b": jnp.zeros(())}, lam).params
        return jnp.sum(p["W"]) + 0.0 * p["b"]

    eps = 1e-5
    fd = (outer(0.1 + eps) - outer(0.1 - eps)) / (2 * eps)
    assert jnp.allclose(jax.grad(outer)(0.1), fd, rtol=1e-6)
    assert jnp.allclose(jax.jacfwd(outer)(0.1), fd, rtol=1e-6)
