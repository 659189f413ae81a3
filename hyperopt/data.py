"""Datasets split into train / validation / test sets for hyperparameter optimization.

The inner problem is fitted on ``train``, the outer objective is measured on ``val``, and
``test`` is held out for the final report. Splits are seeded and stratified for
classification; features are standardized with statistics of the training split only.

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
import jax.numpy as jnp
import numpy as np
import sklearn.datasets
from sklearn.model_selection import train_test_split

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
DATASETS = (*_BUNDLED, *_GENERATORS, "file")


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
      X_train, X_val, X_test: features, shape ``(n_split, n_features)``, float32 or float64.
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

    X_train: jax.Array
    y_train: jax.Array
    X_val: jax.Array
    y_val: jax.Array
    X_test: jax.Array
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
                f"n_test={self.n_test}, dtype={self.X_train.dtype})")


def load_dataset(name: str, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0, standardize: bool = True, dtype: str = "float64",
                 task: str | None = None, **options) -> Dataset:
    """Loads a dataset and splits it into train / validation / test sets.

    Split sizes are ``round(val_fraction * n)`` and ``round(test_fraction * n)``; training
    gets the rest. With ``standardize``, each feature is mapped to ``(x - mean) / std``
    using training statistics (constant features are only centred), and so are regression
    targets (see ``Dataset.y_mean`` / ``y_scale``). Class labels become int32 ``0..K-1``.

    Args:
      name: one of :data:`DATASETS`: scikit-learn's bundled ``diabetes``, ``breast_cancer``,
        ``digits``, ``wine``, ``iris``; the generators ``make_regression`` and
        ``make_classification`` (``options`` go to scikit-learn, ``random_state``
        defaults to ``seed``); or ``file``, with options ``path`` (``.csv``, ``.npz``, or
        svmlight ``.svm``/``.svmlight``/``.libsvm``/``.txt``), ``target`` for CSV (header
        name or column index, default last column), ``x_key``/``y_key`` for NPZ (default
        ``"X"``/``"y"``; features of shape ``(n, h, w)`` set ``image_shape``).
      val_fraction, test_fraction: fractions of samples in (0, 1), summing to less than 1.
      seed: seed of the split.
      standardize: standardize features (and regression targets) on training statistics.
      dtype: ``"float64"`` (needs ``jax_enable_x64``) or ``"float32"``.
      task: ``"regression"``, ``"binary"`` or ``"multiclass"``; checked against the
        targets. Default: the dataset's own task; for files, ``regression`` unless every
        target is an integer.

    Returns:
      A :class:`Dataset`.

    Raises:
      DataError: on any bad name, option, file, value or split.

    Example::

        >>> ds = load_dataset("make_classification", n_samples=50, n_features=4, seed=1,
        ...                   dtype="float32")
        >>> ds.n_train, ds.n_val, ds.n_test, ds.task
        (30, 10, 10, 'binary')
    """
    dtype = _check_dtype(dtype)
    _check_fractions(val_fraction, test_fraction)
    if task not in (None, *TASKS):
        raise DataError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    raw = _load_raw(name, seed, options)
    X, y, source = raw.X, raw.y, raw.source
    _check_finite(X, y, source, raw.feature_names)
    task = task or raw.task or _infer_task(y)
    y, n_classes = _encode_targets(y, task, source)
    splits = _split_indices(y, n_classes, val_fraction, test_fraction, seed, source)

    X_train, y_train = X[splits[0]], y[splits[0]]
    x_mean, x_scale = _standard_stats(X_train) if standardize else (0.0, 1.0)
    y_mean, y_scale = (_standard_stats(y_train) if standardize and not n_classes
                       else (0.0, 1.0))
    arrays = []
    for split, idx in zip(("train", "val", "test"), splits, strict=True):
        with np.errstate(over="ignore"):  # a float32 overflow is reported just below
            X_split = ((X[idx] - x_mean) / x_scale).astype(dtype)
            y_split = y[idx] if n_classes else ((y[idx] - y_mean) / y_scale).astype(dtype)
        _check_finite(X_split, y_split, f"{source} ({split} split as {dtype.__name__})",
                      raw.feature_names)
        arrays += [jnp.asarray(X_split), jnp.asarray(y_split)]
    return Dataset(*arrays, name=raw.name, task=task, n_classes=n_classes,
                   feature_names=raw.feature_names, image_shape=raw.image_shape,
                   y_mean=float(y_mean), y_scale=float(y_scale))


class _Raw(NamedTuple):
    X: np.ndarray  # (n, n_features)
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


def _load_raw(name, seed, options) -> _Raw:
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
    if name == "file":
        return _load_file(options)
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def _as_raw(X, y, task, feature_names, name, source) -> _Raw:
    """Checks shapes and dtypes; flattens image features ``(n, h, w)`` to ``(n, h * w)``."""
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim != 1 or len(X) != len(y):
        raise DataError(f"{source}: need features of shape (n_samples, n_features) and targets "
                        f"of shape (n_samples,), got {X.shape} and {y.shape}")
    for what, array in (("features", X), ("targets", y)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise DataError(f"{source}: {what} must be numeric, got dtype {array.dtype}")
    image_shape = tuple(X.shape[1:]) if X.ndim > 2 else None
    return _Raw(X.reshape(len(X), -1), y.astype(np.float64), task, feature_names, image_shape,
                name, source)


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


def _read_npz(path, x_key="X", y_key="y"):
    if not zipfile.is_zipfile(path):  # else np.load tries pickle and asks for allow_pickle
        raise DataError(f"cannot read {path}: not an NPZ (zip) archive")
    with np.load(path, allow_pickle=False) as arrays:
        for option, key in (("x_key", x_key), ("y_key", y_key)):
            if key not in arrays.files:
                raise DataError(f"{path} has no array {key!r} ({option}); "
                                f"arrays: {', '.join(arrays.files)}")
        return arrays[x_key], arrays[y_key], None


def _read_svmlight(path):
    X, y = sklearn.datasets.load_svmlight_file(str(path))
    return X.toarray(), y, None


_SVMLIGHT = (_read_svmlight, ())
_FILE_READERS = {  # suffix: (reader, its options besides path)
    ".csv": (_read_csv, ("target",)),
    ".npz": (_read_npz, ("x_key", "y_key")),
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
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        column = feature_names[col] if feature_names else str(col)
        raise DataError(f"{source}: feature column {column!r} has non-finite value "
                        f"{X[row, col]} at row {row}")
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


def _standard_stats(a):
    """Column means and standard deviations; constant columns get scale 1, not 0 (no NaN)."""
    a = a.astype(np.float64)
    return a.mean(axis=0), np.where(np.ptp(a, axis=0) > 0, a.std(axis=0), 1.0)
