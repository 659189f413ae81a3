"""Tests of hyperopt.data: split sizes, stratification, standardization, files, errors.

Many tests put the row number in feature column 0 and load with ``standardize=False``, so
every loaded sample can be traced back to the array that was written.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from sklearn.datasets import dump_svmlight_file
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.preprocessing import StandardScaler

from hyperopt import linop
from hyperopt.data import DATASETS, DataError, Dataset, load_dataset
from hyperopt.linop import SparseMatrix
from hyperopt.synthetic import SPARSE_SHAPES, make_sparse_text


def _indexed_data(n=100, n_features=3, seed=0):
    """Features ``(n, n_features)`` with column 0 = row number; regression targets."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n), rng.normal(3.0, 2.0, (n, n_features - 1))])
    return X, rng.normal(5.0, 4.0, n)


def _save_npz(tmp_path, X, y, name="data.npz"):
    path = tmp_path / name
    np.savez(path, X=X, y=y)
    return path


def _rows(X_split):
    return np.asarray(X_split[:, 0]).astype(int)


def _save_csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("val_fraction, test_fraction", [(0.2, 0.2), (0.1, 0.3), (0.25, 0.05)])
def test_split_sizes_add_up_and_match_fractions(tmp_path, val_fraction, test_fraction):
    n = 101
    path = _save_npz(tmp_path, *_indexed_data(n))
    ds = load_dataset("file", path=path, val_fraction=val_fraction, test_fraction=test_fraction,
                      standardize=False)
    assert ds.n_train + ds.n_val + ds.n_test == n
    assert abs(ds.n_val - val_fraction * n) <= 0.5
    assert abs(ds.n_test - test_fraction * n) <= 0.5
    rows = np.concatenate([_rows(ds.X_train), _rows(ds.X_val), _rows(ds.X_test)])
    np.testing.assert_array_equal(np.sort(rows), np.arange(n))  # a partition of the rows


def test_same_seed_same_split_and_different_seed_different_split(tmp_path):
    path = _save_npz(tmp_path, *_indexed_data(60))
    a, b, c = (load_dataset("file", path=path, seed=s, standardize=False) for s in (3, 3, 4))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, f"X_{split}"), getattr(b, f"X_{split}"))
    assert set(_rows(a.X_val)) != set(_rows(c.X_val))


def test_stratification_keeps_class_proportions(tmp_path):
    X, _ = _indexed_data(100)
    y = np.repeat([0, 1, 2], [50, 30, 20])
    ds = load_dataset("file", path=_save_npz(tmp_path, X, y), seed=7)
    # 20 % of 50/30/20 per held-out split; the other 60 % in training.
    np.testing.assert_array_equal(np.bincount(ds.y_val), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(ds.y_test), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(ds.y_train), [30, 18, 12])


def test_labels_are_mapped_to_0_to_k_minus_1_in_sorted_order(tmp_path):
    X, _ = _indexed_data(60)
    raw_labels = np.tile([7.0, -1.0, 3.0], 20)
    ds = load_dataset("file", path=_save_npz(tmp_path, X, raw_labels), standardize=False)
    assert ds.task == "multiclass" and ds.n_classes == 3
    for X_split, y_split in (ds.train, ds.val, ds.test):
        assert y_split.dtype == jnp.int32
        expected = np.searchsorted([-1.0, 3.0, 7.0], raw_labels[_rows(X_split)])
        np.testing.assert_array_equal(y_split, expected)


# --------------------------------------------------------------------------------------
# Standardization
# --------------------------------------------------------------------------------------


