"""hyperopt's fixed-point, optax, bisection and SciPy solvers against the real JAXopt 0.8.5.

On seeded problems in float64, each solver is run beside its JAXopt namesake with the same
options: the same solution, the same state fields and values, the same hypergradient
(hyperopt implicit vs JAXopt implicit), and hyperopt's own hypergradients checked by
independent means (implicit vs unrolled, central finite differences, closed forms, SciPy).
"""

import functools

import jax
import jax.numpy as jnp
import jaxopt  # the test-only extra: pip install .[compat]
import numpy as np
import optax
import pytest
import scipy.optimize
from sklearn.datasets import make_classification

import hyperopt


def rel_err(a, b):
    a, b = np.ravel(np.asarray(a)), np.ravel(np.asarray(b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def central_difference(fun, theta, direction, h=1e-5):
    return (fun(theta + h * direction) - fun(theta - h * direction)) / (2 * h)


# ---------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------

def _sinkhorn_problem(n=6, m=5, eps=0.5, seed=0):
    rng = np.random.default_rng(seed)
    C = jnp.asarray(rng.uniform(size=(n, m)))
    b = jnp.asarray(rng.dirichlet(np.ones(m)))
    theta = jnp.asarray(rng.normal(size=n))  # logits of the source marginal a = softmax(θ)
    return C, b, eps, theta


def sinkhorn_map(f, theta, C, b, eps):
    """One Sinkhorn sweep on the source potential f, gauge-fixed (mean 0) so that the fixed
    point is unique and I - ∂T is invertible (plain Sinkhorn has the shift f + c)."""
    log_a = jax.nn.log_softmax(theta)
    g = eps * jnp.log(b) - eps * jax.nn.logsumexp((f[:, None] - C) / eps, axis=0)
    f_new = eps * log_a - eps * jax.nn.logsumexp((g[None, :] - C) / eps, axis=1)
    return f_new - jnp.mean(f_new)


def sinkhorn_outer(f, C, b, eps):
    """An outer loss of the potential: a fixed random linear functional plus its square."""
    w = jnp.linspace(-1.0, 1.0, f.shape[0])
    return jnp.dot(w, f) + 0.5 * jnp.sum(f ** 2)


def _deq_problem(d=5, k=3, seed=1):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, d))
    W = 0.5 * W / np.linalg.norm(W, 2)  # spectral norm 0.5: tanh(Wz + ·) is a contraction
    U = rng.normal(size=(d, k))
    x = rng.normal(size=k)
    bias = rng.normal(size=d)
    return jnp.asarray(W), jnp.asarray(U), jnp.asarray(x), jnp.asarray(bias)


def deq_layer(z, params, U, x):
    """A deep-equilibrium layer z = tanh(W z + U x + b); params = {"W", "b"}."""
    return jnp.tanh(params["W"] @ z + U @ x + params["b"])


FIXED_POINT_SOLVERS = {
    "FixedPointIteration": dict(maxiter=3000),
    "AndersonAcceleration": dict(maxiter=300, history_size=5, ridge=1e-8),
}
# JAXopt's implicit linear solve defaults to 1e-5-accurate normal CG: give it a tight one (GMRES
# at 1e-13, which takes pytrees), so that the comparison tests the rule, not that default
JAXOPT_EXACT = dict(implicit_diff_solve=functools.partial(jaxopt.linear_solve.solve_gmres,
                                                          tol=1e-13))


