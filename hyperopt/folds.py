"""Outer-loss splits: hold-out, seeded k folds, user-given folds, scikit-learn splitters.

The outer loop sees every split as 0/1 sample weights with a leading fold axis: inner
(training) weights ``(folds, n)`` and outer (validation) weights ``(folds, n)``, so that
hold-out and k-fold outer losses share one compiled step. :func:`fold_masks` turns what a
user gives into those weights; :func:`load_folds` reads fold ids from a file.

Cross-validation runs over train ∪ validation, in that order (``X_train`` rows first,
then ``X_val``, as :func:`hyperopt.data.load_dataset` returns them).

Example:
    >>> inner, outer = fold_masks(KFold(5, shuffle=True, random_state=0), X, y)
    >>> inner.shape, outer.shape
    ((5, 500), (5, 500))
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["AUTO_CV_FOLDS", "AUTO_CV_MAX_SAMPLES", "fold_masks", "load_folds", "resolve_cv"]

AUTO_CV_FOLDS = 5
AUTO_CV_MAX_SAMPLES = 2000  # "auto": k folds up to this many samples in train ∪ val


def resolve_cv(cv, n_samples: int, supports_cv: bool):
    """``cv`` with ``"auto"`` resolved: 5 folds for a problem that has a cross-validated
    outer loss and at most 2000 samples in train ∪ val, else 0 (hold-out)."""
    if isinstance(cv, str) and cv == "auto":
        return AUTO_CV_FOLDS if supports_cv and n_samples <= AUTO_CV_MAX_SAMPLES else 0
    return cv


def is_holdout(cv) -> bool:
    return isinstance(cv, (int, np.integer)) and not isinstance(cv, bool) and cv == 0


def fold_masks(cv, X, y, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer 0/1 weights, each ``(folds, n)``, for k-fold cross-validation.

    Args:
      cv: an integer ``k >= 2`` (a seeded random assignment of samples to ``k`` folds of
        equal size ±1), a sequence/array of one fold id per sample (any integers; each id
        is one fold, validated on its samples and trained on the others), or a
        scikit-learn splitter (anything with ``split(X, y)`` yielding
        ``(train_indices, validation_indices)``, e.g. ``KFold``, ``StratifiedKFold``,
        ``ShuffleSplit``; samples in neither set are left out of that fold).
      X, y: the samples of train ∪ validation, shapes ``(n, d)`` and ``(n,)``; ``X`` dense
        or a :class:`~hyperopt.linop.SparseMatrix`.
      seed: seed of the integer assignment.

    Raises:
      ValueError: a bad ``cv`` (the message names it and what is allowed).
    """
    n = len(y)
    if isinstance(cv, (bool, str)) or cv is None:
        raise ValueError(f"cv_folds={cv!r}; allowed: 0 (hold-out), an integer >= 2, fold ids "
                         "(one per sample), or a splitter with split(X, y)")
    if isinstance(cv, (int, np.integer)):
        if cv < 2:
            raise ValueError(f"cv_folds={cv}; allowed: 0 (hold-out) or an integer >= 2")
        if cv > n:
            raise ValueError(f"cv_folds={cv} is more folds than the {n} samples of train ∪ val")
        fold = np.random.default_rng(seed).permutation(n) % cv
        outer = fold[None, :] == np.arange(cv)[:, None]
        return (~outer).astype(np.float64), outer.astype(np.float64)
    if hasattr(cv, "split"):
        # splitters look at X only for its length (sparse X: as a host CSR matrix)
        host_X = X.to_scipy() if hasattr(X, "to_scipy") else np.asarray(X)
        pairs = list(cv.split(host_X, np.asarray(y)))
        if not pairs:
            raise ValueError(f"cv_splitter {cv!r} gave no splits")
        inner, outer = np.zeros((len(pairs), n)), np.zeros((len(pairs), n))
        for k, (train, val) in enumerate(pairs):
            inner[k, np.asarray(train)] = 1.0
            outer[k, np.asarray(val)] = 1.0
        _check_masks(inner, outer, f"cv_splitter {cv!r}")
        return inner, outer
    ids = np.asarray(cv)
    if ids.ndim != 1 or ids.shape[0] != n or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"fold ids of shape {ids.shape} and dtype {ids.dtype}; allowed: one "
                         f"integer fold id per sample of train ∪ val ({n} samples)")
    labels = np.unique(ids)
    if len(labels) < 2:
        raise ValueError(f"fold ids hold {len(labels)} distinct fold; allowed: at least 2 folds")
    outer = ids[None, :] == labels[:, None]
    return (~outer).astype(np.float64), outer.astype(np.float64)


def _check_masks(inner, outer, source: str) -> None:
    for k in range(inner.shape[0]):
        if not inner[k].any() or not outer[k].any():
            raise ValueError(f"{source}: fold {k} has {int(inner[k].sum())} training and "
                             f"{int(outer[k].sum())} validation samples; allowed: at least one each")
        if (inner[k] * outer[k]).any():
            raise ValueError(f"{source}: fold {k} trains and validates on the same sample")


def load_folds(path: str | os.PathLike) -> np.ndarray:
    """Fold ids from a file: ``.npy`` (a 1-D integer array), ``.npz`` (its array ``folds``,
    or its only array), or text (``.txt``/``.csv``: one integer per line).

    Raises:
      ValueError: the file is missing, unreadable, or does not hold 1-D integers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"cv_folds={str(path)!r}: file not found; allowed: an integer or a "
                         ".npy/.npz/.txt/.csv file of fold ids")
    try:
        if path.suffix == ".npy":
            ids = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            if not zipfile.is_zipfile(path):
                raise ValueError("not an NPZ (zip) archive")
            with np.load(path, allow_pickle=False) as arrays:
                names = arrays.files
                if "folds" not in names and len(names) != 1:
                    raise ValueError(f"holds arrays {', '.join(names)}; allowed: one named "
                                     "'folds', or a single array")
                ids = arrays["folds" if "folds" in names else names[0]]
        else:
            ids = np.loadtxt(path, dtype=np.float64, ndmin=1, delimiter=",")
    except (OSError, ValueError) as e:
        raise ValueError(f"cv_folds={str(path)!r}: cannot read fold ids ({e})") from None
    ids = np.asarray(ids)
    if np.issubdtype(ids.dtype, np.floating) and np.all(ids == np.round(ids)):
        ids = ids.astype(np.int64)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"cv_folds={str(path)!r}: holds shape {ids.shape}, dtype {ids.dtype}; "
                         "allowed: one integer fold id per sample of train ∪ val")
    return ids
