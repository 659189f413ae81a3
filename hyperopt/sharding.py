"""Sharded data: the sample axis of the data placed across all visible JAX devices.

Sharding is a placement of the data arrays, not a second code path: the outer step is the
same compiled program, and XLA's partitioner splits every product over samples and adds the
partial sums across devices. The mesh is one axis, ``"data"``, over ``jax.devices()`` — all
devices of all processes once ``jax.distributed.initialize()`` has run on every host.

A :class:`jax.sharding.NamedSharding` needs the sample count divisible by the device count:
the inner and outer splits are padded with rows of weight zero (the per-sample weights that
also carry k-fold masks, so every problem already ignores them), dense designs with zero rows,
:class:`~hyperopt.linop.SparseMatrix` designs with empty rows (their non-zeros, in row-major
order, are split evenly across devices, which keeps each device's rows contiguous).

Example:
    >>> mesh = data_mesh()                                   # all devices
    >>> X = shard_rows(np.ones((10, 3)), mesh)              # (12, 3): 3 rows per device of 4
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hyperopt.linop import SparseMatrix

__all__ = ["AXIS", "data_mesh", "padded", "replicate", "shard_refit", "shard_rows", "shard_splits",
           "shard_weights"]

AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh (``"data"``) over ``devices`` (default: every device JAX sees)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def padded(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh's device count."""
    d = mesh.size
    return -(-n // d) * d


def _pad_rows(x, n_pad: int):
    x = np.asarray(x)
    return np.pad(x, [(0, n_pad - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def shard_rows(X, mesh: Mesh, n_pad: int | None = None):
    """``X`` (dense ``(n, ...)`` or :class:`SparseMatrix` ``(n, p)``) padded to ``n_pad`` rows
    (default: the next multiple of the device count) and split over its rows."""
    n = X.shape[0]
    n_pad = padded(n, mesh) if n_pad is None else n_pad
    if isinstance(X, SparseMatrix):
        nnz = X.nnz
        nnz_pad = max(padded(nnz, mesh), mesh.size)
        last = n - 1 if nnz == 0 else int(np.asarray(X.rows)[-1])
        extra = nnz_pad - nnz  # explicit zeros in the last row: sums unchanged, rows still sorted
        values = np.concatenate([np.asarray(X.values), np.zeros(extra, X.dtype)])
        rows = np.concatenate([np.asarray(X.rows), np.full(extra, last, np.int32)])
        cols = np.concatenate([np.asarray(X.cols), np.zeros(extra, np.int32)])
        put = lambda a: jax.device_put(a, NamedSharding(mesh, P(AXIS)))
        return SparseMatrix(put(values), put(rows), put(cols), (n_pad, X.shape[1]), X.rows_sorted)
    spec = P(AXIS, *([None] * (np.ndim(X) - 1)))
    return jax.device_put(_pad_rows(X, n_pad), NamedSharding(mesh, spec))


def shard_weights(w, mesh: Mesh, n_pad: int):
    """Per-sample weights ``(folds, n)`` padded with zeros to ``(folds, n_pad)``, split over samples."""
    w = np.asarray(w)
    w = np.pad(w, [(0, 0), (0, n_pad - w.shape[1])])
    return jax.device_put(w, NamedSharding(mesh, P(None, AXIS)))


def replicate(tree, mesh: Mesh):
    """Every leaf of ``tree`` on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_splits(splits, mesh: Mesh, cold_params):
    """The :class:`~hyperopt.bilevel.Splits` with their inner and outer data split over
    samples (padded with weight-zero rows); ``cold_params(n_pad, folds)`` gives the inner
    start for ``n_pad`` inner samples (per-sample parameters such as the SVM dual's grow with
    the padding). The validation split of the per-step metrics is replicated."""
    X, y = splits.inner
    n_in = padded(y.shape[0], mesh)
    inner = (shard_rows(X, mesh, n_in), shard_rows(y, mesh, n_in))
    if splits.outer[1] is splits.inner[1]:  # k folds: one design for both
        outer, n_out = inner, n_in
    else:
        n_out = padded(splits.outer[1].shape[0], mesh)
        outer = (shard_rows(splits.outer[0], mesh, n_out), shard_rows(splits.outer[1], mesh, n_out))
    return splits._replace(
        inner=inner, outer=outer, inner_w=shard_weights(splits.inner_w, mesh, n_in),
        outer_w=shard_weights(splits.outer_w, mesh, n_out),
        cold_params=replicate(cold_params(n_in, splits.n_folds), mesh),
        val=None if splits.val is None else replicate(splits.val, mesh))


def shard_refit(X, y, mesh: Mesh):
    """The refit's design and targets split over samples, and its weights (one per real
    sample, zero for the padding)."""
    n = y.shape[0]
    n_pad = padded(n, mesh)
    w = np.zeros(n_pad, X.dtype)
    w[:n] = 1
    w = jax.device_put(w, NamedSharding(mesh, P(AXIS)))
    return shard_rows(X, mesh, n_pad), shard_rows(y, mesh, n_pad), w
