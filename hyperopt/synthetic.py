"""Synthetic sparse data shaped like the text benchmarks rcv1, real-sim and news20.

Those sets are downloads (libsvm's site) that offline machines cannot make; these
generators give data of the same shape and kind of structure, generated directly as
``scipy.sparse`` CSR (never dense), with a planted sparse truth:

* column (word) frequencies follow Zipf's law (probability about ``1/(rank + c)``, with
  ``c`` set so that the most frequent column is in about half of the rows); which column
  has which rank is random;
* row (document) lengths are log-normal around ``density * n_features``;
* values are tf-idf: ``(1 + log tf) * idf`` with scikit-learn's smooth idf, every row
  scaled to unit Euclidean norm (as in the libsvm versions of those sets);
* targets come from a sparse ``coef`` on ``n_informative`` columns drawn among the
  ``10 * n_informative`` most frequent ones: regression ``y = X coef + noise`` with
  ``std(X coef) / std(noise) = snr``; binary labels ``y ~ Bernoulli(sigmoid(snr * m))``
  for the standardized margin ``m = (X coef - median) / std``.

Example::

    >>> data = make_sparse_text(2000, 5000, 0.002, task="binary", seed=0)
    >>> data.X.shape, data.X.format, round(data.X.nnz / (2000 * 5000), 4), data.y[:4]
    ((2000, 5000), 'csr', 0.002, array([1., 0., 1., 0.]))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse
import scipy.special

__all__ = ["SPARSE_SHAPES", "SparseSample", "SparseShape", "make_sparse_text"]


class SparseShape(NamedTuple):
    """Size of a public sparse benchmark set and the task it is usually run as."""

    n_samples: int
    n_features: int
    density: float  # fraction of non-zero entries
    task: str


SPARSE_SHAPES = {
    "rcv1": SparseShape(20_242, 47_236, 0.0016, "regression"),  # lasso (sparse-ho)
    "real_sim": SparseShape(72_309, 20_958, 0.0024, "binary"),  # L2 logistic (HOAG)
    "news20": SparseShape(19_996, 1_355_191, 0.00034, "binary"),
}


class SparseSample(NamedTuple):
    """A generated data set: ``X`` (n, p) CSR float64, targets ``y`` (n,) (0/1 labels for
    ``binary``), and the planted ``coef`` (p,) with ``n_informative`` non-zeros."""

    X: scipy.sparse.csr_matrix
    y: np.ndarray
    coef: np.ndarray


_TOP_ROW_FRACTION = 0.5  # the most frequent column is in about this fraction of rows
_LENGTH_SIGMA = 0.6  # log-normal spread of row lengths


def make_sparse_text(n_samples: int, n_features: int, density: float, *,
                     task: str = "regression", n_informative: int | None = None,
                     snr: float = 3.0, seed: int = 0) -> SparseSample:
    """Text-like sparse data with a planted sparse truth (see the module docstring).

    Args:
      n_samples, n_features: shape of ``X``.
      density: expected fraction of non-zeros, in (0, 1]; the realized one is within a
        few percent when rows hold more than a handful of entries.
      task: ``"regression"`` or ``"binary"``.
      n_informative: non-zeros of ``coef``; default ``max(1, round(0.005 * n_features))``.
      snr: signal-to-noise ratio (regression) or margin scale (binary), > 0.
      seed: seed of everything; the same seed gives the same data.

    Returns:
      A :class:`SparseSample`.

    Raises:
      ValueError: on a bad size, density, task or ``n_informative``.
    """
    _check(n_samples, n_features, density, task, n_informative, snr)
    rng = np.random.default_rng(seed)
    n, p = n_samples, n_features
    k = max(1, round(0.005 * p)) if n_informative is None else n_informative
    mean_length = density * p
    offset = _zipf_offset(p, mean_length)
    col_prob = np.diff(_zipf_cdf(np.arange(p + 1), p, offset))
    draws = _draws_for_distinct(col_prob, _row_lengths(rng, n, p, mean_length))
    # A row draws Poisson(d) columns independently (a column drawn twice has tf 2), each
    # by inverting the Zipf CDF; which column has which rank is a random permutation.
    counts = rng.poisson(draws)
    ranks = _zipf_inverse_cdf(rng.random(int(counts.sum())), p, offset)
    rank_to_col = rng.permutation(p).astype(np.int32)  # rank 0 is the most frequent column
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    X = scipy.sparse.csr_matrix((np.ones(len(ranks)), rank_to_col[ranks], indptr), shape=(n, p))
    del ranks
    X.sum_duplicates()  # tf counts, sorted column indices: canonical CSR
    indices, indptr, tf = X.indices, X.indptr, X.data
    df = np.bincount(indices, minlength=p)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    entry_rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))
    values = (1.0 + np.log(tf)) * idf[indices]
    norms = np.sqrt(np.bincount(entry_rows, weights=values ** 2, minlength=n))
    X.data = values / norms[entry_rows]  # rows with entries have norm > 0
    del entry_rows, values

    coef = np.zeros(p)
    pool = rank_to_col[:min(p, 10 * k)]
    support = rng.choice(pool, size=k, replace=False)
    coef[support] = rng.choice([-1.0, 1.0], k) * rng.uniform(1.0, 2.0, k)
    signal = X @ coef
    if task == "regression":
        spread = signal.std() if signal.std() > 0 else 1.0
        y = signal + rng.normal(0.0, spread / snr, n)
    else:
        margin = (signal - np.median(signal)) / (signal.std() if signal.std() > 0 else 1.0)
        y = (rng.random(n) < scipy.special.expit(snr * margin)).astype(np.float64)
    return SparseSample(X, y, coef)


def _check(n_samples, n_features, density, task, n_informative, snr):
    for name, value in (("n_samples", n_samples), ("n_features", n_features)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ValueError(f"density={density!r} must be a number in (0, 1]")
    if task not in ("regression", "binary"):
        raise ValueError(f"task {task!r} for sparse synthetic data; choose regression or binary")
    if n_informative is not None and not (
            isinstance(n_informative, (int, np.integer)) and 1 <= n_informative <= n_features):
        raise ValueError(f"n_informative={n_informative!r} must be an integer in "
                         f"1..n_features={n_features}")
    if not isinstance(snr, (int, float)) or not snr > 0:
        raise ValueError(f"snr={snr!r} must be a positive number")


def _zipf_cdf(r, p, c):
    """``P(rank < r)`` for ranks ``0..p-1`` with ``P(rank = r) ∝ log((r + 2 + c)/(r + 1 + c))
    ≈ 1/(r + 1 + c)``: Zipf's law, in a form whose CDF inverts in closed form."""
    return np.log((r + 1 + c) / (1 + c)) / np.log((p + 1 + c) / (1 + c))


