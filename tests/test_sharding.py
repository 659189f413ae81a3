"""Sharded data (shard_data=True): the sample axis split over 4 host devices gives the
single-device results (float64, rel. 1e-8), dense and sparse, hold-out and k-fold, and for a
population. Runs in a subprocess: the device count is fixed when JAX starts."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(r"""
    import functools, json
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import optax
    import hyperopt
    from hyperopt import sharding
    from hyperopt.bilevel import Bilevel, fit, make_splits
    from hyperopt.data import load_dataset
    from hyperopt.problems import Logistic, Ridge

    assert jax.device_count() == 4, jax.devices()
    out = {}
    diabetes = load_dataset("diabetes", seed=0)                       # 265 training rows: padded to 268
    cancer = load_dataset("breast_cancer", seed=0)
    sparse = load_dataset("synthetic_sparse", shape="rcv1", n_samples=150, n_features=40, density=0.2,
                          seed=0)
    assert sparse.sparse and diabetes.n_train % 4 != 0
    lbfgs = functools.partial(hyperopt.LBFGS, tol=1e-10)
    cases = {
        "ridge_holdout": (Bilevel(Ridge(), lbfgs, optax.adam(0.2), cv_folds=0), diabetes, 1, "train_val"),
        "logistic_5fold": (Bilevel(Logistic(), lbfgs, optax.adam(0.2), cv_folds=5), cancer, 1, "train_val"),
        # refit on the training split: the sparse train + val concatenation is not this test's
        "ridge_sparse": (Bilevel(Ridge(), lbfgs, optax.adam(0.2), cv_folds=0), sparse, 1, "train"),
        "ridge_population": (Bilevel(Ridge(), lbfgs, optax.adam(0.2), cv_folds=0), diabetes, 3, "train_val"),
    }
    for name, (bl, data, size, refit) in cases.items():
        runs = [fit(bl, data, steps=6, stop=None, population=size, shard_data=s, refit=refit)
                for s in (False, True)]
        members = lambda r: r.members if r.members else [r.state]
        out[name] = {
            "devices": [r.devices for r in runs],
            "theta": [[np.asarray(m.theta).tolist() for m in members(r)] for r in runs],
            "losses": [[h["outer_loss"] for h in r.history] for r in runs],
            "test_loss": [r.model_metrics["test_loss"] for r in runs],
        }
    # the data really are split: each device holds a quarter of the (padded) rows / non-zeros
    splits = sharding.shard_splits(make_splits(Ridge(), diabetes), sharding.data_mesh(), lambda n, f: None)
    X = splits.inner[0]
    out["dense_shards"] = [list(s.data.shape) for s in X.addressable_shards]
    sp = sharding.shard_splits(make_splits(Ridge(), sparse), sharding.data_mesh(), lambda n, f: None)
    out["sparse_shards"] = [list(s.data.shape) for s in sp.inner[0].values.addressable_shards]
    out["sparse_nnz"] = int(make_splits(Ridge(), sparse).inner[0].nnz)
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_on_4_host_devices_equals_unsharded():
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["dense_shards"] == [[67, 10]] * 4  # 265 rows padded to 268, 67 per device
    nnz = out["sparse_nnz"]
    assert out["sparse_shards"] == [[-(-nnz // 4)]] * 4
    for name in ("ridge_holdout", "logistic_5fold", "ridge_sparse", "ridge_population"):
        case = out[name]
        assert case["devices"] == [1, 4], name
        (single, sharded) = case["theta"]
        assert len(single) == (3 if name == "ridge_population" else 1)
        for a, b in zip(single, sharded, strict=True):
            assert b == pytest.approx(a, rel=1e-8, abs=1e-9), name
        assert case["losses"][1] == pytest.approx(case["losses"][0], rel=1e-8), name
        assert case["test_loss"][1] == pytest.approx(case["test_loss"][0], rel=1e-8), name
