"""Datasets split into train / validation / test sets for hyperparameter optimization.

The inner problem is fitted on ``train``, the outer objective is measured on ``val``, and
``test`` is held out for the final report. Splits are seeded and stratified for
classification; features are standardized with statistics of the training split only.

Sparse data (svmlight files, ``scipy.sparse`` NPZ files, ``synthetic_sparse``) stay
sparse from the file to the device: each split's ``X`` is a
:class:`hyperopt.linop.SparseMatrix`, and standardization only scales its columns.

Example::

    >>> ds = load_dataset("diabetes", seed=0, dtype="float32")
    >>> ds.X_train.shape, ds.X_val.shape, ds.X_test.shape
    ((266, 10), (88, 10), (88, 10))
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import numbers
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import scipy.sparse
import sklearn.datasets
from sklearn.model_selection import train_test_split

from hyperopt import linop
from hyperopt.linop import SparseMatrix
from hyperopt.synthetic import SPARSE_SHAPES, make_sparse_text

__all__ = ["DATASETS", "TASKS", "DataError", "Dataset", "load_dataset"]

TASKS = ("regression", "binary", "multiclass")

_BUNDLED = {
    "diabetes": (sklearn.datasets.load_diabetes, "regression"),
    "breast_cancer": (sklearn.datasets.load_breast_cancer, "binary"),
    "digits": (sklearn.datasets.load_digits, "multiclass"),
    "wine": (sklearn.datasets.load_wine, "multiclass"),
    "iris": (sklearn.datasets.load_iris, "multiclass"),
}
_GENERATORS = {
    "make_regression": sklearn.datasets.make_regression,
    "make_classification": sklearn.datasets.make_classification,
}
DATASETS = (*_BUNDLED, *_GENERATORS, "synthetic_sparse", "file")


class DataError(ValueError):
    """A dataset cannot be loaded as asked; the message names the bad value and the fix."""


_SPLIT_FIELDS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
_META_FIELDS = ("name", "task", "n_classes", "feature_names", "image_shape", "y_mean", "y_scale")


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=_SPLIT_FIELDS, meta_fields=_META_FIELDS)
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train / validation / test arrays (pytree leaves) with static metadata.

    Attributes:
      X_train, X_val, X_test: features, shape ``(n_split, n_features)``, float32 or float64:
        dense ``jax.Array`` objects, or :class:`~hyperopt.linop.SparseMatrix` objects for
        sparse data (``sparse``); compute with them through ``X @ w``, ``X.T @ r`` and
        :mod:`hyperopt.linop`, which take both.
      y_train, y_val, y_test: targets, shape ``(n_split,)``; float for regression, int32
        labels ``0..n_classes-1`` for classification.
      name: dataset name (the file name for ``load_dataset("file", ...)``).
      task: ``"regression"``, ``"binary"`` or ``"multiclass"``.
      n_classes: number of classes; 0 for regression.
      feature_names: one name per feature column, or ``None``.
      image_shape: shape of one sample as an image, e.g. ``(8, 8)`` for digits, or ``None``.
      y_mean, y_scale: regression targets were mapped to ``(y - y_mean) / y_scale``;
        predictions in original units are ``y_mean + y_scale * prediction``.

    Example::

        >>> ds = load_dataset("iris", dtype="float32")
        >>> X, y = ds.train
        >>> ds.n_features, ds.n_classes, X.dtype, y.dtype
        (4, 3, dtype('float32'), dtype('int32'))
    """

    X_train: linop.Matrix
    y_train: jax.Array
    X_val: linop.Matrix
    y_val: jax.Array
    X_test: linop.Matrix
    y_test: jax.Array
    name: str
    task: str
    n_classes: int
    feature_names: tuple[str, ...] | None = None
    image_shape: tuple[int, ...] | None = None
    y_mean: float = 0.0
    y_scale: float = 1.0

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_val(self) -> int:
        return self.X_val.shape[0]

    @property
    def n_test(self) -> int:
        return self.X_test.shape[0]

    @property
    def sparse(self) -> bool:
        """Whether the features are :class:`~hyperopt.linop.SparseMatrix` objects."""
        return linop.is_sparse(self.X_train)

    @property
    def nnz(self) -> int:
        """Stored feature entries over the three splits (``n * n_features`` if dense)."""
        return sum(linop.nnz(X) for X in (self.X_train, self.X_val, self.X_test))

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays (features with their indices, and targets)."""
        return (sum(linop.nbytes(X) for X in (self.X_train, self.X_val, self.X_test))
                + sum(y.nbytes for y in (self.y_train, self.y_val, self.y_test)))

    @property
    def train(self) -> tuple[jax.Array, jax.Array]:
        return self.X_train, self.y_train

    @property
    def val(self) -> tuple[jax.Array, jax.Array]:
        return self.X_val, self.y_val

    @property
    def test(self) -> tuple[jax.Array, jax.Array]:
        return self.X_test, self.y_test

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, task={self.task!r}, n_classes={self.n_classes}, "
                f"n_features={self.n_features}, n_train={self.n_train}, n_val={self.n_val}, "
                f"n_test={self.n_test}, dtype={self.X_train.dtype}"
                + (f", sparse, nnz={self.nnz}" if self.sparse else "") + ")")


def load_dataset(name: str, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0, standardize: bool = True, dtype: str = "float64",
                 task: str | None = None, sparse: bool | None = None, **options) -> Dataset:
    """Loads a dataset and splits it into train / validation / test sets.

    Split sizes are ``round(val_fraction * n)`` and ``round(test_fraction * n)``; training
    gets the rest. With ``standardize``, each dense feature is mapped to
    ``(x - mean) / std`` using training statistics (constant features are only centred),
    and so are regression targets (see ``Dataset.y_mean`` / ``y_scale``). Sparse features
    are only divided by their training std (zeros included; constant columns by 1) and
    never centred, which would fill them in: scikit-learn's
    ``StandardScaler(with_mean=False)``. Class labels become int32 ``0..K-1``.

    Args:
      name: one of :data:`DATASETS`: scikit-learn's bundled ``diabetes``, ``breast_cancer``,
        ``digits``, ``wine``, ``iris``; the generators ``make_regression`` and
        ``make_classification`` (``options`` go to scikit-learn, ``random_state``
        defaults to ``seed``); ``synthetic_sparse``, text-like sparse data with a planted
        sparse truth (:func:`hyperopt.synthetic.make_sparse_text`), with options
        ``shape`` (``rcv1``, ``real_sim`` or ``news20``: their sizes, density and usual
        task), ``n_samples``/``n_features``/``density`` (override the shape's),
        ``scale`` (multiplies both sizes, e.g. 0.05 for a small version), ``n_informative``,
        ``snr`` and ``random_state`` (default ``seed``); or ``file``, with options ``path``
        (``.csv``, ``.npz``, or svmlight ``.svm``/``.svmlight``/``.libsvm``/``.txt``),
        ``target`` for CSV (header name or column index, default last column),
        ``x_key``/``y_key`` for NPZ (default ``"X"``/``"y"``; features of shape
        ``(n, h, w)`` set ``image_shape``; an NPZ in ``scipy.sparse.save_npz``'s layout is
        a sparse ``X``, with its targets under ``y_key`` in the same archive or in the
        file ``y_path`` (``.npy`` or text, one per line)), ``n_features``/``zero_based``
        for svmlight (as in ``sklearn.datasets.load_svmlight_file``).
      val_fraction, test_fraction: fractions of samples in (0, 1), summing to less than 1.
      seed: seed of the split.
      standardize: standardize features (and regression targets) on training statistics.
      dtype: ``"float64"`` (needs ``jax_enable_x64``) or ``"float32"``.
      task: ``"regression"``, ``"binary"`` or ``"multiclass"``; checked against the
        targets. Default: the dataset's own task; for files, ``regression`` unless every
        target is an integer.
      sparse: ``None`` keeps the storage of the source (sparse for svmlight, sparse NPZ
        and ``synthetic_sparse``, dense otherwise); ``True`` or ``False`` converts.

    Returns:
      A :class:`Dataset`; its ``X_*`` are :class:`~hyperopt.linop.SparseMatrix` objects
      when ``Dataset.sparse``.

    Raises:
      DataError: on any bad name, option, file, value or split.

    Example::

        >>> ds = load_dataset("make_classification", n_samples=50, n_features=4, seed=1,
        ...                   dtype="float32")
        >>> ds.n_train, ds.n_val, ds.n_test, ds.task
        (30, 10, 10, 'binary')
        >>> load_dataset("synthetic_sparse", shape="rcv1", scale=0.05).X_train
        SparseMatrix(shape=(608, 2362), nnz=2261, dtype=float64)
    """
    dtype = _check_dtype(dtype)
    _check_fractions(val_fraction, test_fraction)
    if task not in (None, *TASKS):
        raise DataError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if sparse not in (None, True, False):
        raise DataError(f"sparse={sparse!r}; use true, false or null (keep the source's)")
    raw = _load_raw(name, seed, task, options)
    X, y, source = _with_storage(raw.X, sparse), raw.y, raw.source
    _check_finite(X, y, source, raw.feature_names)
    task = task or raw.task or _infer_task(y)
    y, n_classes = _encode_targets(y, task, source)
    splits = _split_indices(y, n_classes, val_fraction, test_fraction, seed, source)

    y_mean, y_scale = (_standard_stats(y, splits[0]) if standardize and not n_classes
                       else (0.0, 1.0))
    x_split = _sparse_split if scipy.sparse.issparse(X) else _dense_split
    arrays, stats = [], None
    for split, idx in zip(("train", "val", "test"), splits, strict=True):
        X_split, stats = x_split(X, idx, stats, standardize, dtype)  # stats from train
        with np.errstate(over="ignore"):  # a float32 overflow is reported just below
            y_split = y[idx] if n_classes else ((y[idx] - y_mean) / y_scale).astype(dtype)
        _check_finite(X_split, y_split, f"{source} ({split} split as {dtype.__name__})",
                      raw.feature_names)
        device_X = (SparseMatrix.from_scipy(X_split, dtype) if scipy.sparse.issparse(X_split)
                    else jax.device_put(X_split))  # on CPU: adopts the aligned X_split
        arrays += [device_X, jax.device_put(y_split)]
        del X_split
    return Dataset(*arrays, name=raw.name, task=task, n_classes=n_classes,
                   feature_names=raw.feature_names, image_shape=raw.image_shape,
                   y_mean=float(y_mean), y_scale=float(y_scale))


def _with_storage(X, sparse):
    """``X`` as CSR (canonical: sorted, no duplicates) or dense, as ``sparse`` asks."""
    if sparse is False and scipy.sparse.issparse(X):
        return X.toarray()  # asked for
    if sparse is True or scipy.sparse.issparse(X):
        X = scipy.sparse.csr_matrix(X)
        if not X.has_canonical_format:
            X.sum_duplicates()
        return X
    return X


def _dense_split(X, idx, stats, standardize, dtype):
    """Rows ``idx`` of a dense ``X``, standardized by ``stats`` (computed on these rows
    when ``None``: the training split), written block by block into the one array that
    becomes the device array (no full-size temporaries)."""
    if standardize and stats is None:
        stats = _standard_stats(X, idx)
    out = _aligned_empty((len(idx), *X.shape[1:]), dtype)
    for start in range(0, len(idx), _ROWS_PER_BLOCK):
        block = X[idx[start:start + _ROWS_PER_BLOCK]].astype(np.float64, copy=False)  # a copy
        if standardize:
            block -= stats[0]
            block /= stats[1]
        with np.errstate(over="ignore"):  # a float32 overflow is reported by the caller
            out[start:start + len(block)] = block
    return out, stats


def _aligned_empty(shape, dtype, alignment=64):
    """An uninitialized array whose data starts on a 64-byte boundary, which
    ``jax.device_put`` on CPU adopts without a copy (a copy elsewhere: same values)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + alignment, np.uint8)
    offset = -buffer.ctypes.data % alignment
    return buffer[offset:offset + size].view(dtype).reshape(shape)