def _zipf_inverse_cdf(u, p, c):
    """Ranks for uniforms ``u`` in [0, 1)."""
    r = u * np.log((p + 1 + c) / (1 + c))  # in place below: T is ~10⁷ for news20
    np.exp(r, out=r)
    r *= 1 + c
    r -= 1 + c
    np.clip(r, 0, p - 1, out=r)
    return r.astype(np.int32)  # truncation = floor for r >= 0


def _zipf_offset(p, mean_length):
    """``c >= 0`` with which the top column is expected in about ``_TOP_ROW_FRACTION`` of
    the rows of ``mean_length`` draws (0 if even ``c = 0`` gives fewer)."""
    target = -np.log1p(-_TOP_ROW_FRACTION) / max(mean_length, 1.0)  # P(rank 0) per draw
    low, high = 0.0, float(p)
    if _zipf_cdf(1, p, low) > target:
        for _ in range(60):  # bisection: P(rank 0) decreases in c
            mid = 0.5 * (low + high)
            low, high = (mid, high) if _zipf_cdf(1, p, mid) > target else (low, mid)
    return low


def _row_lengths(rng, n, p, mean_length):
    """Expected distinct entries per row: log-normal with mean ``mean_length``, at most ``p``."""
    z = rng.standard_normal(n)
    lengths = np.exp(_LENGTH_SIGMA * z)
    return np.minimum(lengths * (mean_length / lengths.mean()), p)  # mean exact: density too


def _draws_for_distinct(col_prob, lengths):
    """Expected draws per row such that the expected number of distinct columns is the
    row's length. A row gets about Poisson(d) draws, so column ``j`` appears with
    probability ``1 - exp(-d q_j)``; the sum over ``j`` is inverted on a grid."""
    grid = np.geomspace(1.0, max(2.0, 50 * lengths.max()), 32)
    expected = np.array([len(col_prob) - np.exp(-d * col_prob).sum() for d in grid])
    return np.interp(lengths, expected, grid)
