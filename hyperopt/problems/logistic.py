"""L2-regularized logistic regression (binary or multinomial), λ tuned on validation log-loss.

Inner: ``min_{W,b} mean_w(CE(XW + b, y)) + ½ Σ_j λ_j ||W_j||²`` (intercept unpenalized;
``λ`` scalar or one per feature); hyperparameters ``theta = log λ``. This matches
scikit-learn's ``LogisticRegression(C=1/(nλ))``. ``X`` may be sparse
(:class:`~hyperopt.linop.SparseMatrix`): the objective, its gradient and the Hessian-vector
products of the implicit system only use ``X @ W`` and ``X.T @ G``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import linop
from hyperopt.problems.base import InnerSolver, L2Penalized, solver_class, weighted_mean
from hyperopt.solvers import LBFGS, GradientDescent

__all__ = ["Logistic", "cross_entropy", "hessian_diagonal"]


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


def hessian_diagonal(params, l2reg, X, y, sw):
    """``diag ∇²`` of :func:`objective` at ``params``: ``Σ_i w̃_i p_ik(1 - p_ik) X_ij² + λ_j``
    for ``W`` (``w̃ = sw / Σ sw``; binary: ``p = σ(z)``, else the softmax) and
    ``Σ_i w̃_i p_ik(1 - p_ik)`` for ``b``; shapes of ``params``. ``X`` dense or sparse (its
    squared values, same sparsity): one pass over the non-zeros; dense: one fused pass over
    ``X`` per class, no squared copy of ``X`` (:func:`hyperopt.linop.column_sq_norms`).

    Example:
      >>> d = hessian_diagonal({"W": jnp.zeros((3, 1)), "b": jnp.zeros(1)}, 0.1, X, y, sw)
      >>> d["W"].shape, d["b"].shape
      ((3, 1), (1,))
    """
    logits = logits_of(params, X)
    prob = jax.nn.sigmoid(logits) if logits.shape[-1] == 1 else jax.nn.softmax(logits, axis=-1)
    d = prob * (1 - prob) * (sw / jnp.sum(sw))[:, None]  # (n, K)
    return {"W": linop.column_sq_norms(X, d) + jnp.reshape(l2reg, (-1, 1)), "b": jnp.sum(d, axis=0)}


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
    precondition: bool = True  # Hessian-diagonal preconditioning (inner L-BFGS, implicit CG)

    def init_params(self, data, n_samples: int | None = None):
        k = 1 if data.task == "binary" else data.n_classes
        dtype = data.X_train.dtype
        return jax.device_put({"W": np.zeros((data.n_features, k), dtype), "b": np.zeros(k, dtype)})

    def inner_solver(self, make_solver):
        if not issubclass(solver_class(make_solver), (GradientDescent, LBFGS)):
            raise self.unsupported_solver(make_solver, (GradientDescent, LBFGS))
        extra = ({"precondition": hessian_diagonal}
                 if self.precondition and issubclass(solver_class(make_solver), LBFGS) else {})
        return InnerSolver(make_solver(fun=objective, **extra),
                           lambda theta, X, y, w: (jnp.exp(theta), X, y, w))

    def hessian_diagonal(self, params, theta, X, y, w):
        """The inner objective's Hessian diagonal (:func:`hessian_diagonal`) at ``λ = exp θ``;
        ``None`` with ``precondition=False``."""
        return hessian_diagonal(params, jnp.exp(theta), X, y, w) if self.precondition else None

    def outer_loss(self, params, theta, X, y, w):
        return weighted_mean(cross_entropy(logits_of(params, X), y), w)

    def metrics(self, params, theta, X, y):
        logits = logits_of(params, X)
        return {"loss": jnp.mean(cross_entropy(logits, y)),
                "accuracy": jnp.mean((predict(logits) == y).astype(logits.dtype))}