def _sparse_split(X, idx, stats, standardize, dtype):
    """Rows ``idx`` of a CSR ``X`` (CSR row slicing, no densifying), columns divided by
    the training std in ``stats`` (computed on these rows when ``None``)."""
    X_split = X[idx]
    X_split.data = X_split.data.astype(np.float64, copy=False)
    if standardize:
        if stats is None:
            stats = _sparse_column_scale(X_split)
        X_split.data /= stats[X_split.indices]
    with np.errstate(over="ignore"):
        X_split.data = X_split.data.astype(dtype, copy=False)
    return X_split, stats


class _Raw(NamedTuple):
    X: np.ndarray | scipy.sparse.csr_matrix  # (n, n_features)
    y: np.ndarray  # (n,) float64
    task: str | None  # None: inferred from y
    feature_names: tuple[str, ...] | None
    image_shape: tuple[int, ...] | None
    name: str
    source: str  # how error messages refer to the data


def _check_dtype(dtype):
    try:
        dtype_name = np.dtype(dtype).name
    except TypeError:
        dtype_name = None
    if dtype_name not in ("float32", "float64"):
        raise DataError(f"unknown dtype {dtype!r}; use 'float32' or 'float64'")
    if dtype_name == "float64" and jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        raise DataError("dtype='float64' needs 64-bit JAX: call "
                        "jax.config.update('jax_enable_x64', True) first, or pass dtype='float32'")
    return np.dtype(dtype_name).type