# ---------------------------------------------------------------------------------------
# FixedPointIteration / AndersonAcceleration
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FIXED_POINT_SOLVERS))
def test_sinkhorn_fixed_point_matches_jaxopt(name):
    C, b, eps, theta = _sinkhorn_problem()
    opts = dict(FIXED_POINT_SOLVERS[name], tol=1e-12)
    ours = getattr(hyperopt, name)(sinkhorn_map, **opts)
    theirs = getattr(jaxopt, name)(sinkhorn_map, **opts, **JAXOPT_EXACT)
    f0 = jnp.zeros(C.shape[0])
    sol, state = ours.run(f0, theta, C, b, eps)
    ref, ref_state = theirs.run(f0, theta, C, b, eps)

    # same iterates: the same map applied the same number of times
    assert rel_err(sol, ref) < 1e-12
    assert int(state.iter_num) == int(ref_state.iter_num)
    assert set(ref_state._fields) <= set(state._fields)
    assert abs(float(state.error) - float(ref_state.error)) < 1e-12
    assert bool(state.converged) and float(state.error) <= 1e-12
    # the solution is a fixed point (checked on the map itself, not on the solver's error)
    assert float(jnp.max(jnp.abs(sinkhorn_map(sol, theta, C, b, eps) - sol))) < 1e-11

    def hypergradient(solver):
        return jax.grad(lambda t: sinkhorn_outer(solver.run(f0, t, C, b, eps).params, C, b, eps))

    g_ours, g_theirs = hypergradient(ours)(theta), hypergradient(theirs)(theta)
    g_unrolled = hypergradient(getattr(hyperopt, name)(sinkhorn_map, implicit_diff=False,
                                                        **opts))(theta)
    direction = jnp.asarray(np.random.default_rng(2).normal(size=theta.shape))
    fd = central_difference(
        lambda t: sinkhorn_outer(ours.run(f0, t, C, b, eps).params, C, b, eps), theta, direction)
    assert rel_err(g_ours, g_theirs) < 1e-8
    assert rel_err(g_ours, g_unrolled) < 1e-8
    assert abs(float(jnp.dot(g_ours, direction)) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize("name", sorted(FIXED_POINT_SOLVERS))
def test_deep_equilibrium_hypergradient(name):
    W, U, x, bias = _deq_problem()
    params = {"W": W, "b": bias}
    opts = dict(FIXED_POINT_SOLVERS[name], tol=1e-12)
    z0 = jnp.zeros(W.shape[0])
    loss = lambda z: jnp.sum(z ** 2) + jnp.sum(z)

    def outer(solver):
        # keyword arguments too: JAXopt binds them through fixed_point_fun's signature
        return lambda p: loss(solver.run(z0, p, U=U, x=x).params)

    ours = getattr(hyperopt, name)(deq_layer, **opts)
    theirs = getattr(jaxopt, name)(deq_layer, **opts, **JAXOPT_EXACT)
    unrolled = getattr(hyperopt, name)(deq_layer, implicit_diff=False, **opts)
    g = jax.grad(outer(ours))(params)
    g_ref = jax.grad(outer(theirs))(params)
    g_unrolled = jax.grad(outer(unrolled))(params)
    for key in params:
        assert rel_err(g[key], g_ref[key]) < 1e-8, key
        assert rel_err(g[key], g_unrolled[key]) < 1e-8, key

    # central difference along a random direction in (W, b)
    rng = np.random.default_rng(3)
    direction = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
    h = 1e-5
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * h * d, params, direction)
    fd = (outer(ours)(shifted(1.0)) - outer(ours)(shifted(-1.0))) / (2 * h)
    directional = sum(float(jnp.vdot(g[k], direction[k])) for k in params)
    assert abs(directional - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))


def test_fixed_point_has_aux_state_matches_jaxopt():
    """has_aux: aux rides along in the state (the logistic-map test of JAXopt's suite)."""
    def T(x, r, y):
        return jnp.cos(x), r * y * (1 - y)

    r, x0, y0 = jnp.array([3.95]), jnp.array([1.0]), jnp.array([0.6])
    ours = hyperopt.FixedPointIteration(T, maxiter=50, tol=1e-14, has_aux=True)
    theirs = jaxopt.FixedPointIteration(T, maxiter=50, tol=1e-14, has_aux=True)
    sol, state = ours.run(x0, r, y0)
    ref, ref_state = theirs.run(x0, r, y0)
    assert rel_err(sol, ref) < 1e-14
    assert rel_err(state.aux, ref_state.aux) < 1e-14
    assert int(state.num_fun_eval) == int(ref_state.num_fun_eval) == 50


