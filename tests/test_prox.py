"""Proximal operators and projections against independent references.

References: the prox objective minimized numerically (1-D bounded Brent per coordinate, and
L-BFGS-B on a smooth split ``y = u - v``), the projection's variational inequality, SLSQP and
a bisection on the simplex threshold, and central finite differences in float64 for the
Jacobians w.r.t. inputs and hyperparameters.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from hyperopt import prox

# Compiled once per shape: eager dispatch compiles every primitive separately, which is slow
# on CPU. test_jit_and_vmap_match_eager checks the eager functions against these.
prox_none = jax.jit(prox.prox_none)
prox_lasso = jax.jit(prox.prox_lasso)
prox_non_negative_lasso = jax.jit(prox.prox_non_negative_lasso)
prox_ridge = jax.jit(prox.prox_ridge)
prox_non_negative_ridge = jax.jit(prox.prox_non_negative_ridge)
prox_elastic_net = jax.jit(prox.prox_elastic_net)
projection_non_negative = jax.jit(prox.projection_non_negative)
projection_box = jax.jit(prox.projection_box)
projection_l2_ball = jax.jit(prox.projection_l2_ball)
projection_simplex = jax.jit(prox.projection_simplex)

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _at(hyperparam, i):
    """The hyperparameter of coordinate ``i`` (a scalar, or entry ``i`` of a per-feature array)."""
    return float(hyperparam) if np.ndim(hyperparam) == 0 else float(hyperparam[i])


def _prox_1d(g, x_i, scaling, lower=-20.0):
    """argmin_y 0.5 (y - x_i)² + scaling · g(y) by bounded Brent (``g`` convex, 1-D)."""
    res = optimize.minimize_scalar(
        lambda y: 0.5 * (y - x_i) ** 2 + scaling * g(y), bounds=(lower, 20.0), method="bounded",
        options={"xatol": 1e-12, "maxiter": 5000})
    return res.x


def _bisection_simplex(x, value):
    """max(x - τ, 0) with Σ max(x - τ, 0) = value, τ found by bisection (no sorting)."""
    lo, hi = x.min() - value, x.max()  # excess(lo) ≥ value, excess(hi) = 0
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        if np.maximum(x - tau, 0.0).sum() > value:
            lo = tau
        else:
            hi = tau
    return np.maximum(x - 0.5 * (lo + hi), 0.0)


def _fd_jacobian(f, args, argnum, eps=1e-6):
    """Central finite differences of ``f(*args)`` (an array) w.r.t. ``args[argnum]``."""
    arg = np.asarray(args[argnum], dtype=np.float64)
    cols = []
    for j in range(arg.size):
        step = np.zeros(arg.size)
        step[j] = eps
        step = step.reshape(arg.shape)

        def shifted(s):
            a = list(args)
            a[argnum] = arg + s
            return np.asarray(f(*a))

        cols.append((shifted(step) - shifted(-step)) / (2 * eps))
    jac = np.stack(cols, axis=-1)
    return jac.reshape(jac.shape[:-1] + arg.shape)


def _assert_jacobians_match_fd(f, args, argnums, atol=1e-7):
    """jacfwd and jacrev of ``f`` agree with central differences for each argument in argnums."""
    args = tuple(jnp.asarray(a, dtype=jnp.float64) for a in args)
    f_jit = jax.jit(f)
    expected = [_fd_jacobian(f_jit, args, argnum) for argnum in argnums]
    for jac in (jax.jacfwd, jax.jacrev):
        got = jax.jit(jac(f, argnums=tuple(argnums)))(*args)
        for argnum, g, e in zip(argnums, got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=atol, err_msg=f"{jac.__name__} arg {argnum}")


def _resample_until(rng, sample, ok, tries=1000):
    for _ in range(tries):
        x = sample(rng)
        if ok(x):
            return x
    raise RuntimeError("could not sample a point away from the kinks")


# ---------------------------------------------------------------------------------------
# Proximal operators: value
# ---------------------------------------------------------------------------------------

# name -> (prox, g(y, hyperparams of one coordinate), lower end of the domain,
#          sampler of hyperparams given (rng, n, per_feature))
_uniform = lambda rng, n, per_feature: rng.uniform(0.1, 2.0, n if per_feature else None)
PROX_CASES = {
    "none": (prox_none, lambda y, h: 0.0, -20.0, lambda rng, n, pf: None),
    "lasso": (prox_lasso, lambda y, h: h * abs(y), -20.0, _uniform),
    "non_negative_lasso": (prox_non_negative_lasso, lambda y, h: h * y, 0.0, _uniform),
    "ridge": (prox_ridge, lambda y, h: 0.5 * h * y**2, -20.0, _uniform),
    "non_negative_ridge": (prox_non_negative_ridge, lambda y, h: 0.5 * h * y**2, 0.0, _uniform),
    "elastic_net": (
        prox_elastic_net, lambda y, h: h[0] * (abs(y) + 0.5 * h[1] * y**2), -20.0,
        lambda rng, n, pf: (_uniform(rng, n, pf), _uniform(rng, n, pf))),
}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("name", sorted(PROX_CASES))
def test_prox_is_the_argmin_coordinatewise(name, per_feature, seed):
    fun, g, lower, sample_hp = PROX_CASES[name]
    rng = np.random.default_rng(seed)
    n = 6
    x = rng.uniform(-3.0, 3.0, n)
    hp = sample_hp(rng, n, per_feature)
    scaling = rng.uniform(0.3, 1.5)
    got = np.asarray(fun(jnp.asarray(x), hp, scaling))

    def hp_at(i):
        if isinstance(hp, tuple):
            return tuple(_at(h, i) for h in hp)
        return None if hp is None else _at(hp, i)

    expected = [_prox_1d(lambda y, i=i: g(y, hp_at(i)), x[i], scaling, lower) for i in range(n)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_elastic_net_prox_matches_smooth_split_lbfgsb(seed):
    """Whole-vector reference: y = u - v with u, v ≥ 0 makes the objective smooth."""
    rng = np.random.default_rng(100 + seed)
    n = 8
    x = rng.normal(size=n) * 2
    l1, l2 = rng.uniform(0.1, 1.5, n), rng.uniform(0.0, 1.0, n)
    scaling = rng.uniform(0.5, 2.0)

    def objective(w):
        u, v = w[:n], w[n:]
        y = u - v
        r = y - x
        # JAXopt's definition: g(y) = l1 (|y| + 0.5 l2 y²)
        value = 0.5 * r @ r + scaling * (l1 @ (u + v) + 0.5 * (l1 * l2) @ y**2)
        grad_y = r + scaling * l1 * l2 * y
        return value, np.concatenate([grad_y + scaling * l1, -grad_y + scaling * l1])

    res = optimize.minimize(objective, np.zeros(2 * n), jac=True, method="L-BFGS-B",
                            bounds=[(0, None)] * (2 * n),
                            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    expected = res.x[:n] - res.x[n:]
    np.testing.assert_allclose(prox_elastic_net(x, (l1, l2), scaling), expected, atol=1e-6)
    # The lasso is the elastic net with l2reg = 0.
    np.testing.assert_allclose(prox_elastic_net(x, (l1, 0.0), scaling),
                               prox_lasso(x, l1, scaling), atol=1e-14)


def test_prox_defaults_match_jaxopt():
    """JAXopt's defaults: l1reg = l2reg = 1 when the hyperparameters are None."""
    x = jnp.array([3.0, -0.5, -2.0])
    np.testing.assert_allclose(prox_lasso(x), [2.0, 0.0, -1.0])
    np.testing.assert_allclose(prox_elastic_net(x), [1.0, 0.0, -0.5])
    np.testing.assert_allclose(prox_ridge(x), x / 2)


