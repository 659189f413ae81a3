"""Helpers for driving hyperopt-run in tests: in-process (compose + run) or as a subprocess."""

import os
import subprocess
import sys
import time
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


CODE = "import sys; from hyperopt.cli import run_main; sys.argv[0] = 'hyperopt-run'; run_main()"


def _env(env: dict | None) -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", **(env or {})}


def hyperopt_run(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None,
                 **popen) -> subprocess.CompletedProcess:
    """Runs the real console entry point in a subprocess, to completion."""
    return subprocess.run([sys.executable, "-c", CODE, *args], cwd=cwd, env=_env(env),
                          capture_output=True, text=True, timeout=timeout, **popen)


def start_hyperopt_run(*args: str, cwd: Path, wait_for: Path, output=subprocess.DEVNULL,
                       timeout: float = 120) -> subprocess.Popen:
    """Starts the real entry point in the background and returns once ``wait_for`` exists."""
    proc = subprocess.Popen([sys.executable, "-c", CODE, *args], cwd=cwd, env=_env(None),
                            stdout=output, stderr=output, text=True)
    deadline = time.time() + timeout
    while not wait_for.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc
