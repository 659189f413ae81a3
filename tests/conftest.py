"""Tests run in float64: hypergradients are compared to 1e-8 and finite differences."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