# ---------------------------------------------------------------------------------------
# Projections: feasibility and the variational inequality <x - p, z - p> ≤ 0
# ---------------------------------------------------------------------------------------


def _assert_projection(x, p, feasible_z):
    """The variational inequality, which with feasibility characterizes the projection."""
    residual = x - p
    worst = max(float(residual @ (z - p)) for z in feasible_z)
    assert worst <= 1e-10, worst


def test_projection_non_negative():
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.normal(size=7)
        p = np.asarray(projection_non_negative(x))
        z = np.abs(rng.normal(size=(200, 7))) * rng.uniform(0, 3, (200, 1))
        assert np.all(p >= 0)
        _assert_projection(x, p, z)


def test_projection_box():
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.normal(size=7) * 2
        lower = rng.uniform(-1.5, 0.0, 7)
        upper = lower + rng.uniform(0.1, 2.0, 7)
        p = np.asarray(projection_box(x, (lower, upper)))
        z = lower + rng.uniform(0, 1, (200, 7)) * (upper - lower)
        assert np.all((lower <= p) & (p <= upper))
        _assert_projection(x, p, z)
    # Scalar bounds broadcast.
    np.testing.assert_allclose(projection_box(x, (-0.5, 0.5)), np.clip(x, -0.5, 0.5))


