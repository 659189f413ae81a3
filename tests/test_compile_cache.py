"""Stored programs (hyperopt.compile_cache.compile_program): a warm run reads its compiled
step and refit whole — no tracing, no compiling — and gets exactly what a fresh compilation
gets, also on other data of the same shapes (the data are arguments, never constants)."""

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from hyperopt import cli, compile_cache
from hyperopt.bilevel import fit
from hyperopt.data import load_dataset


def _config(overrides):
    with initialize_config_dir(config_dir=cli._config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


def _data(seed):
    return load_dataset("make_regression", n_samples=120, n_features=40, n_informative=5, noise=5.0,
                        seed=seed)


@pytest.fixture
def cache_dir(tmp_path):
    path = compile_cache.enable(tmp_path / "cache")
    yield path
    compile_cache.disable()


@pytest.mark.parametrize("overrides", [
    ["problem=lasso", "solver=coordinate_descent", "cv_folds=3"],  # 3-fold CV, working sets
    ["problem=ridge", "cv_folds=0"],  # hold-out, L-BFGS inner solver (the default)
], ids=["lasso_cd_cv", "ridge_holdout"])
def test_a_stored_program_gives_what_a_fresh_compilation_gives_on_other_data(cache_dir, overrides):
    cfg = _config(overrides)
    key = cli.program_key(cfg)
    options = {**cli.fit_options(cfg), "program_key": key}
    first = fit(cli.build_bilevel(cfg), _data(0), 8, **options)
    assert not first.compile["programs_loaded"] and first.compile["trace_s"] > 0
    stored = sorted(p.name.split("-")[0] for p in (cache_dir / compile_cache.PROGRAMS_SUBDIR).iterdir())
    assert stored == ["hparams", "init", "refit", "step"]

    jax.clear_caches()  # as in a new process
    warm = fit(cli.build_bilevel(cfg), _data(1), 8, **options)  # other values, same shapes
    assert warm.compile["programs_loaded"] and warm.compile["from_cache"]
    assert warm.compile["trace_s"] == 0 and warm.compile["cache"]["compiles"] == 0

    compile_cache.disable()
    jax.clear_caches()
    fresh = fit(cli.build_bilevel(cfg), _data(1), 8, **cli.fit_options(cfg))
    assert fresh.compile["trace_s"] > 0
    assert [h["outer_loss"] for h in warm.history] == [h["outer_loss"] for h in fresh.history]
    assert warm.best_hparams == fresh.best_hparams
    jax.tree.map(np.testing.assert_array_equal, warm.model, fresh.model)
    assert warm.model_metrics == fresh.model_metrics and warm.initial == fresh.initial
    # XLA's temporary memory, stored with the program, is what the fresh compilation reports
    assert warm.compiled_temp_mb == fresh.compiled_temp_mb == first.compiled_temp_mb > 0
    # and the other data did change the answer (the stored program is not a stored result)
    assert warm.best_hparams != first.best_hparams


def test_programs_are_keyed_by_shapes_and_by_the_key(cache_dir):
    args = (np.zeros(3), np.ones(()))
    f = jax.jit(lambda x, s: x * s)
    path = compile_cache.program_path("f", "a", args)
    assert path.parent == cache_dir / compile_cache.PROGRAMS_SUBDIR
    assert compile_cache.program_path("f", "a", (np.zeros(3), np.full((), 5.0))) == path  # values: same
    assert compile_cache.program_path("f", "b", args) != path
    assert compile_cache.program_path("f", "a", (np.zeros(4), np.ones(()))) != path
    assert compile_cache.program_path("f", "a", (np.zeros(3, np.float32), np.ones(()))) != path
    compiled, info = compile_cache.compile_program("f", f, args, "a")
    assert not info["loaded"] and path.exists()
    loaded, info = compile_cache.compile_program("f", f, args, "a")
    assert info["loaded"] and info["trace_s"] == 0
    np.testing.assert_array_equal(loaded(np.arange(3.0), np.asarray(2.0)), [0.0, 2.0, 4.0])
    path.write_bytes(b"not a program")  # a damaged file is compiled again and replaced
    again, info = compile_cache.compile_program("f", f, args, "a")
    assert not info["loaded"]
    np.testing.assert_array_equal(again(np.arange(3.0), np.asarray(2.0)), [0.0, 2.0, 4.0])
    assert compile_cache.compile_program("f", f, args, "a")[1]["loaded"]


def test_a_program_read_from_jaxs_own_cache_is_not_stored_again(cache_dir):
    """On the CPU backend an executable that JAX read from its cache cannot be serialized
    again (the copy fails at run time): such a program stays in JAX's cache only."""
    args = (np.zeros(5),)
    f = jax.jit(lambda x: jnp_exp_plus_one(x))
    compile_cache.compile_program("g", f, args, None)  # compiled: JAX's cache only
    jax.clear_caches()
    compiled, info = compile_cache.compile_program("g", f, args, "k")  # a JAX cache hit
    assert not info["loaded"] and not compile_cache.program_path("g", "k", args).exists()
    np.testing.assert_allclose(compiled(np.zeros(5)), np.full(5, 2.0))


def jnp_exp_plus_one(x):
    return jax.numpy.exp(x) + 1.0


def test_the_cli_key_ignores_the_seed_and_logging_but_not_the_optimizer():
    base = cli.program_key(_config([]))
    assert cli.program_key(_config(["seed=3", "logger=none", "steps=7", "checkpoint_every=2"])) == base
    assert cli.program_key(_config(["outer.learning_rate=0.5"])) != base
    assert cli.program_key(_config(["solver.maxiter=123"])) != base
    assert cli.program_key(_config(["problem=lasso", "solver=coordinate_descent"])) != base


def test_a_new_process_runs_a_stored_program_with_lapack_calls(tmp_path):
    """The lasso's step holds a Cholesky (coordinate descent's Newton step): LAPACK kernels
    that a program read back whole finds initialized only because compile_program does it
    (a process that lowered nothing segfaulted there). Two hyperopt-run processes, the
    second reading the first one's programs, same answer."""
    import json

    from clihelpers import hyperopt_run

    cache = tmp_path / "cache"
    summaries = []
    for run in ("first", "second"):
        done = hyperopt_run("experiment=lasso_synthetic", "logger=none", "steps=3", f"compile_cache={cache}",
                            f"hydra.run.dir={tmp_path / run}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        summaries.append(json.loads((tmp_path / run / "summary.json").read_text()))
    first, second = summaries
    assert not first["compile"]["programs_loaded"] and second["compile"]["programs_loaded"]
    assert second["compile"]["trace_s"] == 0
    assert second["hparams"] == first["hparams"]
    assert second["returned"]["test_loss"] == first["returned"]["test_loss"]
