"""L2-regularized logistic regression (binary or multinomial), λ tuned on validation log-loss.

Inner: ``min_{W,b} mean_w(CE(XW + b, y)) + ½ Σ_j λ_j ||W_j||²`` (intercept unpenalized;
``λ`` scalar or one per feature); hyperparameters ``theta = log λ``. This matches
scikit-learn's ``LogisticRegression(C=1/(nλ))``. ``X`` may be sparse
(:class:`~hyperopt.linop.SparseMatrix`): the objective, its gradient and the Hessian-vector
products of the implicit system only use ``X @ W`` and ``X.T @ G``.

**Per-feature penalties are preconditioned.** With one λ per feature the penalties spread
over decades during the search (1e-7…1e4), and the inner Hessian's condition number with
them: L-BFGS then stops at ``maxiter`` short of ``tol`` and the implicit CG needs thousands
of iterations (measured at 2,000 × 20,958: 500 L-BFGS iterations, 6,300 CG matrix-vector
products). So with ``per_feature`` the inner parameters are ``U = W / r`` with
``r_j = (λ_j + c)^{-1/2}``, ``c`` the mean over features of ``¼ Σ_i s_i X_ij² / Σ_i s_i``
(a bound on the data part of the Hessian's diagonal): the same problem and solution, with
the penalties' spread taken out of the Hessian's diagonal (a diagonal preconditioner of both
the inner solve and the implicit system; a per-feature ``c_j`` was tried and slowed uniform
λ down: 72 instead of 34 L-BFGS iterations). The readout (what predicts, the saved model)
is ``W = r U``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import linop
from hyperopt.problems.base import InnerSolver, L2Penalized, solver_class, weighted_mean
from hyperopt.solvers import LBFGS, GradientDescent

__all__ = ["Logistic", "cross_entropy"]


def cross_entropy(logits, y):
    """Per-sample cross-entropy; ``logits`` (n, 1) for binary labels, (n, K) for K classes."""
    if logits.shape[-1] == 1:
        z = logits[:, 0]
        return jnp.logaddexp(0.0, z) - y * z
    return jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]


def predict(logits):
    return (logits[:, 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else jnp.argmax(logits, -1)


def logits_of(params, X):
    return X @ params["W"] + params["b"]


def objective(params, l2reg, X, y, sw):
    penalty = 0.5 * jnp.sum(jnp.reshape(l2reg, (-1, 1)) * params["W"] ** 2)
    return weighted_mean(cross_entropy(logits_of(params, X), y), sw) + penalty


def curvature(X, sw):
    """``¼ Σ_i s_i X_ij² / Σ_i s_i``, shape ``(p,)``: a bound on the diagonal of the
    cross-entropy's Hessian in ``W`` (``σ' ≤ ¼``)."""
    return 0.25 * linop.column_sq_norms(X, sw) / jnp.sum(sw)


def _scale(l2reg, X, sw):
    """``r = (λ + mean_j c_j)^{-1/2}``, shape ``(p,)``."""
    return jax.lax.rsqrt(l2reg + jnp.mean(curvature(X, sw)))


def objective_scaled(params, l2reg_and_scale, X, y, sw):
    """:func:`objective` at ``W = r U`` (``params = {"W": U, "b": b}``, ``r`` given)."""
    l2reg, r = l2reg_and_scale
    return objective({"W": params["W"] * r[:, None], "b": params["b"]}, l2reg, X, y, sw)


@dataclasses.dataclass(frozen=True)
class Logistic(L2Penalized):
    """Logistic regression; ``per_feature=True`` learns one penalty per feature.

    Example:
      >>> inner = Logistic().inner_solver(LBFGS)
      >>> params = inner.run(Logistic().init_params(data), jnp.log(1e-2), X, y, w).params
    """

    name = "logistic"
    tasks = ("binary", "multiclass")
    init_l2reg: float | None = None
    init_ratio: float = 1e-2  # first λ: 1e-2 × the mean feature variance

    def init_params(self, data, n_samples: int | None = None):
        k = 1 if data.task == "binary" else data.n_classes
        dtype = data.X_train.dtype
        return jax.device_put({"W": np.zeros((data.n_features, k), dtype), "b": np.zeros(k, dtype)})

    def inner_solver(self, make_solver):
        if not issubclass(solver_class(make_solver), (GradientDescent, LBFGS)):
            raise self.unsupported_solver(make_solver, (GradientDescent, LBFGS))
        if self.per_feature:  # preconditioned: see the module docstring
            def args(theta, X, y, w):
                l2reg = jnp.exp(theta)
                return (l2reg, _scale(l2reg, X, w)), X, y, w
            return InnerSolver(make_solver(fun=objective_scaled), args)
        return InnerSolver(make_solver(fun=objective), lambda theta, X, y, w: (jnp.exp(theta), X, y, w))

    def readout(self, params, theta, X, y, w):
        """``{"W", "b"}``; with ``per_feature`` the inner ``U`` scaled back, ``W = r U``."""
        if not self.per_feature:
            return params
        return {"W": params["W"] * _scale(jnp.exp(theta), X, w)[:, None], "b": params["b"]}

    def outer_loss(self, params, theta, X, y, w):
        return weighted_mean(cross_entropy(logits_of(params, X), y), w)

    def metrics(self, params, theta, X, y):
        logits = logits_of(params, X)
        return {"loss": jnp.mean(cross_entropy(logits, y)),
                "accuracy": jnp.mean((predict(logits) == y).astype(logits.dtype))}
