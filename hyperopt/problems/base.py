"""What a bilevel problem provides to the outer loop.

A problem couples an inner training problem, solved by an iterative solver, with an
outer (validation) loss. Hyperparameters ``theta`` are a pytree in an unconstrained
parameterization (e.g. ``log λ``) so that any optax optimizer can update them.

Every split is passed as ``(X, y, w)`` with per-sample weights ``w`` (ones for a plain
split, 0/1 fold masks for cross-validation), so the same code serves hold-out and k-fold
outer losses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import linop
from hyperopt.data import Dataset
from hyperopt.solvers.base import IterativeSolver

__all__ = ["InnerSolver", "InterceptReadout", "L2Penalized", "Problem", "SolverFactory", "check_dense",
           "feature_scale", "weighted_mean"]

SolverFactory = Callable[..., IterativeSolver]


def weighted_mean(values, w):
    """``Σ w_i v_i / Σ w_i`` (the plain mean when ``w`` is all ones)."""
    return jnp.sum(w * values) / jnp.sum(w)


def check_dense(X, problem: str, solver: str, use: str) -> None:
    """Raises a one-line ``ValueError`` when ``X`` is a :class:`~hyperopt.linop.SparseMatrix`
    and ``solver`` needs a dense design (``use``: what takes sparse ``X`` instead). Called
    where the solver meets the data (at trace time), so library and CLI users see the same
    message.

    Example::

        >>> check_dense(X_sparse, "ridge", "RidgeCholesky", "solver=lbfgs")
        ValueError: problem 'ridge': solver RidgeCholesky needs a dense X, got a sparse ...
    """
    if linop.is_sparse(X):
        raise ValueError(f"problem {problem!r}: solver {solver} needs a dense X, got a sparse "
                         f"{X.shape[0]}x{X.shape[1]} matrix; use {use} "
                         "(or dataset.sparse=false for small data)")


class InnerSolver(NamedTuple):
    """A solver wired to a problem: ``solver.run(init_params, *args(theta, X, y, w))``."""

    solver: IterativeSolver
    args: Callable[..., tuple]

    def run(self, init_params, theta, X, y, w):
        return self.solver.run(init_params, *self.args(theta, X, y, w))


@dataclasses.dataclass(frozen=True)
class InterceptReadout:
    """The readout of a linear regression with an optional intercept (``fit_intercept``):
    ``w``, or ``{"coef": w, "intercept": b}`` (shared by :class:`Ridge` and :class:`Lasso`)."""

    def readout(self, params, theta, X, y, w):
        """``w``, or ``{"coef": w, "intercept": b}`` with ``b = mean_s(y - Xw)``."""
        if not self.fit_intercept:
            return params
        return {"coef": params, "intercept": weighted_mean(y - X @ params, w)}

    @staticmethod
    def _predict(model, X):
        if isinstance(model, dict):
            return X @ model["coef"] + model["intercept"]
        return X @ model


class Problem:
    """Base of all problems. Subclasses set ``name``/``task`` and implement the methods.

    Attributes:
      outer_split: which split the outer loss is measured on (``"val"``; dataset
        distillation measures it on ``"train"``).
      supports_cv: whether a k-fold outer loss makes sense for this problem.
      accepts_sparse: whether the problem takes a sparse design
        (:class:`~hyperopt.linop.SparseMatrix`); solvers that need a dense one say so
        (:func:`check_dense`).
      stop_xtol: the outer stopping rule's ``xtol`` when it is left to the problem
        (:class:`~hyperopt.bilevel.StopRule` ``xtol=None``, ``stop.xtol: auto``): how
        finely the outer loop pins θ down.
    """

    name: ClassVar[str] = "problem"
    tasks: ClassVar[tuple[str, ...]] = ()
    outer_split: ClassVar[str] = "val"
    supports_cv: ClassVar[bool] = True
    accepts_sparse: ClassVar[bool] = True
    stop_xtol: ClassVar[float] = 1e-3

    def init_hparams(self, data: Dataset) -> Any:
        """Initial unconstrained hyperparameters."""
        raise NotImplementedError

    def hparams(self, theta) -> dict[str, Any]:
        """The constrained hyperparameters (e.g. ``{"l2reg": exp(theta)}``)."""
        raise NotImplementedError

    def path_grid(self, data: Dataset) -> list | None:
        """Unconstrained hyperparameters along the regularization path, largest penalty
        first: where :func:`~hyperopt.bilevel.fit`'s ``start="path"`` looks for the outer
        loop's starting point (``None``: the problem has no such path; it starts at
        :meth:`init_hparams`)."""
        return None

    def init_params(self, data: Dataset, n_samples: int | None = None) -> Any:
        """Initial inner parameters, shaped for ``data``; ``n_samples`` is the size of the
        inner split when it is not the training split (k-fold CV uses train ∪ val), for
        problems whose parameters are per sample (the SVM dual)."""
        raise NotImplementedError

    def inner_solver(self, make_solver: SolverFactory) -> InnerSolver:
        """Builds the inner solver from ``make_solver`` (a solver class or a partial of one,
        e.g. ``functools.partial(LBFGS, maxiter=500)``), passing what the problem defines
        (objective, prox, ...). Raises ``ValueError`` for a solver the problem cannot use."""
        raise NotImplementedError

    def readout(self, params, theta, X, y, w):
        """What the outer loss and metrics see, from the inner solution and the inner split.

        The identity for most problems; the SVM dual maps dual variables to primal weights.
        """
        return params

    def outer_loss(self, params, theta, X, y, w):
        """Weighted outer loss of the inner solution on one split."""
        raise NotImplementedError

    def hessian_diagonal(self, params, theta, X, y, w):
        """The diagonal of the inner objective's Hessian at ``params`` (a pytree like
        ``params``, positive), or ``None`` when the problem does not give one. The implicit
        system's conjugate gradient uses it as a Jacobi preconditioner (``M = diag⁻¹``),
        which matters when penalties spread over decades (per-feature λ).

        Example:
          >>> d = Logistic().hessian_diagonal(params, jnp.log(0.1), X, y, w)  # {"W": (p, 1), "b": (1,)}
        """
        return None

    def metrics(self, params, theta, X, y) -> dict[str, Any]:
        """Evaluation metrics on one split: at least ``loss`` (and ``accuracy`` for classifiers)."""
        raise NotImplementedError

    # -- shared helpers ----------------------------------------------------------------
    def check_data(self, data: Dataset) -> None:
        if self.tasks and data.task not in self.tasks:
            raise ValueError(
                f"problem {self.name!r} needs a {' or '.join(self.tasks)} dataset; "
                f"{data.name!r} is a {data.task} dataset")
        if data.sparse and not self.accepts_sparse:
            raise ValueError(f"problem {self.name!r} needs dense features; {data.name!r} is "
                             "sparse: load it with dataset.sparse=false (load_dataset(..., "
                             "sparse=False))")

    def unsupported_solver(self, make_solver, allowed: tuple[type, ...]):
        cls = solver_class(make_solver)
        names = ", ".join(c.__name__ for c in allowed)
        return ValueError(f"problem {self.name!r} cannot use solver {cls.__name__}; allowed: {names}")


def feature_scale(X) -> float:
    """The mean variance of the non-constant columns of ``X`` (host; dense or sparse): the
    average eigenvalue of the centred ``XᵀX/n``, against which an L2 penalty is large or
    small (1 for standardized features)."""
    if hasattr(X, "to_scipy"):  # linop.SparseMatrix
        X = X.to_scipy()
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
    else:
        var = np.var(np.asarray(X, np.float64), axis=0)
    var = var[var > 1e-12 * max(float(var.max(initial=0.0)), 1e-300)]
    return float(var.mean()) if var.size else 1.0


@dataclasses.dataclass(frozen=True)
class L2Penalized(Problem):
    """A problem whose hyperparameter is an L2 penalty λ, one or one per feature;
    ``theta = log λ``.

    The first λ is ``init_l2reg`` when given, else data-relative: ``init_ratio`` times
    :func:`feature_scale` of the training split (the mean feature variance; for
    standardized data the two are the same number).
    """

    per_feature: bool = False
    init_l2reg: float | None = 1.0
    init_ratio: float = 1.0

    def initial_l2reg(self, data: Dataset) -> float:
        if self.init_l2reg is not None:
            return float(self.init_l2reg)
        if not self.init_ratio > 0:
            raise ValueError(f"init_ratio={self.init_ratio!r}; allowed: a positive number")
        return self.init_ratio * feature_scale(data.X_train)

    def init_hparams(self, data: Dataset):
        shape = (data.n_features,) if self.per_feature else ()
        # device_put of a host array: no XLA program to compile at the start of a run
        return jax.device_put(np.full(shape, np.log(self.initial_l2reg(data)), data.X_train.dtype))

    def hparams(self, theta):
        return {"l2reg": jnp.exp(theta)}


def solver_class(make_solver: SolverFactory) -> type:
    """The class behind a solver factory (a class or partials of one, nested)."""
    while not isinstance(make_solver, type) and hasattr(make_solver, "func"):
        make_solver = make_solver.func
    return make_solver
