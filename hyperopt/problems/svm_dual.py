"""Multiclass (Crammer–Singer) linear SVM solved in the dual; λ tuned on validation data.

Primal, with sample weights ``w_i >= 0``, one-hot labels ``Y`` (n, K), ``W`` (d, K) and
``Δ_ik = 1 - Y_ik``::

    P(W) = λ/2 ||W||²_F + Σ_i w_i max_k (Δ_ik + x_iᵀW_k - x_iᵀW_{y_i}).

Writing ``max_k a_k = max_{β_i ∈ simplex} <β_i, a>`` and using ``Σ_k β_ik = 1`` gives the
saddle function ``Σ_i w_i <β_i, Δ_i> + <W, Xᵀ diag(w)(β - Y)> + λ/2 ||W||²``; minimizing
in ``W`` gives ``W = Xwᵀ(Y - β)/λ`` with ``Xw = diag(w) X`` (``readout``), and the dual

    D(β) = Σ_i w_i (1 - <β_i, Y_i>) - 1/(2λ) ||Xwᵀ(Y - β)||²_F,   β_i ∈ simplex,

so the inner problem is ``min_β f(β) = 1/(2λ) ||Xwᵀ(Y - β)||²_F + Σ_i w_i <β_i, Y_i>``
(JAXopt's ``multiclass_linear_svm_dual`` when ``w = 1``; ``P(W(β)) - D(β)`` is the
duality gap, :func:`duality_gap`). scikit-learn's
``LinearSVC(multi_class="crammer_singer", fit_intercept=False)`` minimizes
``½||W||² + C Σ_i ξ_i``, i.e. ``P/λ``: the same solution with ``C = 1/λ`` (the hinge is
summed, not averaged, as in JAXopt; there is no intercept, features are standardized).

A sample of weight 0 has a zero row in ``Xw``, so it cannot move ``W``. Its ``β_i`` would
then be arbitrary, which makes the implicit linear system singular; its linear
coefficient is therefore negative (-1 for BCD; -1/η for the scaled objective below, so
that one unit step reaches the vertex), which pins ``β_i`` to the vertex ``Y_i``, strictly
inside the region where the projection is constant (its block of the Jacobian is ``-I``).

Hyperparameter ``theta = log λ``. Solvers:

* :class:`~hyperopt.BlockCoordinateDescent` (default): block ``i`` is row ``i`` of β,
  paired with row ``i`` of ``Xw``; ``subfun(z) = 1/(2λ) ||XwᵀY - z||²`` with Lipschitz
  constant ``1/λ`` (JAXopt omits the 1/λ, so its BCD stalls when λ ≠ 1); the linear term
  ``Σ_i coef_i <β_i, Y_i>`` is folded into the block prox ``P(x - η coef_i Y_i)`` (exact),
  whose per-row hyperparameters are ``(y_i, coef_i)``.
* :class:`~hyperopt.ProjectedGradient` (row-wise simplex projection) and
  :class:`~hyperopt.MirrorDescent` (entropic) see the objective scaled by
  ``η = λ/||Xw||₂²`` (not differentiated), so their unit step is the safe step ``1/L``:
  ``stepsize`` options are in units of ``1/L``. Scaling does not change the solution, nor,
  at a solution, the implicit derivative (the scaled gradient is orthogonal to the
  projection's tangent space there). Mirror descent is slow here: rows that end on a
  vertex approach it only geometrically in the gradient gaps (wine: ~90k steps at 1/L,
  ~30k at 3/L to tol 1e-8, against ~250 epochs of BCD); its implicit hypergradient is
  exact once it has converged, its unrolled one is not (5% off after 3000 steps).

Sparse ``X`` (:class:`~hyperopt.linop.SparseMatrix`): projected gradient and mirror
descent take it (``Xw`` is ``X`` with its values rescaled, and ``||Xw||₂`` comes from
power iteration); block coordinate descent needs a dense ``X`` (its blocks are rows of
``Xw``) and says so.

``K`` is read from the shape of β (or of ``Xwᵀβ``) wherever it is needed, so the problem
object needs no knowledge of the data.

Where the training data are separable, every λ below some threshold gives the same
hard-margin ``W`` (``Y - β`` scales with λ), so the outer loss is flat there and its
hypergradient exactly zero (wine: λ <= 1). Start from a larger λ (``init_l2reg``, 10 by
default; the hinge is summed, so the useful λ grows with n).

The fixed-point residual that the solvers stop on is measured in β, while
``W = Xwᵀ(Y - β)/λ``: W's relative error grows like ``tol/λ`` (wine, λ = 0.01: 1e-4 at
the default tol 1e-8, 1e-8 at tol 1e-12; digits, λ = 1: hypergradient error 6e-6 at tol
1e-8, 3e-7 at 1e-10). Tighten ``tol`` for small λ. In float32 the default tol (1e-4)
suffices for BCD, but projected gradient may not have identified the active set yet
(wine with a fold mask: hypergradient 36% off); use ``tol=1e-5`` there.

Outer loss: the cross-entropy of the primal scores ``X_val W``. It is smooth in W, unlike
the validation hinge or the accuracy (piecewise linear / constant), and penalizes
confident mistakes; since SVM scores are not probabilities it measures calibration as
well, which favours a λ that keeps the score scale sensible. Metrics: that cross-entropy
(``loss``) and ``accuracy``.

Contract with the outer loop: the inner parameters are the dual β (n_train, K); the loop
calls ``readout(β, theta, X_train, y_train, w_train)`` and passes the primal ``W`` to
:meth:`SVMDual.outer_loss` and :meth:`SVMDual.metrics`. β has one row per sample of the
inner split, so for cross-validation (inner split = train ∪ val) the initial β must have
that many rows: :meth:`SVMDual.init_params` takes ``n_samples``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import linop, prox
from hyperopt.problems.base import InnerSolver, Problem, check_dense, solver_class, weighted_mean
from hyperopt.problems.logistic import cross_entropy
from hyperopt.solvers import (
    BlockCoordinateDescent,
    CompositeLinearFunction,
    MirrorDescent,
    ProjectedGradient,
)

__all__ = ["SVMDual", "dual_objective", "duality_gap", "primal_objective", "primal_weights",
           "row_simplex_projection"]


def _one_hot(y, like):
    """One-hot labels with as many classes as ``like`` has columns."""
    return jax.nn.one_hot(y, like.shape[-1], dtype=like.dtype)


def _weighted_design(X, w):
    """``diag(w) X``, dense or sparse as ``X``."""
    return linop.scale_rows(X, w)


def _lipschitz_step(Xw, lam):
    """``1/L`` for ``L = ||Xw||₂²/λ``, the Lipschitz constant of ``∇f`` (not differentiated),
    with ``||Xw||₂`` from power iteration (:func:`hyperopt.linop.spectral_norm`: matrix
    products only, no SVD)."""
    return jax.lax.stop_gradient(lam / jnp.maximum(linop.spectral_norm(Xw) ** 2, 1e-30))


def _dense_rows(Xw, y, lam):
    check_dense(Xw, "svm_dual", "BlockCoordinateDescent (solver=block_cd)",
                "solver=projected_gradient or solver=mirror_descent")
    return Xw


def _linear_coef(w, pin):
    """Per-row coefficient of ``<β_i, Y_i>``: ``w_i``, or ``-pin`` to pin a weight-0 row at ``Y_i``."""
    return jnp.where(w > 0, w, -pin)


def primal_weights(beta, Xw, y, lam):
    """``W = Xwᵀ(Y - β)/λ``, shape (d, K)."""
    return Xw.T @ (_one_hot(y, beta) - beta) / lam


def dual_objective(beta, Xw, y, coef, lam):
    """``1/(2λ) ||Xwᵀ(Y - β)||² + Σ_i coef_i <β_i, Y_i>`` (the inner objective; β rows on simplices)."""
    V = Xw.T @ (_one_hot(y, beta) - beta)
    return 0.5 / lam * jnp.sum(V ** 2) + jnp.sum(coef * jnp.sum(beta * _one_hot(y, beta), axis=1))


def _scaled_dual_objective(beta, Xw, y, coef, lam, step):
    return step * dual_objective(beta, Xw, y, coef, lam)


def primal_objective(W, lam, X, y, w):
    """``λ/2 ||W||² + Σ_i w_i max_k (Δ_ik + x_iᵀW_k - x_iᵀW_{y_i})``."""
    scores = X @ W
    Y = _one_hot(y, scores)
    margins = 1 - Y + scores - jnp.sum(scores * Y, axis=1, keepdims=True)
    return 0.5 * lam * jnp.sum(W ** 2) + jnp.sum(w * jnp.max(margins, axis=1))


def duality_gap(beta, lam, X, y, w):
    """``P(W(β)) - D(β) >= 0``; zero exactly at the solution."""
    Xw = _weighted_design(X, w)
    Y = _one_hot(y, beta)
    V = Xw.T @ (Y - beta)
    dual = jnp.sum(w * (1 - jnp.sum(beta * Y, axis=1))) - 0.5 / lam * jnp.sum(V ** 2)
    return primal_objective(V / lam, lam, X, y, w) - dual


def row_simplex_projection(x, hyperparams=None):
    """Projects each row of ``x`` (n, K) onto the simplex.

    The projection is invariant to adding a constant to a row; subtracting the row's
    maximum first keeps it exact for huge entries (block steps of ``1/||x_i||²`` are huge
    when a row of the design is zero).
    """
    return jax.vmap(prox.projection_simplex)(x - jnp.max(x, axis=-1, keepdims=True))


def _block_prox(x, hyperparams, scaling=1.0):
    """Prox of ``coef <β_i, Y_i> + indicator(simplex)`` for one row: ``P(x - scaling coef Y_i)``."""
    label, coef = hyperparams
    x = x - scaling * coef * _one_hot(label, x)
    return prox.projection_simplex(x - jnp.max(x))


# Block i = row i of β, paired with row i of Xw. The linear term lives in the block prox
# (its coefficients are per-row hyperparameters) because only there, and in subfun, is an
# array with K columns at hand. XLA hoists the loop-invariant XwᵀY out of the block loop.
DUAL_SMOOTH_PART = CompositeLinearFunction(
    subfun=lambda z, Xw, y, lam: 0.5 / lam * jnp.sum((Xw.T @ _one_hot(y, z) - z) ** 2),
    design=_dense_rows,
    subfun_lipschitz=lambda Xw, y, lam: 1.0 / lam)


@dataclasses.dataclass(frozen=True)
class SVMDual(Problem):
    """Crammer–Singer linear SVM in the dual, ``theta = log λ``.

    The inner parameters are β (n_train, K); apply :meth:`readout` before
    :meth:`outer_loss` / :meth:`metrics`.

    Example:
      >>> problem = SVMDual()
      >>> inner = problem.inner_solver(BlockCoordinateDescent)
      >>> beta = inner.run(problem.init_params(data), jnp.log(1.0), X, y, w).params
      >>> W = problem.readout(beta, jnp.log(1.0), X, y, w)          # (d, K)
      >>> problem.metrics(W, jnp.log(1.0), X_val, y_val)["accuracy"]
    """

    name = "svm_dual"
    tasks = ("binary", "multiclass")
    init_l2reg: float = 10.0

    def init_hparams(self, data):
        return jax.device_put(np.asarray(np.log(self.init_l2reg), data.X_train.dtype))

    def hparams(self, theta):
        return {"l2reg": jnp.exp(theta)}

    def init_params(self, data, n_samples: int | None = None):
        """Uniform rows (strictly inside the simplices, as mirror descent needs), one per
        training sample, or ``n_samples`` rows (e.g. train ∪ val for cross-validation)."""
        k = data.n_classes
        n = data.n_train if n_samples is None else n_samples
        return jax.device_put(np.full((n, k), 1.0 / k, data.X_train.dtype))

    def inner_solver(self, make_solver):
        cls = solver_class(make_solver)
        if issubclass(cls, BlockCoordinateDescent):
            solver = make_solver(fun=DUAL_SMOOTH_PART, block_prox=_block_prox, block_hyperparams=True)

            def args(theta, X, y, w):
                return (y, _linear_coef(w, 1.0)), _weighted_design(X, w), y, jnp.exp(theta)
        elif issubclass(cls, (ProjectedGradient, MirrorDescent)):
            if issubclass(cls, ProjectedGradient):
                solver = make_solver(fun=_scaled_dual_objective, projection=row_simplex_projection)
            else:
                solver = make_solver(fun=_scaled_dual_objective)

            def args(theta, X, y, w):
                Xw, lam = _weighted_design(X, w), jnp.exp(theta)
                step = _lipschitz_step(Xw, lam)
                out = (Xw, y, _linear_coef(w, 1.0 / step), lam, step)
                return out if issubclass(cls, MirrorDescent) else (None, *out)
        else:
            raise self.unsupported_solver(
                make_solver, (BlockCoordinateDescent, ProjectedGradient, MirrorDescent))
        return InnerSolver(solver, args)

    def readout(self, params, theta, X, y, w):
        """Primal weights ``W = Xwᵀ(Y - β)/λ`` (d, K) from the dual ``params`` β."""
        return primal_weights(params, _weighted_design(X, w), y, jnp.exp(theta))

    def outer_loss(self, params, theta, X, y, w):
        """Weighted cross-entropy of the scores ``X W``; ``params`` is ``W`` from :meth:`readout`."""
        return weighted_mean(cross_entropy(X @ params, y), w)

    def metrics(self, params, theta, X, y):
        scores = X @ params
        return {"loss": jnp.mean(cross_entropy(scores, y)),
                "accuracy": jnp.mean(jnp.argmax(scores, axis=-1) == y)}
