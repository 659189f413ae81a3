"""Lasso / elastic net: the l1 penalty (scalar or per feature) tuned on validation MSE.

Inner: ``min_w ½ mean_w((Xw - y)²) + Σ_j λ_j |w_j| (+ ½ μ ||w||²)``, a non-smooth problem
whose hypergradient goes through the proximal fixed point. Hyperparameters
``theta = {"l1reg": log λ}`` (and ``"l2reg": log μ`` for the elastic net). Solvers:
:class:`~hyperopt.ProximalGradient` or :class:`~hyperopt.BlockCoordinateDescent`.
Proximal gradient takes a sparse ``X`` (:class:`~hyperopt.linop.SparseMatrix`); block
coordinate descent needs a dense one (its blocks are columns of ``X``).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from hyperopt import prox
from hyperopt.problems.base import InnerSolver, Problem, check_dense, solver_class, weighted_mean
from hyperopt.solvers import BlockCoordinateDescent, CompositeLinearFunction, ProximalGradient

__all__ = ["Lasso"]


def least_squares(w, X, y, sw):
    return 0.5 * weighted_mean((X @ w - y) ** 2, sw)


def _dense_design(X, y, sw):
    check_dense(X, "lasso", "BlockCoordinateDescent (solver=block_cd)", "solver=proximal_gradient")
    return X.T


LEAST_SQUARES = CompositeLinearFunction(
    subfun=lambda z, X, y, sw: 0.5 * weighted_mean((z - y) ** 2, sw),
    design=_dense_design,
    subfun_lipschitz=lambda X, y, sw: jnp.max(sw) / jnp.sum(sw))


@dataclasses.dataclass(frozen=True)
class Lasso(Problem):
    """Lasso (``elastic_net=False``) or elastic net; ``per_feature`` for a weighted lasso.

    Example:
      >>> inner = Lasso().inner_solver(ProximalGradient)
      >>> w = inner.run(jnp.zeros(p), {"l1reg": jnp.log(0.1)}, X, y, jnp.ones(n)).params
    """

    name = "lasso"
    tasks = ("regression",)
    per_feature: bool = False
    elastic_net: bool = False
    init_l1reg: float = 0.1
    init_l2reg: float = 0.1

    def init_hparams(self, data):
        shape = (data.n_features,) if self.per_feature else ()
        dtype = data.X_train.dtype
        theta = {"l1reg": jnp.full(shape, jnp.log(self.init_l1reg), dtype)}
        if self.elastic_net:
            theta["l2reg"] = jnp.asarray(jnp.log(self.init_l2reg), dtype)
        return theta

    def hparams(self, theta):
        return {k: jnp.exp(v) for k, v in theta.items()}

    def init_params(self, data, n_samples: int | None = None):
        return jnp.zeros(data.n_features, data.X_train.dtype)

    def _prox_hparams(self, theta):
        hp = self.hparams(theta)
        if not self.elastic_net:
            return hp["l1reg"]
        return (hp["l1reg"], jnp.broadcast_to(hp["l2reg"], jnp.shape(hp["l1reg"])))

    def inner_solver(self, make_solver):
        cls = solver_class(make_solver)
        prox_fn = prox.prox_elastic_net if self.elastic_net else prox.prox_lasso
        if issubclass(cls, BlockCoordinateDescent):
            solver = make_solver(fun=LEAST_SQUARES, block_prox=prox_fn,
                                 block_hyperparams=self.per_feature)
        elif cls is ProximalGradient:  # not its subclasses (GradientDescent ignores the prox)
            solver = make_solver(fun=least_squares, prox=prox_fn)
        else:
            raise self.unsupported_solver(make_solver, (ProximalGradient, BlockCoordinateDescent))
        return InnerSolver(solver, lambda theta, X, y, w: (self._prox_hparams(theta), X, y, w))

    def outer_loss(self, params, theta, X, y, w):
        return weighted_mean((X @ params - y) ** 2, w)

    def metrics(self, params, theta, X, y):
        mse = jnp.mean((X @ params - y) ** 2)
        return {"loss": mse, "r2": 1 - mse / jnp.var(y),
                "nonzeros": jnp.sum(jnp.abs(params) > 0).astype(params.dtype)}
