"""Design matrices as linear operators: a dense ``jax.Array`` or a :class:`SparseMatrix`.

Problems compute with ``X`` only through ``X @ v``, ``X.T @ u`` and the functions of this
module, so the same code runs on dense and sparse data and never branches on the storage.
Every function takes either kind of matrix and returns what the dense formula returns::

    X @ v, X.T @ u                  matvec(X, v), rmatvec(X, u)
    Σ_i w_i X_ij²  (diag XᵀWX)      column_sq_norms(X, w)
    Σ_j X_ij²                       row_sq_norms(X)
    diag(s) X,  X diag(s)           scale_rows(X, s), scale_columns(X, s)
    ||X||₂  (power iteration)       spectral_norm(X)
    [X₁; X₂], X[rows], X[:, cols]   concat_rows(...), take_rows(X, rows), dense_columns(X, cols)

:class:`SparseMatrix` stores the non-zeros in coordinate form (values and int32 row and
column indices, in row-major order) and computes products with a gather and
``jax.ops.segment_sum``: ``O(nnz)`` time and memory, differentiable in forward and
reverse mode, batched by ``vmap``. It is a pytree (its arrays are leaves, its shape is
static), so it goes through ``jit``, ``vmap`` (unbatched: ``in_axes=None``), ``grad``
and :class:`hyperopt.data.Dataset`. ``experiments/bench_sparse_ops.py`` measures it
against ``jax.experimental.sparse.BCOO``/``BCSR``, which were slower on every operation.

Example::

    >>> X = SparseMatrix.from_scipy(scipy.sparse.random(1000, 500, density=0.01))
    >>> w = jnp.ones(500)
    >>> (X @ w).shape, (X.T @ (X @ w)).shape, column_sq_norms(X).shape
    ((1000,), (500,), (500,))
    >>> jax.grad(lambda w: jnp.sum((X @ w) ** 2))(w).shape
    (500,)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

__all__ = ["Matrix", "SparseMatrix", "column_sq_norms", "concat_rows", "dense_columns",
           "is_sparse", "matvec", "nbytes", "nnz", "rmatvec", "row_sq_norms", "scale_columns",
           "scale_rows", "spectral_norm", "take_rows", "todense"]


@functools.partial(jax.tree_util.register_dataclass, data_fields=("values", "rows", "cols"),
                   meta_fields=("shape", "rows_sorted"))
@dataclasses.dataclass(frozen=True, eq=False)
class SparseMatrix:
    """A sparse ``(n, p)`` matrix in coordinate form, computed with by segment sums.

    Entry ``k`` is ``X[rows[k], cols[k]] = values[k]``; repeated positions add up (as in
    scipy). Matrices built by :meth:`from_scipy` have one entry per position, in
    row-major order (``rows_sorted``). ``X.T`` is free (it swaps the index arrays).

    Attributes:
      values: ``(nnz,)`` float entries.
      rows, cols: ``(nnz,)`` int32 row and column indices.
      shape: ``(n, p)``, static.
      rows_sorted: whether ``rows`` is non-decreasing (a hint for ``segment_sum``).

    Example::

        >>> X = SparseMatrix.from_scipy(scipy.sparse.csr_matrix([[1.0, 0.0], [0.0, 2.0]]))
        >>> X @ jnp.array([1.0, 1.0]), X.T @ jnp.array([1.0, 3.0]), X.nnz
        (Array([1., 2.], dtype=float64), Array([1., 6.], dtype=float64), 2)
    """

    values: jax.Array
    rows: jax.Array
    cols: jax.Array
    shape: tuple[int, int]
    rows_sorted: bool = False

    __array_ufunc__ = None  # ``numpy_array @ X`` calls ``X.__rmatmul__`` (no densifying)

    @classmethod
    def from_scipy(cls, matrix, dtype=None) -> SparseMatrix:
        """From any ``scipy.sparse`` matrix or array (host), one entry per position.

        ``dtype`` defaults to the matrix's (as float). Indices are int32, so ``nnz`` and
        each dimension must be below 2³¹.
        """
        csr = scipy.sparse.csr_matrix(matrix)
        if not csr.has_canonical_format:  # duplicates summed, sorted; on a copy of the input
            csr = csr.copy()
            csr.sum_duplicates()
        limit = np.iinfo(np.int32).max
        if max(csr.nnz, *csr.shape) > limit:
            raise ValueError(f"sparse matrix of shape {csr.shape} with {csr.nnz} non-zeros: "
                             f"int32 indices need nnz and each dimension < {limit}")
        dtype = np.result_type(csr.dtype, np.float32) if dtype is None else dtype
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int32), np.diff(csr.indptr))
        put = jax.device_put
        return cls(put(csr.data.astype(dtype, copy=False)), put(rows),
                   put(csr.indices.astype(np.int32, copy=False)), tuple(csr.shape), True)

    def to_scipy(self) -> scipy.sparse.csr_matrix:
        """The same matrix as a host ``scipy.sparse.csr_matrix``."""
        values, rows, cols = (np.asarray(a) for a in (self.values, self.rows, self.cols))
        return scipy.sparse.csr_matrix((values, (rows, cols)), shape=self.shape)

    def todense(self) -> jax.Array:
        """The dense ``(n, p)`` array (for small matrices and tests)."""
        return jnp.zeros(self.shape, self.dtype).at[self.rows, self.cols].add(self.values)

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nnz(self) -> int:
        """Stored entries."""
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the three arrays."""
        return sum(int(a.size) * a.dtype.itemsize for a in (self.values, self.rows, self.cols))

    @property
    def T(self) -> SparseMatrix:
        return SparseMatrix(self.values, self.cols, self.rows, self.shape[::-1], False)

    def astype(self, dtype) -> SparseMatrix:
        return dataclasses.replace(self, values=self.values.astype(dtype))

    def matvec(self, v: jax.Array) -> jax.Array:
        """``X @ v`` for ``v`` of shape ``(p,)`` or ``(p, K)``; shape ``(n,)`` or ``(n, K)``."""
        v = jnp.asarray(v)
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[1]:
            raise ValueError(f"SparseMatrix of shape {self.shape} @ operand of shape {v.shape}: "
                             f"need ({self.shape[1]},) or ({self.shape[1]}, K)")
        if v.ndim == 1:
            return self._matvec(v)
        if v.shape[1] == 1:
            return self._matvec(v[:, 0])[:, None]
        # One column at a time: gathering K-wide rows v[cols] is 2-3x slower on XLA's CPU
        # backend than K gathers of scalars (experiments/bench_sparse_ops.py, rcv1 shape).
        return jax.lax.map(self._matvec, v.T).T

    def _matvec(self, v):
        return jax.ops.segment_sum(self.values * v[self.cols], self.rows, self.shape[0],
                                   indices_are_sorted=self.rows_sorted)

    def rmatvec(self, u: jax.Array) -> jax.Array:
        """``X.T @ u`` for ``u`` of shape ``(n,)`` or ``(n, K)``."""
        return self.T.matvec(u)

    def __matmul__(self, v):
        return self.matvec(v)

    def __rmatmul__(self, u):
        """``u @ X = (X.T @ u.T).T`` for ``u`` of shape ``(n,)`` or ``(K, n)``."""
        u = jnp.asarray(u)
        return self.rmatvec(u) if u.ndim == 1 else self.rmatvec(u.T).T

    def __array__(self, *args, **kwargs):
        raise TypeError(f"a SparseMatrix {self.shape} is not converted to a dense array "
                        "implicitly; use hyperopt.linop.todense(X) if you mean it")

    def __repr__(self) -> str:
        return f"SparseMatrix(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype})"


