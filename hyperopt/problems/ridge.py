"""Ridge regression: λ (scalar or one per feature) tuned on validation MSE.

Inner: ``min_w ½ mean_w((Xw + b - y)²) + ½ Σ_j λ_j w_j²`` (weighted by sample weights;
with ``fit_intercept`` an unpenalized intercept ``b``, profiled out: the objective is
taken on data centred with the weights, implicitly, and ``b = ȳ - x̄ᵀw`` is the readout's,
as scikit-learn's ``Ridge(fit_intercept=True)``); hyperparameters ``theta = log λ``.
Solvers: :class:`~hyperopt.GradientDescent`, :class:`~hyperopt.LBFGS` or the exact
Cholesky solve (:class:`RidgeCholesky`, dense ``X``
only: it forms the ``p × p`` Gram matrix). The iterative solvers take a sparse ``X``
(:class:`~hyperopt.linop.SparseMatrix`): they and the implicit system only use ``X @ v``
and ``X.T @ u``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt.problems.base import (
    InnerSolver,
    InterceptReadout,
    L2Penalized,
    check_dense,
    solver_class,
    weighted_mean,
)
from hyperopt.solvers import LBFGS, ClosedForm, GradientDescent

__all__ = ["Ridge", "RidgeCholesky"]


def _centred(r, sw):
    return r - weighted_mean(r, sw)


def objective(w, l2reg, X, y, sw):
    return 0.5 * weighted_mean((X @ w - y) ** 2, sw) + 0.5 * jnp.sum(l2reg * w ** 2)


def objective_centred(w, l2reg, X, y, sw):
    return 0.5 * weighted_mean(_centred(X @ w - y, sw) ** 2, sw) + 0.5 * jnp.sum(l2reg * w ** 2)


def gradient(w, l2reg, X, y, sw):
    return X.T @ (sw * (X @ w - y)) / jnp.sum(sw) + l2reg * w


def gradient_centred(w, l2reg, X, y, sw):
    return X.T @ (sw * _centred(X @ w - y, sw)) / jnp.sum(sw) + l2reg * w


def cholesky(l2reg, X, y, sw):
    check_dense(X, "ridge", "RidgeCholesky (solver=cholesky)",
                "solver=lbfgs or solver=gradient_descent")
    n_eff = jnp.sum(sw)
    H = (X.T * sw) @ X / n_eff + jnp.diag(jnp.broadcast_to(l2reg, (X.shape[1],)))
    L = jnp.linalg.cholesky(H)
    z = jnp.linalg.solve(L, X.T @ (sw * y) / n_eff)
    return jnp.linalg.solve(L.T, z)


def cholesky_centred(l2reg, X, y, sw):
    n_eff = jnp.sum(sw)
    return cholesky(l2reg, X - (sw @ X) / n_eff, y - jnp.sum(sw * y) / n_eff, sw)


@dataclasses.dataclass(eq=False, frozen=True)
class RidgeCholesky(ClosedForm):
    """Exact ridge solution by a Cholesky factorization (a solver option for ridge)."""

    solve: Callable = cholesky
    optimality: Callable = gradient


@dataclasses.dataclass(frozen=True)
class Ridge(InterceptReadout, L2Penalized):
    """Ridge regression with a scalar or per-feature (``per_feature=True``) penalty.

    Example:
      >>> problem = Ridge()
      >>> inner = problem.inner_solver(functools.partial(LBFGS, tol=1e-10))
      >>> w = inner.run(problem.init_params(data), theta, X, y, jnp.ones(len(y))).params
    """

    name = "ridge"
    tasks = ("regression",)
    init_l2reg: float | None = None
    init_ratio: float = 1.0  # first λ: the mean feature variance
    fit_intercept: bool = False

    def init_params(self, data, n_samples: int | None = None):
        return jax.device_put(np.zeros(data.n_features, data.X_train.dtype))

    def inner_solver(self, make_solver):
        cls = solver_class(make_solver)
        if not issubclass(cls, (GradientDescent, LBFGS, ClosedForm)):
            raise self.unsupported_solver(make_solver, (GradientDescent, LBFGS, ClosedForm))
        if issubclass(cls, RidgeCholesky) and self.fit_intercept:
            solver = make_solver(solve=cholesky_centred, optimality=gradient_centred)
        elif issubclass(cls, ClosedForm):
            if self.fit_intercept:
                raise ValueError(f"problem 'ridge' with fit_intercept=True cannot use solver "
                                 f"{cls.__name__}; allowed: RidgeCholesky, LBFGS, GradientDescent")
            solver = make_solver()
        else:
            solver = make_solver(fun=objective_centred if self.fit_intercept else objective)
        return InnerSolver(solver, lambda theta, X, y, w: (jnp.exp(theta), X, y, w))


    def outer_loss(self, params, theta, X, y, w):
        return weighted_mean((self._predict(params, X) - y) ** 2, w)

    def metrics(self, params, theta, X, y):
        mse = jnp.mean((self._predict(params, X) - y) ** 2)
        return {"loss": mse, "r2": 1 - mse / jnp.var(y)}