def test_projection_l2_ball():
    rng = np.random.default_rng(4)
    for scale in (0.2, 3.0):  # inside and outside the ball
        x = rng.normal(size=7) * scale
        radius = 1.3
        p = np.asarray(projection_l2_ball(x, radius))
        d = rng.normal(size=(200, 7))
        z = d / np.linalg.norm(d, axis=1, keepdims=True) * radius * rng.uniform(0, 1, (200, 1))
        assert np.linalg.norm(p) <= radius + 1e-12
        _assert_projection(x, p, z)
        if np.linalg.norm(x) <= radius:
            np.testing.assert_allclose(p, x, atol=1e-15)


@pytest.mark.parametrize("value", [1.0, 0.3, 4.0])
def test_projection_simplex_matches_bisection_and_variational_inequality(value):
    rng = np.random.default_rng(5)
    for n in (1, 2, 6, 30):
        for _ in range(4):
            x = rng.normal(size=n) * rng.choice([0.1, 1.0, 10.0])
            p = np.asarray(projection_simplex(x, value))
            np.testing.assert_allclose(p, _bisection_simplex(x, value), atol=1e-12)
            z = rng.dirichlet(np.ones(n), 200) * value
            assert np.all(p >= 0) and abs(p.sum() - value) < 1e-12
            _assert_projection(x, p, z)


@pytest.mark.parametrize("seed", range(3))
def test_projection_simplex_matches_slsqp(seed):
    rng = np.random.default_rng(60 + seed)
    x, value = rng.normal(size=6), rng.uniform(0.5, 2.0)
    res = optimize.minimize(
        lambda y: 0.5 * np.sum((y - x) ** 2), np.full(6, value / 6), jac=lambda y: y - x,
        method="SLSQP", bounds=[(0, None)] * 6,
        constraints=[{"type": "eq", "fun": lambda y: y.sum() - value,
                      "jac": lambda y: np.ones_like(y)}],
        options={"ftol": 1e-14, "maxiter": 500})
    assert res.success
    np.testing.assert_allclose(projection_simplex(x, value), res.x, atol=1e-7)


def test_projection_simplex_with_ties_and_a_point_already_on_the_simplex():
    np.testing.assert_allclose(projection_simplex(jnp.array([1.0, 1.0, 1.0])), [1 / 3] * 3)
    y = jnp.array([0.2, 0.0, 0.5, 0.3])
    np.testing.assert_allclose(projection_simplex(y), y, atol=1e-15)