def test_anderson_converges_where_plain_iteration_stalls():
    """A rotation about c is not a contraction: fixed-point iteration never converges, Anderson
    finds c (JAXopt's rotation test, compared here with JAXopt's iterates)."""
    angles = jnp.pi / jnp.array([2.0, 3.0, 4.0, 5.0])
    c = jnp.arange(1.0, 9.0)

    def rotate(x, angles, c):
        cos, sin = jnp.cos(angles), jnp.sin(angles)
        blocks = [jnp.array([[ci, -si], [si, ci]]) for ci, si in zip(cos, sin, strict=True)]
        return jax.scipy.linalg.block_diag(*blocks) @ (x - c) + c

    x0 = jnp.asarray(np.random.default_rng(4).uniform(size=8))
    opts = dict(history_size=10, maxiter=200, ridge=1e-10, tol=1e-10)
    sol, state = hyperopt.AndersonAcceleration(rotate, **opts).run(x0, angles, c)
    ref, ref_state = jaxopt.AndersonAcceleration(rotate, **opts).run(x0, angles, c)
    assert float(jnp.max(jnp.abs(sol - c))) < 1e-8
    assert rel_err(sol, ref) < 1e-10 and int(state.iter_num) == int(ref_state.iter_num)
    plain = hyperopt.FixedPointIteration(rotate, maxiter=200, tol=1e-10).run(x0, angles, c)
    assert not bool(plain.state.converged) and float(jnp.max(jnp.abs(plain.params - c))) > 0.1


# ---------------------------------------------------------------------------------------
# OptaxSolver
# ---------------------------------------------------------------------------------------