Matrix = jax.Array | SparseMatrix


def is_sparse(X: Matrix) -> bool:
    """Whether ``X`` is a :class:`SparseMatrix`."""
    return isinstance(X, SparseMatrix)


def nnz(X: Matrix) -> int:
    """Stored entries: ``X.nnz`` for sparse, ``n * p`` for a dense array (all stored)."""
    return X.nnz if is_sparse(X) else int(np.prod(X.shape))


def nbytes(X: Matrix) -> int:
    """Bytes the matrix occupies (values and, for sparse, indices)."""
    return X.nbytes if is_sparse(X) else int(X.size) * X.dtype.itemsize


def todense(X: Matrix) -> jax.Array:
    """The dense array (the identity on a dense array)."""
    return X.todense() if is_sparse(X) else jnp.asarray(X)


def matvec(X: Matrix, v: jax.Array) -> jax.Array:
    """``X @ v``; ``v`` of shape ``(p,)`` or ``(p, K)``."""
    return X @ v


def rmatvec(X: Matrix, u: jax.Array) -> jax.Array:
    """``X.T @ u``; ``u`` of shape ``(n,)`` or ``(n, K)``."""
    return X.T @ u


def column_sq_norms(X: Matrix, weights: jax.Array | None = None) -> jax.Array:
    """``Σ_i w_i X_ij²``, shape ``(p,)``: the diagonal of ``Xᵀ diag(w) X`` (``w`` = ones
    if ``None``), e.g. coordinate-wise Lipschitz constants of a weighted least squares or a
    Hessian diagonal. Weights of shape ``(n, K)`` give ``(p, K)``, one column per column of
    weights. A dense ``X`` is read once per weight column in a fused reduction: no ``(n, p)``
    temporary (``X ** 2`` would be a second copy of the data in every call).

    Example::

        >>> column_sq_norms(jnp.array([[1.0, 2.0], [3.0, 0.0]]), jnp.array([1.0, 0.5]))
        Array([5.5, 4. ], dtype=float64)
    """
    if is_sparse(X):
        squared = dataclasses.replace(X, values=X.values ** 2)
        return squared.rmatvec(jnp.ones(X.shape[0], X.dtype) if weights is None else weights)
    if weights is None:
        return jnp.sum(X * X, axis=0)
    weights = jnp.asarray(weights)
    # (X w) X, in this order: X * X would be a common subexpression that XLA hoists and stores
    one = lambda w: jnp.sum((X * w[:, None]) * X, axis=0)
    if weights.ndim == 1:
        return one(weights)
    if weights.shape[1] == 1:
        return one(weights[:, 0])[:, None]
    return jax.lax.map(one, weights.T).T