def test_standardization_uses_training_statistics_only(tmp_path):
    X, y = _indexed_data(80)
    path = _save_npz(tmp_path, X, y)
    raw = load_dataset("file", path=path, standardize=False, seed=1)
    ds = load_dataset("file", path=path, seed=1)
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ds.y_train.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.y_train.std(), 1.0, rtol=1e-12)
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    for raw_X, X_split in ((raw.X_val, ds.X_val), (raw.X_test, ds.X_test)):
        np.testing.assert_allclose(X_split, (raw_X - mean) / std, rtol=1e-12)
        assert np.abs(X_split.mean(axis=0)).max() > 1e-3  # not re-fitted on this split
    # Regression targets can be mapped back to their original units.
    np.testing.assert_allclose(ds.y_mean + ds.y_scale * ds.y_test, raw.y_test, rtol=1e-12)
    np.testing.assert_allclose([ds.y_mean, ds.y_scale], [raw.y_train.mean(), raw.y_train.std()])


def test_constant_feature_gives_zeros_not_nan(tmp_path):
    X, y = _indexed_data(40)
    X[:, 1] = 0.1
    ds = load_dataset("file", path=_save_npz(tmp_path, X, y))
    for X_split, _ in (ds.train, ds.val, ds.test):
        assert np.all(np.isfinite(X_split))
        np.testing.assert_allclose(X_split[:, 1], 0.0, atol=1e-12)


def test_classification_labels_are_not_standardized():
    ds = load_dataset("iris")
    assert set(np.unique(ds.y_train)) == {0, 1, 2}
    assert (ds.y_mean, ds.y_scale) == (0.0, 1.0)


# --------------------------------------------------------------------------------------
# Built-in datasets, dtypes, pytree
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, task, n_classes, n_samples, n_features", [
    ("diabetes", "regression", 0, 442, 10),
    ("breast_cancer", "binary", 2, 569, 30),
    ("digits", "multiclass", 10, 1797, 64),
    ("wine", "multiclass", 3, 178, 13),
    ("iris", "multiclass", 3, 150, 4),
])
def test_bundled_datasets(name, task, n_classes, n_samples, n_features):
    ds = load_dataset(name)
    assert (ds.task, ds.n_classes, ds.n_features) == (task, n_classes, n_features)
    assert ds.n_train + ds.n_val + ds.n_test == n_samples
    assert len(ds.feature_names) == n_features
    assert ds.image_shape == ((8, 8) if name == "digits" else None)


def test_generators_pass_options_and_default_random_state_to_seed():
    ds = load_dataset("make_classification", n_samples=90, n_features=5, n_informative=3,
                      n_classes=3, seed=2)
    assert (ds.task, ds.n_classes, ds.n_features, ds.n_train) == ("multiclass", 3, 5, 54)
    a = load_dataset("make_regression", n_samples=30, n_features=2, seed=0)
    b = load_dataset("make_regression", n_samples=30, n_features=2, seed=0, random_state=1)
    assert a.task == "regression"
    assert not np.allclose(a.y_train, b.y_train)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype(dtype):
    reg = load_dataset("make_regression", n_samples=30, n_features=2, dtype=dtype)
    clf = load_dataset("iris", dtype=dtype)
    for ds in (reg, clf):
        assert all(X.dtype == dtype for X in (ds.X_train, ds.X_val, ds.X_test))
    assert reg.y_train.dtype == dtype and clf.y_train.dtype == jnp.int32


def test_float64_without_x64_is_an_error_but_float32_works():
    with jax.enable_x64(False):
        with pytest.raises(DataError, match=r"jax_enable_x64.*float32"):
            load_dataset("iris")
        assert load_dataset("iris", dtype="float32").X_train.dtype == jnp.float32


def test_dataset_is_a_pytree_with_static_metadata():
    ds = load_dataset("iris")
    assert len(jax.tree_util.tree_leaves(ds)) == 6
    doubled = jax.jit(lambda d: jax.tree_util.tree_map(lambda a: 2 * a, d))(ds)
    assert isinstance(doubled, Dataset) and doubled.n_classes == 3
    np.testing.assert_allclose(doubled.X_val, 2 * ds.X_val)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def test_csv_round_trip_with_header_and_named_target(tmp_path):
    X, y = _indexed_data(30)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X[:, :2], y, X[:, 2]]), fmt="%.17g", delimiter=",",
               header="idx,a,price,b", comments="")
    ds = load_dataset("file", path=path, target="price", standardize=False)
    assert ds.feature_names == ("idx", "a", "b") and ds.task == "regression"
    assert ds.name == "data.csv"
    for X_split, y_split in (ds.train, ds.val, ds.test):
        np.testing.assert_array_equal(X_split, X[_rows(X_split)])
        np.testing.assert_array_equal(y_split, y[_rows(X_split)])