def _check_fractions(val_fraction, test_fraction):
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise DataError(f"{label}={fraction!r} must be a number in (0, 1)")
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction = {val_fraction + test_fraction:g} "
                        "must be < 1 to leave training samples")


def _load_raw(name, seed, task, options) -> _Raw:
    if name in _BUNDLED:
        if options:
            raise DataError(f"dataset {name!r} takes no options; got: {', '.join(options)}")
        loader, task = _BUNDLED[name]
        bunch = loader()
        X = bunch.get("images", bunch.data)  # digits: (n, 8, 8) gives image_shape
        return _as_raw(X, bunch.target, task, tuple(bunch.feature_names), name, name)
    if name in _GENERATORS:
        kwargs = {"random_state": seed, **options}
        try:
            X, y = _GENERATORS[name](**kwargs)
        except (TypeError, ValueError) as e:
            raise DataError(f"{name} with options {kwargs} failed: {e}") from e
        return _as_raw(X, y, "regression" if name == "make_regression" else None, None, name,
                       name)
    if name == "synthetic_sparse":
        return _load_synthetic_sparse(seed, task, options)
    if name == "file":
        return _load_file(options)
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def _as_raw(X, y, task, feature_names, name, source) -> _Raw:
    """Checks shapes and dtypes; flattens image features ``(n, h, w)`` to ``(n, h * w)``;
    keeps ``scipy.sparse`` features sparse (as CSR)."""
    X = scipy.sparse.csr_matrix(X) if scipy.sparse.issparse(X) else np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim != 1 or X.shape[0] != len(y):
        raise DataError(f"{source}: need features of shape (n_samples, n_features) and targets "
                        f"of shape (n_samples,), got {X.shape} and {y.shape}")
    for what, array in (("features", X), ("targets", y)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise DataError(f"{source}: {what} must be numeric, got dtype {array.dtype}")
    if scipy.sparse.issparse(X):
        return _Raw(X, y.astype(np.float64), task, feature_names, None, name, source)
    image_shape = tuple(X.shape[1:]) if X.ndim > 2 else None
    return _Raw(X.reshape(len(X), -1), y.astype(np.float64), task, feature_names, image_shape,
                name, source)


_SYNTHETIC_SPARSE_OPTIONS = ("shape", "n_samples", "n_features", "density", "scale",
                             "n_informative", "snr", "random_state")


def _load_synthetic_sparse(seed, task, options) -> _Raw:
    options = {k: v for k, v in options.items() if v is not None}  # None: default
    unknown = set(options) - set(_SYNTHETIC_SPARSE_OPTIONS)
    if unknown:
        raise DataError(f"option(s) {', '.join(sorted(unknown))} do not apply to "
                        f"synthetic_sparse; allowed: {', '.join(_SYNTHETIC_SPARSE_OPTIONS)}")
    shape = options.get("shape")
    if shape is not None and shape not in SPARSE_SHAPES:
        raise DataError(f"unknown synthetic_sparse shape {shape!r}; choose one of: "
                        f"{', '.join(SPARSE_SHAPES)}")
    base = SPARSE_SHAPES[shape]._asdict() if shape else {}
    sizes = {k: options.get(k, base.get(k)) for k in ("n_samples", "n_features", "density")}
    missing = [k for k, v in sizes.items() if v is None]
    if missing:
        raise DataError(f"synthetic_sparse needs shape= ({', '.join(SPARSE_SHAPES)}) or "
                        f"{', '.join(missing)}")
    scale = options.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
        raise DataError(f"scale={scale!r} must be a positive number")
    if task == "multiclass":
        raise DataError("synthetic_sparse makes regression or binary data; got task='multiclass'")
    task = task or base.get("task", "regression")
    try:
        sample = make_sparse_text(
            max(1, round(sizes["n_samples"] * scale)), max(1, round(sizes["n_features"] * scale)),
            sizes["density"], task=task, n_informative=options.get("n_informative"),
            snr=options.get("snr", 3.0), seed=options.get("random_state", seed))
    except ValueError as e:
        raise DataError(f"synthetic_sparse: {e}") from e
    name = f"synthetic_sparse_{shape}" if shape else "synthetic_sparse"
    return _as_raw(sample.X, sample.y, task, None, name, name)


def _read_csv(path, target=-1):
    with path.open(newline="") as f:
        lines = [(number, row) for number, row in enumerate(csv.reader(f), 1) if row]
    header = None
    if lines and not all(_is_number(cell) for cell in lines[0][1]):
        header = [cell.strip() for cell in lines[0][1]]
        lines = lines[1:]
    if not lines:
        raise DataError(f"{path}: no data rows")
    names = header or [str(j) for j in range(len(lines[0][1]))]
    for number, row in lines:
        if len(row) != len(names):
            raise DataError(f"{path} line {number}: {len(row)} cells, expected {len(names)}")
    if isinstance(target, str) and target in names:
        t = names.index(target)
    elif isinstance(target, int) and -len(names) <= target < len(names):
        t = target % len(names)
    else:
        raise DataError(f"target column {target!r} not found in {path}; columns: "
                        f"{', '.join(names) if header else f'0..{len(names) - 1} (no header)'}")
    values = np.empty((len(lines), len(names)))
    for i, (number, row) in enumerate(lines):
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(f"{path} line {number}, column {names[j]!r}: "
                                f"non-numeric value {cell!r}") from None
    feature_names = tuple(n for j, n in enumerate(names) if j != t) if header else None
    return np.delete(values, t, axis=1), values[:, t], feature_names


def _read_npz(path, x_key="X", y_key="y", y_path=None):
    """A dense ``x_key`` array, or a ``scipy.sparse.save_npz`` archive (CSR/CSC/COO...);
    targets from ``y_key`` or the file ``y_path``."""
    if not zipfile.is_zipfile(path):  # else np.load tries pickle and asks for allow_pickle
        raise DataError(f"cannot read {path}: not an NPZ (zip) archive")
    with np.load(path, allow_pickle=False) as arrays:
        sparse_layout = "format" in arrays.files and x_key not in arrays.files
        if not sparse_layout and x_key not in arrays.files:
            raise DataError(f"{path} has no array {x_key!r} (x_key); arrays: "
                            f"{', '.join(arrays.files)} (nor is it a scipy.sparse.save_npz archive)")
        if y_path is None and y_key not in arrays.files:
            hint = (" (a scipy.sparse.save_npz archive holds no targets: add them as "
                    f"{y_key!r} or pass y_path)" if sparse_layout else "")
            raise DataError(f"{path} has no array {y_key!r} (y_key){hint}; "
                            f"arrays: {', '.join(arrays.files)}")
        y = _read_targets(Path(y_path).expanduser()) if y_path is not None else arrays[y_key]
        if sparse_layout:
            return scipy.sparse.load_npz(path), y, None
        return arrays[x_key], y, None


def _read_targets(path):
    if not path.is_file():
        raise DataError(f"targets file not found: {path}")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    return np.loadtxt(path, ndmin=1)


def _read_svmlight(path, n_features=None, zero_based="auto"):
    X, y = sklearn.datasets.load_svmlight_file(str(path), n_features=n_features,
                                               zero_based=zero_based)
    return X, y, None  # CSR, float64


_SVMLIGHT = (_read_svmlight, ("n_features", "zero_based"))
_FILE_READERS = {  # suffix: (reader, its options besides path)
    ".csv": (_read_csv, ("target",)),
    ".npz": (_read_npz, ("x_key", "y_key", "y_path")),
    ".svm": _SVMLIGHT, ".svmlight": _SVMLIGHT, ".libsvm": _SVMLIGHT, ".txt": _SVMLIGHT,
}


def _load_file(options) -> _Raw:
    if "path" not in options:
        raise DataError("dataset 'file' needs option path=<.csv, .npz or svmlight file>")
    path = Path(options["path"]).expanduser()
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in _FILE_READERS:
        raise DataError(f"unsupported file suffix {suffix!r} of {path}; "
                        f"supported: {', '.join(_FILE_READERS)}")
    reader, allowed = _FILE_READERS[suffix]
    kwargs = {k: v for k, v in options.items() if k != "path" and v is not None}  # None: default
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise DataError(f"option(s) {', '.join(sorted(unknown))} do not apply to {suffix} files;"
                        f" allowed: {', '.join(('path', *allowed))}")
    try:
        X, y, feature_names = reader(path, **kwargs)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as a {suffix} file: {e}") from e
    return _as_raw(X, y, None, feature_names, path.name, str(path))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _check_finite(X, y, source, feature_names):
    position = _first_non_finite(X)
    if position is not None:
        row, col, value = position
        column = feature_names[col] if feature_names else str(col)
        raise DataError(f"{source}: feature column {column!r} has non-finite value "
                        f"{value} at row {row}")
    bad = ~np.isfinite(y)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{source}: target has non-finite value {y[row]} at row {row}")


def _infer_task(y) -> str:
    if np.any(y != np.round(y)):
        return "regression"
    return "binary" if len(np.unique(y)) == 2 else "multiclass"


def _encode_targets(y, task, source):
    """Returns targets as float64 (regression) or int32 labels ``0..K-1``, and ``K``."""
    if task == "regression":
        return y, 0
    fractional = y != np.round(y)
    if fractional.any():
        row = int(np.argmax(fractional))
        raise DataError(f"{source}: target {y[row]:g} at row {row} is not a class label, so "
                        f"task {task!r} does not fit; pass task='regression'")
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{source}: all targets are {classes[0]:g}; task {task!r} needs at "
                        "least 2 classes")
    if task == "binary" and len(classes) > 2:
        raise DataError(f"{source}: task 'binary' needs 2 classes, found {len(classes)}; "
                        "pass task='multiclass'")
    return labels.astype(np.int32), len(classes)


