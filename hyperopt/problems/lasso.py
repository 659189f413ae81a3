"""Lasso / elastic net: the l1 penalty (scalar or per feature) tuned on validation MSE.

Inner: ``min_{w,b} ½ mean_s((Xw + b - y)²) + Σ_j λ_j |w_j| (+ ½ μ ||w||²)`` with sample
weights ``s`` and, with ``fit_intercept`` (default, as scikit-learn), an unpenalized
intercept ``b`` (the problem is solved on data centred with the weights, implicitly:
``b = ȳ - x̄ᵀw`` is the readout's, and the inner parameters are ``w`` alone).
Hyperparameters ``theta = {"l1reg": log λ}`` (and ``"l2reg": log μ`` for the elastic net).

Solvers: :class:`~hyperopt.CoordinateDescent` (default: working sets, duality gap, the
hypergradient on the support), :class:`~hyperopt.ProximalGradient` or
:class:`~hyperopt.BlockCoordinateDescent` (hypergradient through the proximal fixed point).

**Where the search starts.** ``λ_max = ||X_cᵀ y_c||_∞ / n`` on the training split is the
smallest penalty whose solution is all zero; there the outer loss is flat and the
hypergradient exactly zero. The default start is ``init_ratio · λ_max`` (0.1, data
relative); an absolute ``init_l1reg`` at or above ``λ_max`` is refused.

Proximal gradient takes a sparse ``X`` (:class:`~hyperopt.linop.SparseMatrix`); block
coordinate descent and coordinate descent need a dense one (their blocks are columns of ``X``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import linop, prox
from hyperopt.problems.base import (
    InnerSolver,
    InterceptReadout,
    Problem,
    check_dense,
    solver_class,
    weighted_mean,
)
from hyperopt.solvers import (
    BlockCoordinateDescent,
    CompositeLinearFunction,
    CoordinateDescent,
    ProximalGradient,
)

__all__ = ["Lasso", "lambda_max"]


def _centred(r, sw):
    return r - weighted_mean(r, sw)


def least_squares(w, X, y, sw):
    return 0.5 * weighted_mean((X @ w - y) ** 2, sw)


def least_squares_centred(w, X, y, sw):
    """The least squares with the optimal intercept profiled out."""
    return 0.5 * weighted_mean(_centred(X @ w - y, sw) ** 2, sw)


def _dense_design(X, y, sw):
    check_dense(X, "lasso", "BlockCoordinateDescent (solver=block_cd)", "solver=proximal_gradient")
    return X.T


def _composite(fit_intercept: bool) -> CompositeLinearFunction:
    if fit_intercept:
        subfun = lambda z, X, y, sw: 0.5 * weighted_mean(_centred(z - y, sw) ** 2, sw)
    else:
        subfun = lambda z, X, y, sw: 0.5 * weighted_mean((z - y) ** 2, sw)
    # centring is a projection in the weighted norm: it does not raise the Lipschitz constant
    return CompositeLinearFunction(subfun=subfun, design=_dense_design,
                                   subfun_lipschitz=lambda X, y, sw: jnp.max(sw) / jnp.sum(sw))


LEAST_SQUARES = _composite(False)


def lambda_max(X, y, sample_weight=None, fit_intercept: bool = True) -> np.ndarray:
    """``|X_cᵀ W y_c| / Σ s`` per feature (its max is the lasso's λ_max): a penalty ``λ_j``
    at or above entry ``j`` for every ``j`` gives the all-zero solution.

    Example:
      >>> float(np.max(lambda_max(data.X_train, data.y_train)))   # the lasso's λ_max
    """
    y = np.asarray(y, np.float64)
    sw = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
    n = sw.sum()
    if fit_intercept:
        y = y - sw @ y / n
    # on the host: no small XLA programs to compile at the start of every run
    corr = (X.to_scipy().T @ (sw * y)) if linop.is_sparse(X) else np.asarray(X).T @ (sw * y)
    return np.abs(corr) / n  # X_cᵀ W y_c = Xᵀ W y_c since Σ s y_c = 0


@dataclasses.dataclass(frozen=True)
class Lasso(InterceptReadout, Problem):
    """Lasso (``elastic_net=False``) or elastic net; ``per_feature`` for a weighted lasso.

    Attributes:
      init_ratio: the first λ is ``init_ratio · λ_max`` of the training split.
      init_l1reg: an absolute first λ instead (must be below ``λ_max``).
      init_l2reg: the elastic net's first μ.
      fit_intercept: an unpenalized intercept (the model is ``{"coef", "intercept"}``).
      path_per_decade: λ per decade of :meth:`path_grid` (``fit``'s ``start="path"``).

    The outer stopping rule's ``xtol`` left to the problem is ``1e-2`` here (λ known to
    1 %; 1e-3 elsewhere): the validation loss of a lasso is only piecewise smooth — it has
    a kink wherever the support changes, and its minimum often sits on one, where the
    hypergradient jumps instead of vanishing and quasi-Newton updates hover around 1e-3
    instead of shrinking (measured: 5 more outer steps for a change of the CV loss below
    1e-6 relative). scikit-learn's ``LassoCV`` grid is 7 % apart.

    Example:
      >>> problem = Lasso()
      >>> inner = problem.inner_solver(CoordinateDescent)
      >>> w = inner.run(jnp.zeros(p), problem.init_hparams(data), X, y, jnp.ones(n)).params
    """

    name = "lasso"
    tasks = ("regression",)
    stop_xtol = 1e-2
    per_feature: bool = False
    elastic_net: bool = False
    init_ratio: float = 0.1
    init_l1reg: float | None = None
    init_l2reg: float = 0.1
    fit_intercept: bool = True
    path_per_decade: int = 10

    def __post_init__(self):
        if not 0 < self.init_ratio < 1:
            raise ValueError(f"init_ratio={self.init_ratio!r}; allowed: a number in (0, 1) "
                             "(the first λ is init_ratio × λ_max)")
        if self.init_l1reg is not None and not self.init_l1reg > 0:
            raise ValueError(f"init_l1reg={self.init_l1reg!r}; allowed: a positive number or null")

    def lambda_max(self, data) -> float:
        """λ_max of the training split (the smallest λ with an all-zero solution)."""
        return float(np.max(lambda_max(data.X_train, data.y_train, fit_intercept=self.fit_intercept)))

    def init_hparams(self, data):
        shape = (data.n_features,) if self.per_feature else ()
        dtype = data.X_train.dtype
        lam_max = self.lambda_max(data)
        if self.init_l1reg is None:
            l1 = self.init_ratio * lam_max
        elif self.init_l1reg >= lam_max:
            raise ValueError(
                f"init_l1reg={self.init_l1reg:g} is at or above lambda_max={lam_max:.4g} of the "
                "training split: the lasso solution is all zero and the hypergradient exactly zero, "
                "so the penalty could never move; allowed: below lambda_max (or leave init_l1reg "
                f"null to start at init_ratio={self.init_ratio:g} x lambda_max)")
        else:
            l1 = self.init_l1reg
        # device_put of host arrays: no XLA program to compile at the start of a run
        theta = {"l1reg": jax.device_put(np.full(shape, np.log(l1), dtype))}
        if self.elastic_net:
            theta["l2reg"] = jax.device_put(np.asarray(np.log(self.init_l2reg), dtype))
        return theta

    def path_grid(self, data, eps: float = 1e-3):
        """λ = λ_max · 10^(-k/path_per_decade) for k = 1, 2, ... down to ``eps · λ_max`` (the
        range of scikit-learn's ``LassoCV`` grid), every feature alike; the elastic net's μ
        stays at ``init_l2reg``. ``None`` when ``init_l1reg`` gives an explicit start.

        Example:
          >>> [float(np.exp(t["l1reg"])) for t in Lasso().path_grid(data)][:2]   # 0.79, 0.63 λ_max
        """
        if self.init_l1reg is not None:
            return None
        shape = (data.n_features,) if self.per_feature else ()
        dtype = data.X_train.dtype
        lam_max = self.lambda_max(data)
        per_decade = self.path_per_decade
        count = int(round(per_decade * np.log10(1 / eps)))
        grid = []
        for k in range(1, count + 1):
            log_lam = np.log(lam_max) - k * np.log(10) / per_decade
            theta = {"l1reg": jax.device_put(np.full(shape, log_lam, dtype))}
            if self.elastic_net:
                theta["l2reg"] = jax.device_put(np.asarray(np.log(self.init_l2reg), dtype))
            grid.append(theta)
        return grid

    def hparams(self, theta):
        return {k: jnp.exp(v) for k, v in theta.items()}

    def init_params(self, data, n_samples: int | None = None):
        return jax.device_put(np.zeros(data.n_features, data.X_train.dtype))

    def _penalties(self, theta):
        """``λ`` (lasso) or ``(λ, μ)`` of the penalty ``λ|w| + ½ μ w²``: CoordinateDescent's
        hyperparameters."""
        hp = self.hparams(theta)
        if not self.elastic_net:
            return hp["l1reg"]
        l1reg = hp["l1reg"]
        return (l1reg, jnp.broadcast_to(hp["l2reg"], jnp.shape(l1reg)))

    def _prox_hparams(self, theta):
        """The same penalty as :meth:`_penalties` in ``prox_elastic_net``'s terms: it
        penalizes ``a (|w| + ½ b w²)`` (JAXopt's definition), so ``(a, b) = (λ, μ / λ)``."""
        if not self.elastic_net:
            return self._penalties(theta)
        l1reg, l2reg = self._penalties(theta)
        return (l1reg, l2reg / l1reg)

    def inner_solver(self, make_solver):
        cls = solver_class(make_solver)
        prox_fn = prox.prox_elastic_net if self.elastic_net else prox.prox_lasso
        if issubclass(cls, CoordinateDescent):  # takes (λ, μ) itself, not the prox's (a, b)
            solver = make_solver(fit_intercept=self.fit_intercept)
            return InnerSolver(solver, lambda theta, X, y, w: (self._penalties(theta), X, y, w))
        elif issubclass(cls, BlockCoordinateDescent):
            solver = make_solver(fun=_composite(self.fit_intercept), block_prox=prox_fn,
                                 block_hyperparams=self.per_feature)
        elif cls is ProximalGradient:  # not its subclasses (GradientDescent ignores the prox)
            fun = least_squares_centred if self.fit_intercept else least_squares
            solver = make_solver(fun=fun, prox=prox_fn)
        else:
            raise self.unsupported_solver(make_solver, (CoordinateDescent, ProximalGradient,
                                                        BlockCoordinateDescent))
        return InnerSolver(solver, lambda theta, X, y, w: (self._prox_hparams(theta), X, y, w))


    def outer_loss(self, params, theta, X, y, w):
        return weighted_mean((self._predict(params, X) - y) ** 2, w)

    def metrics(self, params, theta, X, y):
        mse = jnp.mean((self._predict(params, X) - y) ** 2)
        coef = params["coef"] if isinstance(params, dict) else params
        return {"loss": mse, "r2": 1 - mse / jnp.var(y),
                "nonzeros": jnp.sum(jnp.abs(coef) > 0).astype(coef.dtype)}
