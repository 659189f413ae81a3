"""Tests run in float64: hypergradients are compared to 1e-8 and finite differences."""

import os
import tempfile

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# The persistent compilation cache of hyperopt-run goes to $XDG_CACHE_HOME/hyperopt: keep the
# tests' programs out of the user's cache (one folder shared by the xdist workers and by the
# CLI subprocesses, which inherit the variable).
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(tempfile.gettempdir(), f"hyperopt-tests-{os.getuid()}"))

# One BLAS/LAPACK thread in the test processes and the CLI subprocesses (before numpy loads
# OpenBLAS): xdist's workers already fill the cores, and a threaded small factorization on a
# busy machine takes ~1000x longer. (fit and search limit it themselves: blas_threads=1.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# XLA's optimizing passes off in the test processes and the CLI subprocesses (the variable is
# read when JAX starts): the suite is dominated by compiling small programs, not by running
# them. Without them programs round differently (the same algorithm, other last bits): the
# tests' tolerances hold, except two comparisons at 1e-12 / 1e-4 of iterative solves (seen in
# a full run with the passes off everywhere), so tests/test_experiments.py runs the benchmark
# scripts with the passes on, as users do. Measured on 2 cores: the whole suite 2934 s -> 2245 s; the implicit / unrolled / FD
# hypergradient tests 78 s -> 56 s, the sharding subprocess 117 s -> 86 s.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# And XLA:CPU's fusion emitters off (the older loop emitters compile these small programs about
# twice as fast): tests/test_problems_sparse.py on 2 workers 205 s -> 102 s.
FAST_COMPILE_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"
if FAST_COMPILE_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_XLA_FLAGS).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Every test starts in float64, before its fixtures (module-scoped ones included): an
    in-process ``hyperopt-run`` of a float32 experiment (``cli.run`` sets ``jax_enable_x64``
    from ``precision``, as a CLI process should) would otherwise leave the worker's later
    tests in float32."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def pytest_collection_modifyitems(config, items):
    _longest_first(items)


# The longest tests first (the end-to-end runs of many processes, then the other slow ones),
# and pyproject's --maxschedchunk=1: pytest -n hands each worker the next test when it is
# free, so the run does not end on one worker with a long test it was given at the start.
LONGEST_FIRST = (
    "tests/test_readme_commands.py::test_every_readme_command_runs",
    "tests/test_experiments.py::",
    "tests/test_cli_errors.py::test_every_bad_input_through_the_console_script",
    "tests/test_cluster_sweeps.py::",
    "tests/test_sharding.py::",
    "tests/test_cli.py::test_sigkill_then_rerun_resumes_to_the_same_result",
    "tests/test_search.py::test_search_through_the_console_script",
    "tests/test_tracking_e2e.py::",
    "tests/test_cli.py::test_wheel_ships_the_configs",
)


def _run_order(item):
    rank = next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), None)
    if rank is not None:
        return rank
    return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)


def _longest_first(items):
    items.sort(key=_run_order)  # stable: a file's tests stay together, in their order