def test_csv_without_header_uses_last_column_and_infers_binary(tmp_path):
    X, _ = _indexed_data(30)
    labels = np.tile([0, 1], 15)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X, labels]), fmt="%.17g", delimiter=",")
    ds = load_dataset("file", path=path, standardize=False)
    assert ds.feature_names is None and ds.task == "binary" and ds.n_features == 3
    np.testing.assert_array_equal(ds.X_val, X[_rows(ds.X_val)])
    np.testing.assert_array_equal(ds.y_val, labels[_rows(ds.X_val)])


def test_npz_round_trip_with_keys_and_image_shape(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 2, 3))
    images[:, 0, 0] = np.arange(40)
    y = np.tile([0, 1, 2, 3], 10)
    path = tmp_path / "images.npz"
    np.savez(path, pixels=images, digit=y)
    ds = load_dataset("file", path=path, x_key="pixels", y_key="digit", standardize=False)
    assert ds.image_shape == (2, 3) and ds.n_features == 6 and ds.n_classes == 4
    np.testing.assert_array_equal(ds.X_test, images[_rows(ds.X_test)].reshape(-1, 6))
    np.testing.assert_array_equal(ds.y_test, y[_rows(ds.X_test)])


@pytest.mark.parametrize("suffix", [".svm", ".libsvm", ".txt"])
def test_svmlight_round_trip(tmp_path, suffix):
    X, y = _indexed_data(30)
    X[::3, 2] = 0.0  # sparse entries come back as zeros
    path = tmp_path / f"data{suffix}"
    dump_svmlight_file(X, y, str(path))
    ds = load_dataset("file", path=path, standardize=False)
    assert ds.task == "regression" and ds.sparse  # svmlight stays sparse
    X_train = linop.todense(ds.X_train)
    np.testing.assert_allclose(X_train, X[_rows(X_train)], rtol=1e-15)
    np.testing.assert_allclose(ds.y_train, y[_rows(X_train)], rtol=1e-15)


# --------------------------------------------------------------------------------------
# Errors: one line naming the bad thing
# --------------------------------------------------------------------------------------


def test_error_unknown_dataset_lists_allowed_names():
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'; choose one of: .*iris") as e:
        load_dataset("mnist")
    assert all(name in str(e.value) for name in DATASETS) and "\n" not in str(e.value)


def test_error_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"file not found: .*nowhere\.csv"):
        load_dataset("file", path=tmp_path / "nowhere.csv")


def test_error_missing_path_option():
    with pytest.raises(DataError, match=r"needs option path="):
        load_dataset("file")


def test_error_unsupported_suffix(tmp_path):
    path = _save_csv(tmp_path, "1,2\n", name="data.xlsx")
    with pytest.raises(DataError, match=r"unsupported file suffix '\.xlsx'.*\.csv, \.npz"):
        load_dataset("file", path=path)


@pytest.mark.parametrize("name", ["broken.npz", "broken.svm"])
def test_error_unreadable_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 this is not data\n")
    with pytest.raises(DataError, match=rf"cannot read .*{name}"):
        load_dataset("file", path=path)


def test_error_csv_non_numeric_cell_names_line_and_column(tmp_path):
    path = _save_csv(tmp_path, "a,b,y\n1,2,0\n3,abc,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': non-numeric value 'abc'"):
        load_dataset("file", path=path)


def test_error_csv_ragged_row(tmp_path):
    path = _save_csv(tmp_path, "1,2,0\n3,4\n")
    with pytest.raises(DataError, match=r"line 2: 2 cells, expected 3"):
        load_dataset("file", path=path)


