"""Dataset distillation: learn a few synthetic images on which a model trains well.

Hyperparameters ``theta`` (k, d) are ``k = n_classes × images_per_class`` synthetic images
with fixed labels (:meth:`Distillation.image_labels`: the first ``images_per_class``
images are class 0, and so on). Inner problem: L2-regularized multinomial logistic
regression (``W`` (d, K), ``b`` (K), intercept unpenalized) trained on the synthetic
images only, ``min mean_i CE(x̃_i W + b, ỹ_i) + λ/2 ||W||²`` with a fixed ``λ`` (``l2reg``,
0.1 as in JAXopt's example); it matches scikit-learn's ``LogisticRegression(C=1/(kλ))``.
Outer loss: the cross-entropy of that model on the real training data (``outer_split =
"train"``), so the inner arguments ignore the real ``(X, y, w)`` the loop passes.

:func:`baseline_accuracies` gives the test accuracies to beat: the same model trained on
random real images (one draw) and on class means.

Example:
  >>> problem = Distillation()
  >>> theta = problem.init_hparams(data)                        # (10, 64) for digits
  >>> inner = problem.inner_solver(LBFGS)
  >>> params = inner.run(problem.init_params(data), theta, X, y, w).params
  >>> loss = problem.outer_loss(params, theta, data.X_train, data.y_train, w)
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt.data import Dataset
from hyperopt.problems.base import InnerSolver, Problem, SolverFactory, solver_class, weighted_mean
from hyperopt.problems.logistic import cross_entropy, logits_of, objective, predict
from hyperopt.solvers import LBFGS, GradientDescent

__all__ = ["INITS", "Distillation", "baseline_accuracies"]

INITS = ("random_real", "class_mean", "noise")


@dataclasses.dataclass(frozen=True)
class Distillation(Problem):
    """Learns ``images_per_class`` synthetic images per class (``theta``, shape (k, d)).

    Attributes:
      images_per_class: synthetic images per class.
      l2reg: fixed ``λ`` of the inner logistic regression.
      init: ``"random_real"`` (random training images of each class), ``"class_mean"``
        (means of random disjoint groups of each class: the class means when
        ``images_per_class=1``) or ``"noise"`` (standard normal; features are
        standardized).
      seed: seed of ``"random_real"``, ``"class_mean"`` groups and ``"noise"``.
    """

    name = "distillation"
    tasks = ("multiclass",)
    outer_split = "train"
    supports_cv = False
    accepts_sparse = False  # the learned images are dense
    images_per_class: int = 1
    l2reg: float = 0.1
    init: str = "random_real"
    seed: int = 0

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; allowed: {', '.join(INITS)}")
        if not (isinstance(self.images_per_class, int) and self.images_per_class > 0):
            raise ValueError(f"images_per_class={self.images_per_class!r}; allowed: a positive integer")
        if not self.l2reg > 0:
            raise ValueError(f"l2reg={self.l2reg!r}; allowed: a positive number")

    def image_labels(self, n_classes: int):
        """Labels of the synthetic images, shape (k,): ``[0]*ipc + [1]*ipc + ...``."""
        return jnp.repeat(jnp.arange(n_classes, dtype=jnp.int32), self.images_per_class)

    def init_hparams(self, data: Dataset):
        self.check_data(data)
        rng = np.random.default_rng(self.seed)
        X, y = np.asarray(data.X_train), np.asarray(data.y_train)
        ipc = self.images_per_class
        if self.init == "noise":
            images = rng.normal(size=(data.n_classes * ipc, data.n_features))
        else:
            images = []
            for c in range(data.n_classes):
                members = np.flatnonzero(y == c)
                if len(members) < ipc:
                    raise ValueError(f"class {c} has {len(members)} training samples; "
                                     f"images_per_class={ipc} needs at least that many")
                members = rng.permutation(members)
                if self.init == "random_real":
                    images.append(X[members[:ipc]])
                else:
                    images.extend(X[group].mean(0) for group in np.array_split(members, ipc))
            images = np.concatenate(images) if self.init == "random_real" else np.stack(images)
        return jnp.asarray(images, data.X_train.dtype)

    def hparams(self, theta):
        return {"images": theta}

    def init_params(self, data: Dataset, n_samples: int | None = None):
        dtype = data.X_train.dtype
        return {"W": jnp.zeros((data.n_features, data.n_classes), dtype),
                "b": jnp.zeros(data.n_classes, dtype)}

    def inner_solver(self, make_solver: SolverFactory) -> InnerSolver:
        if not issubclass(solver_class(make_solver), (GradientDescent, LBFGS)):
            raise self.unsupported_solver(make_solver, (GradientDescent, LBFGS))

        def args(theta, X, y, w):  # the real (X, y, w) only enter the outer loss
            labels = self.image_labels(theta.shape[0] // self.images_per_class)
            return (jnp.asarray(self.l2reg, theta.dtype), theta, labels,
                    jnp.ones(theta.shape[0], theta.dtype))

        return InnerSolver(make_solver(fun=objective), args)

    def outer_loss(self, params, theta, X, y, w):
        return weighted_mean(cross_entropy(logits_of(params, X), y), w)

    def metrics(self, params, theta, X, y):
        logits = logits_of(params, X)
        return {"loss": jnp.mean(cross_entropy(logits, y)),
                "accuracy": jnp.mean(predict(logits) == y)}

    def images(self, theta, image_shape: tuple[int, ...] | None = None):
        """The synthetic images for plotting: (k, *image_shape); a square shape is
        inferred when ``d`` is a perfect square (digits: 8×8), else (k, d)."""
        theta = np.asarray(theta)
        if image_shape is None:
            side = math.isqrt(theta.shape[1])
            image_shape = (side, side) if side * side == theta.shape[1] else (theta.shape[1],)
        return theta.reshape(theta.shape[0], *image_shape)


def baseline_accuracies(data: Dataset, l2reg: float = 0.1, seed: int = 0,
                        make_solver: SolverFactory = LBFGS) -> dict[str, float]:
    """Test accuracy of the inner model trained on fixed images, the baselines of distillation.

    Returns ``{"random_real": ..., "class_mean": ..., "full_train": ...}``: trained on one
    random real training image per class (drawn with ``seed``; the same images as
    ``Distillation(init="random_real", seed=seed)`` starts from), on the class means, and
    on the whole training set (an upper reference), all with the same ``λ = l2reg``.
    (One compiled training per ``make_solver`` and shape: later calls, other seeds and
    other ``l2reg`` reuse it.)
    """
    train = _train_on(make_solver)
    dtype = data.X_train.dtype
    init = Distillation().init_params(data)
    lam = jnp.asarray(l2reg, dtype)

    def accuracy(X, y):
        params = train(init, lam, X, y, jnp.ones(X.shape[0], dtype))
        return float(Distillation().metrics(params, None, *data.test)["accuracy"])

    out = {}
    for kind in ("random_real", "class_mean"):
        problem = Distillation(l2reg=l2reg, init=kind, seed=seed)
        theta = problem.init_hparams(data)
        out[kind] = accuracy(theta, problem.image_labels(theta.shape[0] // problem.images_per_class))
    # The whole training set as the "synthetic" images: their labels are the real ones.
    out["full_train"] = accuracy(data.X_train, data.y_train)
    return out


@functools.lru_cache(maxsize=8)
def _train_on(make_solver: SolverFactory):
    """``(init, λ, X, y, w) -> params`` of the inner logistic regression, compiled once."""
    solver = make_solver(fun=objective)
    return jax.jit(lambda init, lam, X, y, w: solver.run(init, lam, X, y, w).params)