def _split_indices(y, n_classes, val_fraction, test_fraction, seed, source):
    """Seeded (stratified if ``n_classes``) train / val / test index arrays."""
    n = len(y)
    n_val, n_test = int(val_fraction * n + 0.5), int(test_fraction * n + 0.5)
    need = max(n_classes, 1)
    for split, size in (("train", n - n_val - n_test), ("validation", n_val), ("test", n_test)):
        if size < need:
            raise DataError(
                f"{source}: {n} samples with val_fraction={val_fraction}, test_fraction="
                f"{test_fraction} leave {size} {split} samples; need at least {need}"
                + (f" (one per class, {n_classes} classes)" if n_classes else ""))
    stratify = y if n_classes else None
    if n_classes:
        counts = np.bincount(y)
        if counts.min() < 3:
            raise DataError(f"{source}: class {np.argmin(counts)} has {counts.min()} sample(s); "
                            "stratified train/validation/test splits need at least 3 per class")
    try:
        rest, test = train_test_split(np.arange(n), test_size=n_test, random_state=seed,
                                      stratify=stratify)
        train, val = train_test_split(rest, test_size=n_val, random_state=seed,
                                      stratify=None if stratify is None else y[rest])
    except ValueError as e:  # too few members of a class left after the test split
        raise DataError(f"{source}: cannot stratify {n} samples into train/validation/test: "
                        f"{e}") from e
    return train, val, test


