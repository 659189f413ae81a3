"""JAXopt's objective functions, including the composite linear ones that
:class:`~hyperopt.BlockCoordinateDescent` takes.

A composite linear function is

    fun(params, *args, **kwargs) = subfun(A @ params, *args, **kwargs) + <params, b(*args, **kwargs)>

with ``A = make_linop(*args, **kwargs).A``: block ``j`` of ``params`` (``params[j]``) is paired
with column ``j`` of ``A``, so block coordinate descent updates one block at ``O(n)`` cost by
keeping ``A @ params`` current. ``columnwise_lipschitz_const(*args)`` gives block ``j``'s
Lipschitz constant (step ``1/L_j``).

The objectives take ``data = (X, y)`` as in JAXopt: ``least_squares(W, (X, y))``,
``multiclass_logreg(W, (X, y))`` with integer labels ``y``, ``binary_logreg(w, (X, y))`` with
``y ∈ {0, 1}``, ``multiclass_linear_svm_dual(beta, l2reg, (X, Y))`` with one-hot ``Y``.

Example:
    >>> import jax.numpy as jnp
    >>> X, y = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 2.0])
    >>> float(least_squares(jnp.zeros(2), (X, y)))   # ½ mean(y²)
    1.25
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = [
    "CompositeLinearFunction",
    "LinearOperator",
    "binary_logreg",
    "l2_multiclass_logreg",
    "l2_multiclass_logreg_with_intercept",
    "least_squares",
    "multiclass_linear_svm_dual",
    "multiclass_logreg",
    "multiclass_logreg_with_intercept",
    "ridge_regression",
]


@jax.tree_util.register_pytree_node_class
class LinearOperator:
    """A dense matrix ``A`` (shape (n, p)) with the products block coordinate descent needs.

    Example:
      >>> op = LinearOperator(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
      >>> op.matvec(jnp.array([1.0, 0.0])).tolist(), op.rmatvec_element(jnp.ones(2), 1).tolist()
      ([1.0, 3.0], 6.0)
    """

    def __init__(self, A):
        self.A = jnp.asarray(A)

    def shape(self):
        return self.A.shape

    def matvec(self, x):
        """``A @ x`` (``x`` of shape (p,) or (p, k))."""
        return jnp.tensordot(self.A, x, axes=(1, 0))

    def matvec_element(self, x, idx):
        """``(A @ x)[idx]``."""
        return jnp.tensordot(self.A[idx], x, axes=(0, 0))

    def rmatvec(self, x):
        """``Aᵀ @ x``."""
        return jnp.tensordot(self.A, x, axes=(0, 0))

    def rmatvec_element(self, x, idx):
        """``(Aᵀ @ x)[idx]``: column ``idx`` of ``A`` against ``x``."""
        return jnp.tensordot(self.A[:, idx], x, axes=(0, 0))

    def update_matvec(self, Ax, delta, idx):
        """``A @ x`` after ``x[idx] += delta``."""
        return Ax + jnp.tensordot(self.A[:, idx], delta, axes=0)

    def update_rmatvec(self, ATx, delta, idx):
        """``Aᵀ @ x`` after ``x[idx] += delta``."""
        return ATx + jnp.tensordot(self.A[idx], delta, axes=0)

    def column_l2_norms(self, squared=False):
        sq = jnp.sum(self.A ** 2, axis=0)
        return sq if squared else jnp.sqrt(sq)

    def tree_flatten(self):
        return (self.A,), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        del aux_data
        return cls(*children)


class CompositeLinearFunction:
    """Base class of ``fun(params, *args) = subfun(A params, *args) + <params, b(*args)>``.

    Subclasses define ``subfun(predictions, *args, **kwargs)``, ``make_linop(*args,
    **kwargs) -> LinearOperator`` and ``columnwise_lipschitz_const(*args, **kwargs)`` (the
    Lipschitz constant of the gradient along each block), and optionally ``b``.

    Example:
      >>> class Quadratic(CompositeLinearFunction):
      ...     def subfun(self, z, data): return 0.5 * jnp.sum((z - data[1]) ** 2)
      ...     def make_linop(self, data): return LinearOperator(data[0])
      ...     def columnwise_lipschitz_const(self, data):
      ...         return self.make_linop(data).column_l2_norms(squared=True)
    """

    def b(self, *args, **kwargs):
        """Linear term (shaped like ``params``), or ``None``."""
        return None

    def lipschitz_const(self, *args, **kwargs):
        """Lipschitz constant of ``∇subfun``."""
        raise NotImplementedError

    def subfun(self, predictions, *args, **kwargs):
        raise NotImplementedError

    def make_linop(self, *args, **kwargs) -> LinearOperator:
        raise NotImplementedError

    def columnwise_lipschitz_const(self, *args, **kwargs):
        """Per-block Lipschitz constants ``||A_j||² · lipschitz_const``."""
        linop = self.make_linop(*args, **kwargs)
        return linop.column_l2_norms(squared=True) * self.lipschitz_const(*args, **kwargs)

    def __call__(self, params, *args, **kwargs):
        linop = self.make_linop(*args, **kwargs)
        value = self.subfun(linop.matvec(params), *args, **kwargs)
        b = self.b(*args, **kwargs)
        if b is not None:
            value = value + jnp.vdot(params, b)
        return value


class LeastSquares(CompositeLinearFunction):
    r"""``½ mean((X W - y)²)`` with ``data = (X, y)``; ``W`` of shape (p,) or (p, k)."""

    def subfun(self, predictions, data):
        return 0.5 * jnp.mean((predictions - data[1]) ** 2)

    def make_linop(self, data):
        return LinearOperator(data[0])

    def lipschitz_const(self, data):
        # the Hessian of ½ mean(r²) in the predictions is I / (number of residuals)
        return 1.0 / jnp.size(data[1])

    def __call__(self, W, data):
        """Least squares ``½ mean((X W - y)²)``.

        Example:
          >>> float(least_squares(jnp.ones(1), (jnp.ones((2, 1)), jnp.zeros(2))))
          0.5
        """
        return super().__call__(W, data)


least_squares = LeastSquares()


def ridge_regression(params, l2reg, data):
    """``½ mean((X w - y)²) + ½ l2reg ||w||²``.

    Example:
      >>> float(ridge_regression(jnp.ones(1), 2.0, (jnp.ones((2, 1)), jnp.zeros(2))))
      1.5
    """
    return least_squares(params, data) + 0.5 * l2reg * jnp.sum(params ** 2)


def _multiclass_logistic_loss(label, logits):
    return logsumexp(logits) - logits[label]


_logloss_vmap = jax.vmap(_multiclass_logistic_loss)


class MulticlassLogreg(CompositeLinearFunction):
    """``mean_i [logsumexp(W ᵀx_i) - (Wᵀx_i)[y_i]]`` with ``data = (X, y)``, integer labels."""

    def subfun(self, predictions, data):
        return jnp.mean(_logloss_vmap(data[1], predictions))

    def make_linop(self, data):
        return LinearOperator(data[0])

    def lipschitz_const(self, data):
        # the softmax cross-entropy Hessian is at most ½ I per sample, averaged over samples
        return 0.5 / jnp.shape(data[0])[0]

    def __call__(self, W, data):
        """Multiclass logistic regression; ``W`` of shape (p, k).

        Example:
          >>> round(float(multiclass_logreg(jnp.zeros((1, 2)), (jnp.ones((2, 1)), jnp.array([0, 1])))), 4)
          0.6931
        """
        return super().__call__(W, data)


multiclass_logreg = MulticlassLogreg()


def multiclass_logreg_with_intercept(params, data):
    """Multiclass logistic regression with intercept: ``params = (W, b)``.

    Example:
      >>> W, b = jnp.zeros((1, 2)), jnp.zeros(2)
      >>> round(float(multiclass_logreg_with_intercept((W, b), (jnp.ones((2, 1)), jnp.array([0, 1])))), 4)
      0.6931
    """
    X, y = data
    W, b = params
    return jnp.mean(_logloss_vmap(y, jnp.dot(X, W) + b))


def l2_multiclass_logreg(W, l2reg, data):
    """Multiclass logistic regression + ``½ l2reg ||W||²``.

    Example:
      >>> round(float(l2_multiclass_logreg(jnp.zeros((1, 2)), 1.0, (jnp.ones((2, 1)), jnp.array([0, 1])))), 4)
      0.6931
    """
    X, y = data
    return jnp.mean(_logloss_vmap(y, jnp.dot(X, W))) + 0.5 * l2reg * jnp.sum(W ** 2)


def l2_multiclass_logreg_with_intercept(params, l2reg, data):
    """Multiclass logistic regression with intercept + ``½ l2reg ||W||²`` (``b`` unpenalized).

    Example:
      >>> W, b = jnp.zeros((1, 2)), jnp.zeros(2)
      >>> X, y = jnp.ones((2, 1)), jnp.array([0, 1])
      >>> round(float(l2_multiclass_logreg_with_intercept((W, b), 1.0, (X, y))), 4)
      0.6931
    """
    X, y = data
    W, b = params
    return jnp.mean(_logloss_vmap(y, jnp.dot(X, W) + b)) + 0.5 * l2reg * jnp.sum(W ** 2)


def _binary_logistic_loss(label, logit):
    return jax.nn.softplus(logit) - label * logit


_binary_logloss_vmap = jax.vmap(_binary_logistic_loss)


class BinaryLogreg(CompositeLinearFunction):
    """``mean_i [softplus(wᵀx_i) - y_i wᵀx_i]`` with ``data = (X, y)``, ``y ∈ {0, 1}``."""

    def subfun(self, predictions, data):
        return jnp.mean(_binary_logloss_vmap(data[1], predictions))

    def make_linop(self, data):
        return LinearOperator(data[0])

    def lipschitz_const(self, data):
        return 0.25 / jnp.shape(data[0])[0]

    def __call__(self, w, data):
        """Binary logistic regression; ``w`` of shape (p,).

        Example:
          >>> round(float(binary_logreg(jnp.zeros(1), (jnp.ones((2, 1)), jnp.array([0, 1])))), 4)
          0.6931
        """
        return super().__call__(w, data)


binary_logreg = BinaryLogreg()


class MulticlassLinearSvmDual(CompositeLinearFunction):
    """Dual of the Crammer–Singer multiclass SVM (negated, to minimize):

    ``fun(β, l2reg, (X, Y)) = 1/(2 l2reg) ||Xᵀ(Y - β)||² + <β, Y - 1>`` over rows of β on the
    simplex (block ``i`` = row ``i``, paired with sample ``i``); primal ``W = Xᵀ(Y - β)/l2reg``.
    """

    def subfun(self, Xbeta, l2reg, data):
        X, Y = data
        V = jnp.dot(X.T, Y) - Xbeta
        return 0.5 / l2reg * jnp.vdot(V, V)

    def make_linop(self, l2reg, data):
        return LinearOperator(data[0].T)

    def lipschitz_const(self, l2reg, data):
        return 1.0 / l2reg

    def b(self, l2reg, data):
        return data[1] - 1

    def __call__(self, beta, l2reg, data):
        """Example:
          >>> X, Y = jnp.eye(2), jnp.eye(2)
          >>> float(multiclass_linear_svm_dual(Y, 1.0, (X, Y)))
          0.0
        """
        return super().__call__(beta, l2reg, data)


multiclass_linear_svm_dual = MulticlassLinearSvmDual()