def test_error_nan_feature_names_column_and_row(tmp_path):
    path = _save_csv(tmp_path, "a,b,y\n1,2,0.5\n3,nan,1.5\n")
    with pytest.raises(DataError, match=r"feature column 'b' has non-finite value nan at row 1"):
        load_dataset("file", path=path)


def test_error_inf_target(tmp_path):
    X, y = _indexed_data(20)
    y[4] = np.inf
    with pytest.raises(DataError, match=r"target has non-finite value inf at row 4"):
        load_dataset("file", path=_save_npz(tmp_path, X, y))


def test_error_float32_overflow_names_split(tmp_path):
    X, y = _indexed_data(20)
    X[:, 2] = 1e39  # finite in float64, inf in float32
    with pytest.raises(DataError, match=r"train split as float32.*column '2'"):
        load_dataset("file", path=_save_npz(tmp_path, X, y), dtype="float32", standardize=False)


@pytest.mark.parametrize("target, shown", [("price", "'price'"), (5, "5")])
def test_error_target_column_not_found(tmp_path, target, shown):
    path = _save_csv(tmp_path, "a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=rf"target column {shown} not found.*columns: a, b, y"):
        load_dataset("file", path=path, target=target)


def test_error_npz_key_missing(tmp_path):
    path = _save_npz(tmp_path, *_indexed_data(20))
    with pytest.raises(DataError, match=r"no array 'features' \(x_key\); arrays: X, y"):
        load_dataset("file", path=path, x_key="features")


def test_error_option_not_for_this_format(tmp_path):
    path = _save_npz(tmp_path, *_indexed_data(20))
    with pytest.raises(DataError, match=r"target do not apply to \.npz files"):
        load_dataset("file", path=path, target="y")
    with pytest.raises(DataError, match=r"'iris' takes no options; got: n_samples"):
        load_dataset("iris", n_samples=10)
    with pytest.raises(DataError, match=r"make_regression .*bogus"):
        load_dataset("make_regression", bogus=1)


def test_error_continuous_targets_for_classification():
    with pytest.raises(DataError, match=r"is not a class label, so task 'binary' does not fit"):
        load_dataset("make_regression", n_samples=30, task="binary")


def test_error_one_class_only(tmp_path):
    X, _ = _indexed_data(20)
    path = _save_npz(tmp_path, X, np.ones(20))
    with pytest.raises(DataError, match=r"all targets are 1; task 'binary' needs at least 2"):
        load_dataset("file", path=path, task="binary")


def test_error_binary_task_with_three_classes():
    with pytest.raises(DataError, match=r"task 'binary' needs 2 classes, found 3"):
        load_dataset("iris", task="binary")


def test_error_unknown_task():
    with pytest.raises(DataError, match=r"unknown task 'classification'"):
        load_dataset("iris", task="classification")


def test_error_too_few_samples_for_a_split():
    with pytest.raises(DataError, match=r"4 samples .* leave 0 validation samples"):
        load_dataset("make_regression", n_samples=4, val_fraction=0.1)


def test_error_too_few_members_of_a_class(tmp_path):
    X, _ = _indexed_data(30)
    y = np.r_[np.zeros(28), np.ones(2)]
    with pytest.raises(DataError, match=r"class 1 has 2 sample\(s\).*at least 3 per class"):
        load_dataset("file", path=_save_npz(tmp_path, X, y))


def test_error_fewer_held_out_samples_than_classes():
    with pytest.raises(DataError, match=r"leave 2 validation samples; need at least 3"):
        load_dataset("iris", val_fraction=0.01)


@pytest.mark.parametrize("val_fraction, test_fraction, match", [
    (0.0, 0.2, r"val_fraction=0\.0 must be a number in \(0, 1\)"),
    (0.2, 1.0, r"test_fraction=1\.0 must be"),
    (-0.1, 0.2, r"val_fraction=-0\.1 must be"),
    ("0.2", 0.2, r"val_fraction='0\.2' must be"),
    (0.5, 0.5, r"val_fraction \+ test_fraction = 1 must be < 1"),
])
def test_error_bad_fractions(val_fraction, test_fraction, match):
    with pytest.raises(DataError, match=match):
        load_dataset("iris", val_fraction=val_fraction, test_fraction=test_fraction)


def test_error_unknown_dtype():
    with pytest.raises(DataError, match=r"unknown dtype 'float16'; use 'float32' or 'float64'"):
        load_dataset("iris", dtype="float16")


# --------------------------------------------------------------------------------------
# Sparse data: stays sparse from the file to the device
# --------------------------------------------------------------------------------------


def _sparse_data(n=90, p=12, seed=0, labels=False):
    """CSR features with column 0 = row number + 1 (so every row stores it), an empty
    column 5, a constant non-zero column 6; targets (regression or 3 classes)."""
    rng = np.random.default_rng(seed)
    X = scipy.sparse.random(n, p, density=0.3, format="lil", random_state=seed)
    X[:, 0] = np.arange(1, n + 1)[:, None]
    X[:, 5] = 0.0
    X[:, 6] = 0.5
    X = X.tocsr()
    X.data = np.round(X.data, 6)  # exact in svmlight text
    X.eliminate_zeros()
    y = np.tile([0.0, 1.0, 2.0], n // 3) if labels else np.round(rng.normal(5.0, 4.0, n), 6)
    return X, y


def _sparse_rows(X_split):
    return np.asarray(linop.todense(X_split)[:, 0]).astype(int) - 1


def _load_sparse_file(path, **kwargs):
    """load_dataset with densifying refused while it runs."""
    with pytest.MonkeyPatch.context() as mp:
        def refuse(*args, **kw):
            raise AssertionError("densified while loading")
        for cls in (scipy.sparse.csr_matrix, scipy.sparse.csc_matrix, scipy.sparse.coo_matrix):
            mp.setattr(cls, "toarray", refuse)
            mp.setattr(cls, "todense", refuse)
        mp.setattr(SparseMatrix, "todense", refuse)
        return load_dataset("file", path=path, **kwargs)


@pytest.mark.parametrize("labels", [False, True])
def test_sparse_and_dense_inputs_give_the_same_splits(tmp_path, labels):
    X, y = _sparse_data(labels=labels)
    dense = load_dataset("file", path=_save_npz(tmp_path, X.toarray(), y), standardize=False, seed=3)
    svm = tmp_path / "data.svm"
    dump_svmlight_file(X, y, str(svm))
    sparse = _load_sparse_file(svm, standardize=False, seed=3, n_features=X.shape[1])
    assert sparse.sparse and not dense.sparse and sparse.task == dense.task
    for split in ("train", "val", "test"):
        X_sparse, X_dense = getattr(sparse, f"X_{split}"), getattr(dense, f"X_{split}")
        assert isinstance(X_sparse, SparseMatrix)
        np.testing.assert_array_equal(linop.todense(X_sparse), X_dense)
        np.testing.assert_array_equal(getattr(sparse, f"y_{split}"), getattr(dense, f"y_{split}"))
    assert sparse.nnz == X.nnz and dense.nnz == X.shape[0] * X.shape[1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_standardization_scales_columns_like_standard_scaler_without_mean(tmp_path, dtype):
    X, y = _sparse_data()
    path = tmp_path / "data.svm"
    dump_svmlight_file(X, y, str(path))
    raw = load_dataset("file", path=path, standardize=False, seed=1)
    ds = _load_sparse_file(path, seed=1, dtype=dtype)
    train = X[_sparse_rows(raw.X_train)]
    scaler = StandardScaler(with_mean=False).fit(train)
    rtol = 1e-12 if dtype == "float64" else 1e-6
    for raw_X, X_split in ((raw.X_train, ds.X_train), (raw.X_val, ds.X_val), (raw.X_test, ds.X_test)):
        assert isinstance(X_split, SparseMatrix) and X_split.dtype == dtype
        assert X_split.nnz == raw_X.nnz  # no zero filled in
        expected = scaler.transform(X[_sparse_rows(raw_X)]).toarray()
        np.testing.assert_allclose(linop.todense(X_split), expected, rtol=rtol, atol=0)
    scaled = linop.todense(ds.X_train)
    np.testing.assert_allclose(np.std(scaled[:, 1:5], axis=0), 1.0, rtol=rtol)
    assert np.all(scaled[:, 5] == 0) and np.all(scaled[:, 6] == np.float32(0.5))  # empty, constant
    # regression targets are still centred and scaled
    np.testing.assert_allclose([ds.y_mean, ds.y_scale], [raw.y_train.mean(), raw.y_train.std()])
    np.testing.assert_allclose(ds.y_mean + ds.y_scale * ds.y_test, raw.y_test, rtol=rtol,
                               atol=rtol * ds.y_scale)


def test_sparse_option_converts_dense_sources_and_back(tmp_path):
    X, y = _sparse_data()
    path = _save_npz(tmp_path, X.toarray(), y)
    raw = load_dataset("file", path=path, sparse=True, standardize=False)
    as_sparse = load_dataset("file", path=path, sparse=True)
    assert raw.sparse and as_sparse.sparse and as_sparse.X_val.nnz == raw.X_val.nnz
    scaler = StandardScaler(with_mean=False).fit(X[_sparse_rows(raw.X_train)])
    np.testing.assert_allclose(linop.todense(as_sparse.X_val),
                               scaler.transform(X[_sparse_rows(raw.X_val)]).toarray(), rtol=1e-12)
    svm = tmp_path / "data.svm"
    dump_svmlight_file(X, y, str(svm))
    as_dense = load_dataset("file", path=svm, sparse=False, standardize=False)
    assert not as_dense.sparse and isinstance(as_dense.X_train, jax.Array)
    np.testing.assert_array_equal(as_dense.X_test, X.toarray()[_rows(as_dense.X_test) - 1])
    assert load_dataset("iris", sparse=True).sparse


@pytest.mark.parametrize("layout", ["csr", "csc", "coo", "targets_npy", "targets_txt"])
def test_sparse_npz_round_trip(tmp_path, layout):
    X, y = _sparse_data()
    path = tmp_path / "data.npz"
    matrix = X if layout in ("csr", "targets_npy", "targets_txt") else X.asformat(layout)
    scipy.sparse.save_npz(path, matrix)
    options = {}
    if layout == "targets_npy":
        np.save(tmp_path / "y.npy", y)
        options["y_path"] = tmp_path / "y.npy"
    elif layout == "targets_txt":
        np.savetxt(tmp_path / "y.txt", y, fmt="%.17g")
        options["y_path"] = tmp_path / "y.txt"
    else:  # X and y in one archive: save_npz's arrays plus the targets
        with np.load(path) as arrays:
            np.savez(path, **dict(arrays), y=y)
    ds = _load_sparse_file(path, standardize=False, **options)
    assert ds.sparse and isinstance(ds.X_test, SparseMatrix)
    rows = _sparse_rows(ds.X_test)
    np.testing.assert_array_equal(linop.todense(ds.X_test), X[rows].toarray())
    np.testing.assert_allclose(ds.y_test, y[rows], rtol=1e-15)


def test_dataset_with_sparse_splits_is_a_pytree():
    ds = load_dataset("synthetic_sparse", shape="rcv1", scale=0.02)
    assert len(jax.tree_util.tree_leaves(ds)) == 3 * 3 + 3  # values, rows, cols per split + y
    doubled = jax.jit(lambda d: jax.tree.map(lambda a: 2 * a if a.dtype == jnp.float64 else a, d))(ds)
    assert isinstance(doubled.X_val, SparseMatrix) and doubled.sparse
    np.testing.assert_allclose(linop.todense(doubled.X_val), 2 * linop.todense(ds.X_val))
    assert ds.nbytes == ds.nnz * (8 + 4 + 4) + 8 * (ds.n_train + ds.n_val + ds.n_test)
    assert "sparse, nnz=" in repr(ds)


# --------------------------------------------------------------------------------------
# Synthetic sparse data
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(SPARSE_SHAPES))
def test_synthetic_sparse_has_the_requested_shape_density_and_task(shape):
    n, p, density, task = SPARSE_SHAPES[shape]
    scale = 0.05 if shape != "news20" else 0.01
    sample = make_sparse_text(round(n * scale), round(p * scale), density, task=task, seed=0)
    X = sample.X
    assert X.shape == (round(n * scale), round(p * scale)) and X.format == "csr"
    assert X.has_canonical_format and np.all(X.data > 0)
    assert abs(X.nnz / (X.shape[0] * X.shape[1]) / density - 1) < 0.05
    ds = load_dataset("synthetic_sparse", shape=shape, scale=scale)
    assert ds.sparse and ds.task == task and ds.nnz == X.nnz  # same seed, same data
    assert ds.n_features == X.shape[1] and ds.n_train + ds.n_val + ds.n_test == X.shape[0]
    if task == "binary":
        assert set(np.unique(ds.y_train)) == {0, 1}


def test_synthetic_sparse_looks_like_tf_idf_text():
    X = make_sparse_text(600, 3000, 0.01, seed=2).X  # rows of about 30 entries
    assert abs(X.nnz / (600 * 3000) / 0.01 - 1) < 0.05
    np.testing.assert_allclose(scipy.sparse.linalg.norm(X[np.diff(X.indptr) > 0], axis=1), 1.0)
    frequency = np.sort(np.bincount(X.indices, minlength=X.shape[1]))[::-1] / X.shape[0]
    assert 0.4 < frequency[0] < 0.6  # the most frequent column is in about half of the rows
    # Zipf: frequency ~ 1/(rank + c), so 10x the rank is about 10x rarer (less near the top)
    assert 4 < frequency[19] / frequency[199] < 10 and 5 < frequency[99] / frequency[999] < 12
    idf_like = X.max(axis=0).toarray().ravel()  # rare columns get larger tf-idf values
    assert np.median(idf_like[frequency.argsort()[-10:]]) < np.median(idf_like[idf_like > 0])


def test_synthetic_sparse_is_seeded():
    a, b, c = (make_sparse_text(300, 500, 0.02, seed=s) for s in (4, 4, 5))
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.y, b.y) and np.array_equal(a.coef, b.coef)
    assert (a.X != c.X).nnz > 0
    d = load_dataset("synthetic_sparse", n_samples=300, n_features=500, density=0.02, seed=4,
                     standardize=False)
    e = load_dataset("synthetic_sparse", n_samples=300, n_features=500, density=0.02, seed=4,
                     random_state=5, standardize=False)
    assert d.nnz == a.X.nnz and e.nnz == c.X.nnz


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_planted_sparse_truth_is_recoverable(task):
    sample = make_sparse_text(3000, 400, 0.05, task=task, n_informative=5, snr=10.0, seed=1)
    support = set(np.flatnonzero(sample.coef))
    assert len(support) == 5
    if task == "regression":  # the lasso's support is the planted one
        model = Lasso(alpha=1e-3).fit(sample.X, sample.y)
        assert set(np.flatnonzero(model.coef_)) == support
    else:  # the largest l1-logistic weights are on the planted support
        model = LogisticRegression(l1_ratio=1.0, C=1.0, solver="liblinear").fit(sample.X, sample.y)
        assert set(np.argsort(-np.abs(model.coef_.ravel()))[:5]) == support
    signs = np.sign(model.coef_.ravel()[sorted(support)])
    np.testing.assert_array_equal(signs, np.sign(sample.coef[sorted(support)]))


@pytest.mark.parametrize("options, match", [
    ({"shape": "mnist"}, r"unknown synthetic_sparse shape 'mnist'; choose one of: rcv1, real_sim, news20"),
    ({"n_samples": 100}, r"needs shape= \(rcv1, real_sim, news20\) or n_features, density"),
    ({"shape": "rcv1", "scale": 0}, r"scale=0 must be a positive number"),
    ({"shape": "rcv1", "density": 1.5}, r"density=1\.5 must be a number in \(0, 1\]"),
    ({"shape": "rcv1", "n_informative": 0}, r"n_informative=0 must be an integer in 1\.\.n_features"),
    ({"shape": "rcv1", "bogus": 1}, r"option\(s\) bogus do not apply to synthetic_sparse; allowed: shape"),
    ({"shape": "rcv1", "task": "multiclass"}, r"makes regression or binary data; got task='multiclass'"),
])
def test_error_synthetic_sparse_options(options, match):
    with pytest.raises(DataError, match=match) as e:
        load_dataset("synthetic_sparse", **options)
    assert "\n" not in str(e.value)


def test_error_sparse_nan_value_names_column_and_row(tmp_path):
    path = tmp_path / "bad.svm"
    path.write_text("1 1:0.5 3:2\n0 2:nan\n1 1:1\n")
    with pytest.raises(DataError, match=r"bad\.svm: feature column '1' has non-finite value nan at row 1"):
        load_dataset("file", path=path, zero_based=False)


@pytest.mark.parametrize("case, match", [
    ("no_targets", r"has no array 'y' \(y_key\) \(a scipy\.sparse\.save_npz archive holds no targets: "
                   r"add them as 'y' or pass y_path\)"),
    ("short_targets", r"need features of shape \(n_samples, n_features\) and targets of shape "
                      r"\(n_samples,\), got \(90, 12\) and \(89,\)"),
    ("missing_targets_file", r"targets file not found: .*nowhere\.npy"),
    ("target_option", r"target do not apply to \.svm files; allowed: path, n_features, zero_based"),
    ("too_few_features", r"cannot read .*data\.svm as a \.svm file"),
    ("bad_sparse_flag", r"sparse='yes'; use true, false or null"),
])
def test_error_bad_sparse_input(tmp_path, case, match):
    X, y = _sparse_data()
    npz, svm = tmp_path / "data.npz", tmp_path / "data.svm"
    scipy.sparse.save_npz(npz, X)
    dump_svmlight_file(X, y, str(svm))
    np.save(tmp_path / "short.npy", y[:-1])
    kwargs = {
        "no_targets": {"path": npz},
        "short_targets": {"path": npz, "y_path": tmp_path / "short.npy"},
        "missing_targets_file": {"path": npz, "y_path": tmp_path / "nowhere.npy"},
        "target_option": {"path": svm, "target": 0},
        "too_few_features": {"path": svm, "n_features": 3},
        "bad_sparse_flag": {"path": svm, "sparse": "yes"},
    }[case]
    with pytest.raises(DataError, match=match) as e:
        load_dataset("file", **kwargs)
    assert "\n" not in str(e.value)


def test_svmlight_with_empty_rows_and_columns_loads(tmp_path):
    path = tmp_path / "gaps.svm"
    lines = [f"{i % 2} {1 + i % 3}:{i + 1}" if i % 4 else f"{i % 2}" for i in range(20)]
    path.write_text("\n".join(lines) + "\n")  # rows 0, 4, 8, ... have no entries
    ds = load_dataset("file", path=path, zero_based=False, n_features=6, task="binary",
                      standardize=False)
    assert ds.sparse and ds.n_features == 6 and ds.nnz == 15
    X = np.vstack([linop.todense(ds.X_train), linop.todense(ds.X_val), linop.todense(ds.X_test)])
    assert (X.sum(axis=1) == 0).sum() == 5 and np.all(X[:, 3:] == 0)  # empty rows; columns 3..5