@pytest.mark.parametrize("projection, hyperparams", [
    (projection_non_negative, None),
    (projection_box, (-0.3, 0.4)),
    (projection_l2_ball, 0.7),
    (projection_simplex, 2.0),
])
def test_projections_are_idempotent(projection, hyperparams):
    x = np.random.default_rng(7).normal(size=9)
    p = projection(x, hyperparams)
    np.testing.assert_allclose(projection(p, hyperparams), p, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Jacobians vs central finite differences (float64, away from the kinks)
# ---------------------------------------------------------------------------------------


def _away_from_threshold(rng, n, threshold, margin=0.05):
    """x with |x_i| and ||x_i| - threshold_i| both ≥ margin (soft-threshold kinks)."""
    return _resample_until(
        rng, lambda r: r.uniform(-3.0, 3.0, n),
        lambda x: np.all(np.abs(x) > margin) and np.all(np.abs(np.abs(x) - threshold) > margin))


@pytest.mark.parametrize("per_feature", [False, True])
def test_lasso_jacobians(per_feature):
    rng = np.random.default_rng(8)
    n, scaling = 6, 0.8
    l1 = rng.uniform(0.2, 1.5, n) if per_feature else np.float64(0.9)
    x = _away_from_threshold(rng, n, scaling * l1)
    assert 0 < np.sum(np.abs(x) > scaling * l1) < n  # both regimes are exercised
    _assert_jacobians_match_fd(prox_lasso, (x, l1, scaling), argnums=(0, 1, 2))


def test_non_negative_lasso_and_ridge_jacobians():
    rng = np.random.default_rng(9)
    n, scaling = 6, 0.8
    l1 = rng.uniform(0.2, 1.5, n)
    x = _resample_until(rng, lambda r: r.uniform(-3, 3, n),
                        lambda x: np.all(np.abs(x - scaling * l1) > 0.05))
    _assert_jacobians_match_fd(prox_non_negative_lasso, (x, l1, scaling), argnums=(0, 1, 2))
    l2 = rng.uniform(0.0, 2.0, n)
    x = _resample_until(rng, lambda r: r.uniform(-3, 3, n), lambda x: np.all(np.abs(x) > 0.05))
    _assert_jacobians_match_fd(prox_non_negative_ridge, (x, l2, scaling), argnums=(0, 1, 2))
    _assert_jacobians_match_fd(prox_ridge, (x, l2, scaling), argnums=(0, 1, 2))


def test_elastic_net_jacobians():
    rng = np.random.default_rng(10)
    n, scaling = 6, 1.2
    l1, l2 = rng.uniform(0.2, 1.5, n), rng.uniform(0.1, 2.0, n)
    x = _away_from_threshold(rng, n, scaling * l1)
    f = lambda x, l1, l2, s: prox_elastic_net(x, (l1, l2), s)
    _assert_jacobians_match_fd(f, (x, l1, l2, scaling), argnums=(0, 1, 2, 3))


def test_box_jacobians():
    rng = np.random.default_rng(11)
    n = 8
    lower = rng.uniform(-1.0, 0.0, n)
    upper = lower + rng.uniform(0.5, 1.5, n)
    x = _resample_until(
        rng, lambda r: r.uniform(-2, 2, n),
        lambda x: np.all(np.abs(x - lower) > 0.05) and np.all(np.abs(x - upper) > 0.05))
    assert np.any(x < lower) and np.any(x > upper) and np.any((lower < x) & (x < upper))
    f = lambda x, lo, hi: projection_box(x, (lo, hi))
    _assert_jacobians_match_fd(f, (x, lower, upper), argnums=(0, 1, 2))


@pytest.mark.parametrize("scale", [0.1, 2.0])  # inside and outside the ball
def test_l2_ball_jacobians(scale):
    x = np.random.default_rng(12).normal(size=5) * scale
    assert abs(np.linalg.norm(x) - 1.1) > 0.05
    _assert_jacobians_match_fd(projection_l2_ball, (x, 1.1), argnums=(0, 1))


def test_l2_ball_jacobian_at_zero_is_identity_not_nan():
    jac = jax.jit(jax.jacobian(prox.projection_l2_ball))(jnp.zeros(3), 1.0)
    np.testing.assert_array_equal(jac, np.eye(3))


@pytest.mark.parametrize("value", [1.0, 2.5])
def test_simplex_jacobians(value):
    rng = np.random.default_rng(13)
    n = 7

    def margin(x):
        tau = np.max(x - _bisection_simplex(x, value))  # x_i - p_i = τ on the support
        support = _bisection_simplex(x, value) > 0
        return np.min(np.abs(x - tau)), support.sum()

    x = _resample_until(rng, lambda r: r.normal(size=n),
                        lambda x: margin(x)[0] > 0.05 and 1 < margin(x)[1] < n)
    _assert_jacobians_match_fd(projection_simplex, (x, value), argnums=(0, 1))


def test_fixed_point_map_jacobians():
    """The map implicit differentiation uses: T(x, θ) = prox(x - η ∇f(x), θ, η)."""
    rng = np.random.default_rng(14)
    A, b = rng.normal(size=(10, 5)), rng.normal(size=10)
    step = 0.05
    T = lambda x, l1: prox_lasso(x - step * A.T @ (A @ x - b), l1, step)
    l1 = rng.uniform(0.5, 2.0, 5)
    x = _resample_until(rng, lambda r: r.normal(size=5),
                        lambda x: np.all(np.abs(np.abs(x - step * A.T @ (A @ x - b))
                                                - step * l1) > 0.02))
    _assert_jacobians_match_fd(T, (x, l1), argnums=(0, 1))


# ---------------------------------------------------------------------------------------
# Pytrees, jit, vmap
# ---------------------------------------------------------------------------------------


def _tree():
    rng = np.random.default_rng(15)
    return {"w": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=4))}