def row_sq_norms(X: Matrix) -> jax.Array:
    """``Σ_j X_ij²``, shape ``(n,)``."""
    return column_sq_norms(X.T)


def scale_rows(X: Matrix, s: jax.Array) -> Matrix:
    """``diag(s) X`` (row ``i`` times ``s[i]``, e.g. per-sample weights); same storage as
    ``X``, differentiable in ``s``."""
    if is_sparse(X):
        return dataclasses.replace(X, values=X.values * s[X.rows])
    return s[:, None] * X


def scale_columns(X: Matrix, s: jax.Array) -> Matrix:
    """``X diag(s)`` (column ``j`` times ``s[j]``, e.g. feature scaling); same storage as
    ``X``, differentiable in ``s``."""
    if is_sparse(X):
        return dataclasses.replace(X, values=X.values * s[X.cols])
    return X * s


def spectral_norm(X: Matrix, *, maxiter: int = 100, tol: float = 1e-6, seed: int = 0) -> jax.Array:
    """``||X||₂`` (the largest singular value) by power iteration on ``XᵀX``.

    Costs two products with ``X`` per iteration and never forms ``XᵀX`` or an SVD. Stops
    when the estimate of ``||X||₂²`` changes by less than ``tol`` (relative) or after
    ``maxiter`` iterations, from a seeded Gaussian start. The estimate approaches
    ``||X||₂`` from below, at the rate ``(σ₂/σ₁)²`` per iteration; for a Lipschitz
    constant ``L = ||X||₂² / n`` that is a step ``1/L`` too large by about ``tol``.
    Not differentiated (the input is under ``stop_gradient``). Jittable.

    Example::

        >>> round(float(spectral_norm(jnp.diag(jnp.array([3.0, 1.0])))), 6)
        3.0
    """
    X = jax.lax.stop_gradient(X)
    p = X.shape[1]
    v0 = jax.random.normal(jax.random.PRNGKey(seed), (p,), X.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def step(carry):
        v, sq, _, i = carry
        Xv = X @ v
        g = X.T @ Xv
        g_norm = jnp.linalg.norm(g)
        v = jnp.where(g_norm > 0, g / jnp.where(g_norm > 0, g_norm, 1), v)
        return v, jnp.vdot(Xv, Xv), sq, i + 1  # ||X v||² with ||v|| = 1: <= ||X||₂²

    def not_done(carry):
        _, sq, old_sq, i = carry
        return (i < 2) | ((i < maxiter) & (jnp.abs(sq - old_sq) > tol * sq))

    zero = jnp.zeros((), X.dtype)
    _, sq, _, _ = jax.lax.while_loop(not_done, step, (v0, zero, zero, 0))
    return jnp.sqrt(sq)


def concat_rows(blocks) -> Matrix:
    """Stacks matrices with the same columns: ``[X₁; X₂; ...]`` (e.g. train ∪ validation
    for k-fold cross-validation). All dense (``jnp.concatenate``) or all sparse; jittable.

    Example::

        >>> concat_rows([X_train, X_val]).shape == (n_train + n_val, p)
        True
    """
    blocks = list(blocks)
    kinds = {is_sparse(b) for b in blocks}
    if len(kinds) != 1:
        raise ValueError("concat_rows needs all dense or all sparse matrices, got a mix")
    widths = {b.shape[1] for b in blocks}
    if len(widths) != 1:
        raise ValueError(f"concat_rows needs the same number of columns, got {sorted(widths)}")
    if not kinds.pop():
        return jnp.concatenate(blocks)
    offsets = np.cumsum([0] + [b.shape[0] for b in blocks])
    return SparseMatrix(
        jnp.concatenate([b.values for b in blocks]),
        jnp.concatenate([b.rows + np.int32(o) for b, o in zip(blocks, offsets, strict=False)]),
        jnp.concatenate([b.cols for b in blocks]),
        (int(offsets[-1]), widths.pop()),
        all(b.rows_sorted for b in blocks))


def take_rows(X: Matrix, rows) -> Matrix:
    """``X[rows]`` for concrete (not traced) integer indices, in the given order.

    Sparse matrices are sliced on the host as CSR (the non-zeros of a row subset have a
    data-dependent count, so this is not jittable); dense ones with ``X[rows]``.
    """
    rows = np.asarray(rows)
    if not is_sparse(X):
        return X[rows]
    sliced = X.to_scipy()[rows]
    return SparseMatrix.from_scipy(sliced, X.dtype)


def dense_columns(X: Matrix, cols: jax.Array) -> jax.Array:
    """``X[:, cols]`` as a dense ``(n, k)`` array, for ``k`` distinct column indices (e.g. a
    working set or a support). Jittable with traced ``cols`` of static length; for sparse
    ``X`` it costs ``O(nnz + p + n k)``.

    Example::

        >>> dense_columns(X, jnp.array([3, 0])).shape == (X.shape[0], 2)
        True
    """
    cols = jnp.asarray(cols)
    if not is_sparse(X):
        return X[:, cols]
    k = cols.shape[0]
    # position of every column in ``cols``; k (a spare output column) for the others
    position = jnp.full(X.shape[1], k, jnp.int32).at[cols].set(jnp.arange(k, dtype=jnp.int32))
    out = jnp.zeros((X.shape[0], k + 1), X.dtype).at[X.rows, position[X.cols]].add(X.values)
    return out[:, :k]
