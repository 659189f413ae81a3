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