def _ridge_data(n=40, p=5, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = X @ rng.normal(size=p) + 0.1 * rng.normal(size=n)
    return jnp.asarray(X), jnp.asarray(y)


def ridge_objective(w, lam, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.sum(w ** 2)


def ridge_closed_form(lam, X, y):
    X, y = np.asarray(X), np.asarray(y)
    n, p = X.shape
    K = X.T @ X / n + lam * np.eye(p)
    w = np.linalg.solve(K, X.T @ y / n)
    return w, -np.linalg.solve(K, w)  # w*(λ), dw*/dλ


@pytest.mark.parametrize("opt_name, opt", [("adam", optax.adam(0.05)), ("sgd", optax.sgd(0.5))])
def test_optax_solver_ridge_matches_jaxopt(opt_name, opt):
    X, y = _ridge_data()
    lam = 0.1
    w0 = jnp.zeros(X.shape[1])
    # a fixed number of steps: every optax step is compared with JAXopt's
    ours = hyperopt.OptaxSolver(opt=opt, fun=ridge_objective, maxiter=60, tol=1e-300)
    theirs = jaxopt.OptaxSolver(opt=opt, fun=ridge_objective, maxiter=60, tol=1e-300)
    sol, state = ours.run(w0, lam, X=X, y=y)
    ref, ref_state = theirs.run(w0, lam, X=X, y=y)
    assert set(ref_state._fields) <= set(state._fields)
    assert rel_err(sol, ref) < 1e-12
    assert int(state.iter_num) == int(ref_state.iter_num) == 60
    assert abs(float(state.value) - float(ref_state.value)) < 1e-12
    assert abs(float(state.error) - float(ref_state.error)) < 1e-12
    for a, b in zip(jax.tree.leaves(state.internal_state),
                    jax.tree.leaves(ref_state.internal_state), strict=True):
        assert rel_err(a, b) < 1e-12 or float(np.max(np.abs(np.asarray(a) - b))) < 1e-14
    # unrolled (JAXopt's default): the derivative of the 60 steps, the same in both
    g = jax.grad(lambda lam_: jnp.sum(ours.run(w0, lam_, X=X, y=y).params))(lam)
    g_ref = jax.grad(lambda lam_: jnp.sum(theirs.run(w0, lam_, X=X, y=y).params))(lam)
    assert abs(float(g) - float(g_ref)) < 1e-10 * max(1.0, abs(float(g_ref)))


@pytest.mark.parametrize("opt", [optax.adam(0.02), optax.sgd(0.5)], ids=["adam", "sgd"])
def test_optax_solver_implicit_hypergradient_is_the_closed_form(opt):
    X, y = _ridge_data()
    lam = 0.1
    w_star, dw = ridge_closed_form(lam, X, y)
    ours = hyperopt.OptaxSolver(opt=opt, fun=ridge_objective, maxiter=5000, tol=1e-11,
                                implicit_diff=True)
    theirs = jaxopt.OptaxSolver(opt=opt, fun=ridge_objective, maxiter=5000, tol=1e-11,
                                implicit_diff=True, **JAXOPT_EXACT)
    w0 = jnp.zeros(X.shape[1])
    sol, state = ours.run(w0, lam, X, y)
    assert bool(state.converged) and rel_err(sol, w_star) < 1e-9
    J = jax.jacobian(lambda lam_: ours.run(w0, lam_, X, y).params)(lam)
    J_ref = jax.jacobian(lambda lam_: theirs.run(w0, lam_, X, y).params)(lam)
    assert rel_err(J, dw) < 1e-8
    assert rel_err(J, J_ref) < 1e-8


def test_optax_solver_has_aux_and_value_and_grad():
    X, y = _ridge_data()
    with_aux = lambda w, lam, X, y: (ridge_objective(w, lam, X, y), {"norm": jnp.sum(w ** 2)})
    vg = jax.value_and_grad(ridge_objective)
    w0, lam = jnp.zeros(X.shape[1]), 0.1
    runs = []
    for kw in (dict(fun=with_aux, has_aux=True), dict(fun=vg, value_and_grad=True)):
        ours = hyperopt.OptaxSolver(opt=optax.sgd(0.3), maxiter=30, tol=1e-300, **kw)
        theirs = jaxopt.OptaxSolver(opt=optax.sgd(0.3), maxiter=30, tol=1e-300, **kw)
        a, b = ours.run(w0, lam, X, y), theirs.run(w0, lam, X, y)
        assert rel_err(a.params, b.params) < 1e-12
        if kw.get("has_aux"):
            assert rel_err(a.state.aux["norm"], b.state.aux["norm"]) < 1e-12
        runs.append(a.params)
    assert rel_err(runs[0], runs[1]) < 1e-12


# ---------------------------------------------------------------------------------------
# Bisection
# ---------------------------------------------------------------------------------------

def simplex_threshold_condition(tau, x, s):
    return jnp.sum(jnp.maximum(x - tau, 0)) - s


def test_bisection_hypergradient_is_the_closed_form():
    """τ(x, s) solves Σ max(x - τ, 0) = s: dτ/dx_i = 1/|S| on the support S, dτ/ds = -1/|S|."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=12))
    s = 1.5
    lower, upper = float(jnp.min(x)) - s, float(jnp.max(x))
    opts = dict(lower=lower, upper=upper, maxiter=80, tol=1e-13)
    ours = hyperopt.Bisection(simplex_threshold_condition, **opts)
    theirs = jaxopt.Bisection(simplex_threshold_condition, **opts, **JAXOPT_EXACT)
    tau, state = ours.run(None, x, s)
    tau_ref, ref_state = theirs.run(None, x, s)
    assert set(ref_state._fields) <= set(state._fields)
    assert abs(float(tau) - float(tau_ref)) < 1e-14 and int(state.iter_num) == int(ref_state.iter_num)
    for field in ("low", "high", "sign", "value", "num_fun_eval"):
        assert float(getattr(state, field)) == pytest.approx(float(getattr(ref_state, field)), abs=1e-14)

    support = np.asarray(x) > float(tau)
    dx_exact = support / support.sum()
    dx, ds = jax.grad(lambda x, s: ours.run(None, x, s).params, argnums=(0, 1))(x, s)
    dx_ref = jax.grad(lambda x: theirs.run(None, x, s).params)(x)
    assert rel_err(dx, dx_exact) < 1e-10 and rel_err(dx, dx_ref) < 1e-10
    assert abs(float(ds) + 1 / support.sum()) < 1e-10
    # also compiled by the caller, with the bracket computed from x (JAXopt's pattern)
    jitted = jax.jit(jax.grad(lambda x: hyperopt.Bisection(
        simplex_threshold_condition, lower=jnp.min(x) - s, upper=jnp.max(x), maxiter=80,
        tol=1e-13, check_bracket=False).run(None, x, s).params))
    assert rel_err(jitted(x), dx_exact) < 1e-10


def test_bisection_bad_bracket_is_a_value_error():
    x = jnp.asarray(np.random.default_rng(7).normal(size=5))
    bad = hyperopt.Bisection(simplex_threshold_condition, lower=float(jnp.max(x)),
                             upper=float(jnp.max(x)) + 1.0)
    with pytest.raises(ValueError, match="bracket"):
        bad.run(None, x, 1.0)
    with pytest.raises(ValueError):
        jaxopt.Bisection(simplex_threshold_condition, lower=float(jnp.max(x)),
                         upper=float(jnp.max(x)) + 1.0).run(None, x, 1.0)


# ---------------------------------------------------------------------------------------
# SciPy wrappers
# ---------------------------------------------------------------------------------------

def _logreg_data():
    X, y = make_classification(n_samples=40, n_features=4, n_informative=3, n_redundant=0,
                               random_state=0)
    return jnp.asarray(X), jnp.asarray(y, jnp.float64)


def logreg_objective(w, lam, X, y):
    logits = X @ w["coef"] + w["intercept"]
    return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits) + 0.5 * lam * jnp.sum(w["coef"] ** 2)


def test_scipy_minimize_matches_scipy_and_jaxopt():
    X, y = _logreg_data()
    lam = 0.05
    w0 = {"coef": jnp.zeros(X.shape[1]), "intercept": jnp.zeros(())}
    opts = dict(fun=logreg_objective, method="L-BFGS-B", tol=1e-13, maxiter=1000)
    ours, theirs = hyperopt.ScipyMinimize(**opts), jaxopt.ScipyMinimize(**opts, **JAXOPT_EXACT)
    sol, info = ours.run(w0, lam, X=X, y=y)
    ref, ref_info = theirs.run(w0, lam, X=X, y=y)

    # SciPy called directly on the flat vector [coef, intercept]
    def flat_objective(v):
        return float(logreg_objective({"coef": v[:-1], "intercept": v[-1]}, lam, X, y))
    direct = scipy.optimize.minimize(flat_objective, np.zeros(X.shape[1] + 1), method="L-BFGS-B",
                                     jac=lambda v: np.asarray(jax.grad(lambda u: logreg_objective(
                                         {"coef": u[:-1], "intercept": u[-1]}, lam, X, y))(v)),
                                     tol=1e-13, options={"maxiter": 1000})
    flat = np.append(np.asarray(sol["coef"]), float(sol["intercept"]))
    assert rel_err(flat, direct.x) < 1e-7
    assert rel_err(sol["coef"], ref["coef"]) < 1e-12
    for field in ("fun_val", "success", "status", "iter_num", "num_fun_eval", "num_jac_eval"):
        assert float(getattr(info, field)) == pytest.approx(float(getattr(ref_info, field)), rel=1e-12)
    assert set(ref_info._fields) <= set(info._fields)
    assert rel_err(info.hess_inv, np.asarray(ref_info.hess_inv.todense())) < 1e-10

    # hypergradient: JAXopt, finite differences, and the same under jit and vmap
    val = lambda w: jnp.sum(w["coef"] ** 2) + w["intercept"]
    g = jax.grad(lambda lam_: val(ours.run(w0, lam_, X=X, y=y).params))(lam)
    g_ref = jax.grad(lambda lam_: val(theirs.run(w0, lam_, X, y).params))(lam)
    fd = central_difference(lambda lam_: val(ours.run(w0, lam_, X=X, y=y).params), lam, 1.0, h=1e-4)
    assert abs(float(g) - float(g_ref)) < 1e-7 * abs(float(g_ref))
    assert abs(float(g) - float(fd)) < 1e-5 * abs(float(fd))
    batched = jax.jit(jax.vmap(lambda lam_: ours.run(w0, lam_, X, y).params["coef"]))(jnp.array([lam, 0.5]))
    assert rel_err(batched[0], sol["coef"]) < 1e-10
    assert rel_err(batched[1], theirs.run(w0, 0.5, X, y).params["coef"]) < 1e-10


def test_scipy_root_finding_matches_jaxopt_and_the_inverse():
    rng = np.random.default_rng(8)
    A = jnp.asarray(rng.normal(size=(6, 6)) + 3 * np.eye(6))
    b = jnp.asarray(rng.normal(size=6))
    F = lambda x, b: A @ x + 0.1 * jnp.tanh(x) - b  # nonlinear: dx/db = (A + 0.1 diag(sech²))⁻¹
    ours = hyperopt.ScipyRootFinding(optimality_fun=F, method="hybr", tol=1e-13)
    theirs = jaxopt.ScipyRootFinding(optimality_fun=F, method="hybr", tol=1e-13, **JAXOPT_EXACT)
    x, info = ours.run(jnp.zeros(6), b)
    ref, ref_info = theirs.run(jnp.zeros(6), b)
    assert rel_err(x, ref) < 1e-12 and bool(info.success)
    assert float(jnp.max(jnp.abs(F(x, b)))) < 1e-12
    assert int(info.num_fun_eval) == int(ref_info.num_fun_eval)
    J = jax.jacobian(lambda b: ours.run(jnp.zeros(6), b).params)(b)
    J_exact = np.linalg.inv(np.asarray(A) + 0.1 * np.diag(1 - np.tanh(np.asarray(x)) ** 2))
    J_ref = jax.jacobian(lambda b: theirs.run(jnp.zeros(6), b).params)(b)
    assert rel_err(J, J_exact) < 1e-10 and rel_err(J, J_ref) < 1e-10


@pytest.mark.parametrize("loss", ["linear", "huber"])
def test_scipy_least_squares_matches_jaxopt(loss):
    rng = np.random.default_rng(9)
    t = jnp.asarray(np.linspace(0, 3, 25))
    obs = jnp.asarray(2.0 * np.exp(-1.3 * np.linspace(0, 3, 25)) + 0.05 * rng.normal(size=25))
    residuals = lambda w, shift, t, obs: w["a"] * jnp.exp(-w["k"] * t) + shift - obs
    w0 = {"a": jnp.asarray(1.0), "k": jnp.asarray(1.0)}
    opts = dict(fun=residuals, loss=loss, method="trf", options={
        "f_scale": 0.1, "xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15})
    ours = hyperopt.ScipyLeastSquares(**opts)
    theirs = jaxopt.ScipyLeastSquares(**{**opts, "options": dict(opts["options"])}, **JAXOPT_EXACT)
    sol, info = ours.run(w0, 0.1, t, obs)
    ref, ref_info = theirs.run(w0, 0.1, t, obs)
    assert rel_err([sol["a"], sol["k"]], [ref["a"], ref["k"]]) < 1e-10
    assert set(ref_info._fields) <= set(info._fields)
    assert abs(float(info.cost_val) - float(ref_info.cost_val)) < 1e-12
    k_of = lambda s: ours.run(w0, s, t, obs).params["k"]
    g = jax.grad(k_of)(0.1)
    # h = 1e-3: SciPy's own stopping leaves ~1e-10 noise in the solution, which a smaller
    # step amplifies (h = 1e-5: 2.5e-5 relative error in the difference on scipy 1.17)
    fd = central_difference(k_of, 0.1, 1.0, h=1e-3)
    assert abs(float(g) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))
    if loss == "linear":
        g_ref = jax.grad(lambda s: theirs.run(w0, s, t, obs).params["k"])(0.1)
        assert abs(float(g) - float(g_ref)) < 1e-8 * max(1.0, abs(float(g_ref)))
    # JAXopt's robust losses apply ρ to r/f_scale, SciPy's (and hyperopt's) to (r/f_scale)²:
    # JAXopt differentiates another cost than SciPy minimized, and its huber hypergradient
    # is off (documented in the migration guide), so only the finite difference judges it.


def test_scipy_least_squares_huber_hypergradient_at_an_exact_fit():
    # JAXopt's test_bwd: noiseless data, the fit is exact, every residual is zero there; the
    # huber branch 2 sqrt(z) - 1 has an infinite derivative at z = 0 (NaN through where before)
    t = jnp.asarray(np.linspace(0, 3, 25))
    residuals = lambda w, a, t, obs: a * jnp.exp(-w * t) - obs
    obs = 2.0 * jnp.exp(-1.3 * t)
    lsq = hyperopt.ScipyLeastSquares(fun=residuals, loss="huber", method="trf",
                                     options={"f_scale": 0.2})
    g = jax.grad(lambda a: lsq.run(jnp.asarray(1.3), a, t, obs).params)(2.0)
    # closed form: w*(a) solves a exp(-w t) = 2 exp(-1.3 t), so w* = 1.3 at a = 2 and, with
    # residuals linear in a near the fit, dw*/da = <t e, e> / (a <t e, t e>), e = exp(-1.3 t)
    e = np.exp(-1.3 * np.asarray(t))
    exact = np.dot(np.asarray(t) * e, e) / (2.0 * np.dot(np.asarray(t) * e, np.asarray(t) * e))
    assert np.isfinite(float(g))
    np.testing.assert_allclose(float(g), exact, rtol=1e-8)


def test_scipy_bounded_minimize_box_derivative():
    """Least squares in a box [-r, r]: active coordinates sit on the box (dw_i/dr = ±1), the
    free ones move with the others; checked against JAXopt and finite differences."""
    rng = np.random.default_rng(10)
    X = jnp.asarray(rng.normal(size=(30, 4)))
    y = X @ jnp.array([3.0, -0.2, 0.1, -2.5]) + 0.01 * jnp.asarray(rng.normal(size=30))
    fun = lambda w, X, y: 0.5 * jnp.mean((X @ w - y) ** 2)
    opts = dict(fun=fun, method="L-BFGS-B", tol=1e-14, maxiter=2000)
    ours = hyperopt.ScipyBoundedMinimize(**opts)
    theirs = jaxopt.ScipyBoundedMinimize(**opts, **JAXOPT_EXACT)
    w0 = jnp.zeros(4)
    run = lambda solver, r: solver.run(w0, (-r * jnp.ones(4), r * jnp.ones(4)), X, y).params
    w = run(ours, 1.0)
    assert rel_err(w, run(theirs, 1.0)) < 1e-8
    assert float(w[0]) == pytest.approx(1.0) and float(w[3]) == pytest.approx(-1.0)
    J = jax.jacobian(lambda r: run(ours, r))(1.0)
    J_ref = jax.jacobian(lambda r: run(theirs, r))(1.0)
    fd = central_difference(lambda r: run(ours, r), 1.0, 1.0, h=1e-4)
    # FD through L-BFGS-B solutions accurate to ~1e-9: h = 1e-4 leaves ~1e-5 of noise
    assert rel_err(J, J_ref) < 1e-6 and rel_err(J, fd) < 3e-4
    assert float(J[0]) == pytest.approx(1.0) and float(J[3]) == pytest.approx(-1.0)


def test_unrolled_scipy_is_refused():
    with pytest.raises(ValueError, match="implicit_diff"):
        hyperopt.ScipyMinimize(fun=ridge_objective, implicit_diff=False)
    with pytest.raises(ValueError, match="maxiter"):
        hyperopt.ScipyMinimize(fun=ridge_objective, options={"maxiter": 3})
