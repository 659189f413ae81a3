"""Tests run in float64: hypergradients are compared to 1e-8 and finite differences."""

import os
import tempfile

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# The persistent compilation cache of hyperopt-run goes to $XDG_CACHE_HOME/hyperopt: keep the
# tests' programs out of the user's cache (one folder shared by the xdist workers and by the
# CLI subprocesses, which inherit the variable).
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(tempfile.gettempdir(), f"hyperopt-tests-{os.getuid()}"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


# Known regressions found by the full suite after a merge and not yet fixed, marked non-strict
# xfail here, in one place, so that they stay visible and run (an xpass shows when one is
# fixed); they are not skips. Empty: every regression listed at stop 17 is fixed.
KNOWN_REGRESSIONS = {
}


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        reason = KNOWN_REGRESSIONS.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"known regression: {reason}", strict=False))