_ROWS_PER_BLOCK = 4096  # row blocks bound the temporaries of dense checks and statistics


def _first_non_finite(X):
    """``(row, column, value)`` of the first NaN/inf in row-major order, or ``None``;
    temporaries of at most one row block."""
    if scipy.sparse.issparse(X):
        bad = np.flatnonzero(~np.isfinite(X.data))
        if not len(bad):
            return None
        row = int(np.searchsorted(X.indptr, bad[0], side="right")) - 1
        return row, int(X.indices[bad[0]]), X.data[bad[0]]
    if not np.issubdtype(X.dtype, np.inexact):
        return None
    for start in range(0, len(X), _ROWS_PER_BLOCK):
        bad = ~np.isfinite(X[start:start + _ROWS_PER_BLOCK])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return start + int(row), int(col), X[start + row, col]
    return None


def _standard_stats(a, idx=None):
    """Means and standard deviations (float64) of the rows ``idx`` (default all) of ``a``,
    per column; constant columns get scale 1, not 0 (no NaN). Temporaries of one row
    block, not of ``a``'s size."""
    a = np.asarray(a)
    idx = np.arange(len(a)) if idx is None else idx
    blocks = [idx[start:start + _ROWS_PER_BLOCK] for start in range(0, len(idx), _ROWS_PER_BLOCK)]
    total, high, low = np.zeros(a.shape[1:]), np.full(a.shape[1:], -np.inf), np.full(a.shape[1:], np.inf)
    for rows in blocks:
        block = a[rows].astype(np.float64, copy=False)
        total += block.sum(axis=0)
        np.maximum(high, block.max(axis=0), out=high)
        np.minimum(low, block.min(axis=0), out=low)
    mean = total / len(idx)
    squares = np.zeros(a.shape[1:])
    for rows in blocks:
        squares += np.square(a[rows] - mean).sum(axis=0)
    return mean, np.where(high - low > 0, np.sqrt(squares / len(idx)), 1.0)


def _sparse_column_scale(X):
    """Column standard deviations of a CSR matrix, implicit zeros included (what
    ``StandardScaler(with_mean=False)`` divides by); constant columns get 1."""
    n, p = X.shape
    counts = np.bincount(X.indices, minlength=p)
    mean = np.bincount(X.indices, weights=X.data, minlength=p) / n
    squares = (np.bincount(X.indices, weights=np.square(X.data - mean[X.indices]), minlength=p)
               + (n - counts) * mean ** 2)  # the implicit zeros
    high, low = np.zeros(p), np.zeros(p)  # with the implicit zeros, where a column has any
    full = counts == n
    high[full], low[full] = -np.inf, np.inf
    np.maximum.at(high, X.indices, X.data)
    np.minimum.at(low, X.indices, X.data)
    return np.where(high - low > 0, np.sqrt(squares / n), 1.0)
