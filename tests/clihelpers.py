"""Helpers for driving hyperopt-run in tests: in-process (compose + run) or as a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from hyperopt import cli


def compose_run_config(run_dir: Path, overrides: list[str]):
    """The task config ``hyperopt-run`` would get, with HydraConfig set for ``run_dir``."""
    with initialize_config_dir(config_dir=cli._config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"hydra.run.dir={run_dir}"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def hyperopt_run(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None,
                 **popen) -> subprocess.CompletedProcess:
    """Runs the real console entry point in a subprocess."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", **(env or {})}
    code = "import sys; from hyperopt.cli import run_main; sys.argv[0] = 'hyperopt-run'; run_main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, **popen)
