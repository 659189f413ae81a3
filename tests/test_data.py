"""Tests of hyperopt.data: split sizes, stratification, standardization, files, errors.

Many tests put the row number in feature column 0 and load with ``standardize=False``, so
every loaded sample can be traced back to the array that was written.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file

from hyperopt.data import DATASETS, DataError, Dataset, load_dataset


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
    assert ds.task == "regression"
    np.testing.assert_allclose(ds.X_train, X[_rows(ds.X_train)], rtol=1e-15)
    np.testing.assert_allclose(ds.y_train, y[_rows(ds.X_train)], rtol=1e-15)


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