def test_prox_on_pytrees():
    x = _tree()
    out = prox_lasso(x, 0.5, 0.8)
    for k in x:
        np.testing.assert_allclose(out[k], prox_lasso(x[k], 0.5, 0.8))
    # One hyperparameter per leaf (e.g. no penalty on the intercept).
    l1 = {"w": jnp.full((3, 2), 0.5), "b": 0.0}
    out = prox_lasso(x, l1)
    np.testing.assert_allclose(out["w"], prox_lasso(x["w"], 0.5))
    np.testing.assert_allclose(out["b"], x["b"])
    out = prox_elastic_net(x, (l1, {"w": 1.0, "b": 0.0}))
    np.testing.assert_allclose(out["w"], prox_elastic_net(x["w"], (0.5, 1.0)))
    np.testing.assert_allclose(out["b"], x["b"])
    with pytest.raises(ValueError, match="pytree like x"):
        prox_lasso(x, {"w": 1.0})


def test_projections_on_pytrees_treat_the_tree_as_one_vector():
    x = _tree()
    flat = jnp.concatenate([x["b"], x["w"].ravel()])  # ravel_pytree orders keys: b, w
    for projection, hp in ((projection_l2_ball, 0.5), (projection_simplex, 1.5)):
        out = projection(x, hp)
        expected = projection(flat, hp)
        np.testing.assert_allclose(out["b"], expected[:4], atol=1e-14)
        np.testing.assert_allclose(out["w"].ravel(), expected[4:], atol=1e-14)
    np.testing.assert_allclose(
        projection_simplex(x, 1.5)["w"].ravel(),
        _bisection_simplex(np.asarray(flat), 1.5)[4:], atol=1e-12)
    bounds = ({"w": -0.2, "b": jnp.zeros(4)}, {"w": 0.2, "b": jnp.ones(4)})
    out = projection_box(x, bounds)
    np.testing.assert_allclose(out["w"], jnp.clip(x["w"], -0.2, 0.2))
    np.testing.assert_allclose(out["b"], jnp.clip(x["b"], 0.0, 1.0))


ALL_FUNCTIONS = [
    (prox.prox_none, None), (prox.prox_lasso, 0.3), (prox.prox_non_negative_lasso, 0.3),
    (prox.prox_ridge, 0.7), (prox.prox_non_negative_ridge, 0.7),
    (prox.prox_elastic_net, (0.3, 0.7)),
    (prox.projection_non_negative, None), (prox.projection_box, (-0.5, 0.5)),
    (prox.projection_l2_ball, 1.0), (prox.projection_simplex, 1.0),
]


@pytest.mark.parametrize("fun, hp", ALL_FUNCTIONS, ids=lambda f: getattr(f, "__name__", ""))
def test_jit_and_vmap_match_eager(fun, hp):
    X = jnp.asarray(np.random.default_rng(16).normal(size=(4, 3)))
    eager = np.stack([fun(row, hp) for row in X])
    np.testing.assert_allclose(jax.jit(fun)(X[0], hp), eager[0], atol=1e-14)
    np.testing.assert_allclose(jax.vmap(fun, in_axes=(0, None))(X, hp), eager, atol=1e-14)


def test_vmap_over_hyperparameters_and_grad_under_jit():
    x = jnp.asarray(np.random.default_rng(17).normal(size=6))
    l1s = jnp.linspace(0.1, 1.0, 5)
    batched = jax.vmap(prox_lasso, in_axes=(None, 0))(x, l1s)
    np.testing.assert_allclose(batched, np.stack([prox_lasso(x, l1) for l1 in l1s]))
    # d/dvalue of the simplex projection's first coordinate, batched over values, under jit.
    values = jnp.array([0.5, 1.0, 3.0])
    first_coordinate_grad = jax.grad(lambda v: prox.projection_simplex(x, v)[0])
    g = jax.jit(jax.vmap(first_coordinate_grad))(values)
    expected = [jax.jit(first_coordinate_grad)(v) for v in values]
    np.testing.assert_allclose(g, expected, atol=1e-14)


def test_docstring_examples():
    result = doctest.testmod(prox, extraglobs={"jnp": jnp})
    assert result.attempted > 10 and result.failed == 0
