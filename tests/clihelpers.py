"""Helpers for driving hyperopt-run in tests: in-process (compose + run), or as a user runs it,
through the installed console script in a subprocess."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def console_script(name: str) -> str:
    """The installed console script ``name`` of this environment (next to the interpreter)."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path} is missing: install the package first (pip install -e .)"
    return str(path)


def _env(env: dict | None) -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", **(env or {})}


def hyperopt_run(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None,
                 **popen) -> subprocess.CompletedProcess:
    """Runs the ``hyperopt-run`` console script in a subprocess, to completion."""
    return subprocess.run([console_script("hyperopt-run"), *args], cwd=cwd, env=_env(env),
                          capture_output=True, text=True, timeout=timeout, **popen)


def hyperopt_run_many(commands: list[tuple[list[str], Path]], timeout: float = 300,
                      workers: int | None = None) -> list[subprocess.CompletedProcess]:
    """Runs each ``(args, cwd)`` as its own ``hyperopt-run`` process, a few at a time (most of a
    rejected command's time is the interpreter starting and importing: parallel processes share
    the cores)."""
    workers = workers or (os.cpu_count() or 2) + 1
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda command: hyperopt_run(*command[0], cwd=command[1], timeout=timeout),
                             commands))


def start_hyperopt_run(*args: str, cwd: Path, wait_for: Path, output=subprocess.DEVNULL,
                       timeout: float = 120) -> subprocess.Popen:
    """Starts the console script in the background and returns once ``wait_for`` exists."""
    proc = subprocess.Popen([console_script("hyperopt-run"), *args], cwd=cwd, env=_env(None),
                            stdout=output, stderr=output, text=True)
    deadline = time.time() + timeout
    while not wait_for.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc
