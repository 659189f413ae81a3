"""hyperopt-run end to end: config composition, every experiment, sweeps, kill and resume."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clihelpers import compose_run_config, hyperopt_run, start_hyperopt_run
from hydra.utils import instantiate

from hyperopt import cli, tracking
from hyperopt.problems.base import solver_class

CONFIGS = Path(cli._config_dir())
GROUPS = ("dataset", "problem", "solver", "mode", "mode/linear_solve", "outer", "logger")
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))

# Which solvers each problem is meant to work with (everything else must be refused clearly).
COMPATIBLE = {
    "ridge": {"lbfgs", "gradient_descent", "cholesky"},
    "logistic": {"lbfgs", "gradient_descent"},
    "lasso": {"proximal_gradient", "block_cd"},
    "svm_dual": {"block_cd", "projected_gradient", "mirror_descent"},
    "distillation": {"lbfgs", "gradient_descent"},
}


def _options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group, tmp_path):
    for option in _options(group):
        overrides = [f"{group}={option}"]
        if option == "file":
            overrides.append("dataset.path=data.csv")
        cfg = compose_run_config(tmp_path, overrides)
        cli.check_config(cfg)
        if group in ("problem", "solver", "outer"):
            instantiate(cfg[group], _convert_="all")
        if group == "mode/linear_solve" and option != "default":
            solve = instantiate(cfg.mode.linear_solve)
            assert callable(solve)


def test_problem_solver_mode_matrix(tmp_path):
    """Compatible combinations build their inner solver; the rest say which solvers are allowed."""
    assert set(COMPATIBLE) == set(_options("problem"))
    for problem_name, solvers in COMPATIBLE.items():
        for solver_name in _options("solver"):
            for mode in _options("mode"):
                cfg = compose_run_config(tmp_path, [f"problem={problem_name}", f"solver={solver_name}",
                                                    f"mode={mode}"])
                problem = instantiate(cfg.problem, _convert_="all")
                make_solver = instantiate(cfg.solver, _convert_="all")
                if solver_name in solvers:
                    inner = problem.inner_solver(make_solver)
                    assert isinstance(inner.solver, solver_class(make_solver))
                else:
                    with pytest.raises(ValueError, match=f"problem '{problem.name}' cannot use solver"):
                        problem.inner_solver(make_solver)


def _check_run_folder(run_dir: Path, steps: int):
    records = tracking.read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(steps))
    for r in records:
        assert np.isfinite(r["outer_loss"]) and np.isfinite(r["hypergrad_norm"])
        assert r["inner_iterations"] >= 1 and r["step_time"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == steps
    assert np.isfinite(summary["best"]["outer_loss"]) and summary["hparams"]
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoint.pkl").exists()
    return records, summary


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_two_steps(experiment, tmp_path):
    run_dir = tmp_path / experiment
    cfg = compose_run_config(run_dir, [f"experiment={experiment}", "steps=2", "logger=none"])
    val_loss = cli.run(cfg)
    assert np.isfinite(val_loss)
    records, summary = _check_run_folder(run_dir, 2)
    assert val_loss == records[-1]["val_loss"]
    if experiment == "distill_digits":
        images = np.load(run_dir / "images.npy")
        assert images.shape == (10, 64) and summary["image_shape"] == [8, 8]


@pytest.mark.slow
def test_default_run_through_the_console_entry_point(tmp_path):
    proc = hyperopt_run("steps=3", "logger=none", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "completed after 3 steps" in proc.stdout + proc.stderr
    _check_run_folder(tmp_path / "run", 3)


@pytest.mark.slow
def test_joblib_multirun_writes_two_complete_runs(tmp_path):
    sweep = tmp_path / "sweep"
    proc = hyperopt_run("-m", "mode=implicit,unrolled", "hydra/launcher=joblib", "steps=2",
                        "logger=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    modes = []
    for job in ("0", "1"):
        _, summary = _check_run_folder(sweep / job, 2)
        modes.append(summary["mode"])
    assert sorted(modes) == ["implicit", "unrolled"]


def _final_theta(run_dir: Path):
    return json.loads((run_dir / "summary.json").read_text())["final_hparams"]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path):
    args = ["experiment=ridge_diabetes", "steps=1000", "checkpoint_every=5", "logger=none", "stop=null"]
    full = hyperopt_run(*args, f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    run_dir = tmp_path / "killed"
    proc = start_hyperopt_run(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path,
                              wait_for=run_dir / "checkpoint.pkl")
    time.sleep(random.uniform(0.0, 0.3))  # a random moment after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists()  # it was killed mid-run
    rerun = hyperopt_run(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    final, resumed = _final_theta(tmp_path / "full"), _final_theta(run_dir)
    assert abs(final["l2reg"] - resumed["l2reg"]) <= 1e-10 * abs(final["l2reg"])
    steps = [r["step"] for r in tracking.read_metrics(run_dir)]
    assert steps == list(range(1000))  # no duplicated or missing step after the resume


@pytest.mark.slow
def test_sigint_saves_and_stops_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_hyperopt_run("steps=100000", "checkpoint_every=0", "logger=none", "stop=null",
                              f"hydra.run.dir={run_dir}", cwd=tmp_path,
                              wait_for=run_dir / "metrics.jsonl", output=subprocess.PIPE)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; saving a checkpoint" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (run_dir / "checkpoint.pkl").exists()
    assert len(tracking.read_metrics(run_dir)) == summary["steps"]


@pytest.mark.slow
def test_second_run_on_a_busy_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = start_hyperopt_run("steps=100000", "logger=none", "stop=null", f"hydra.run.dir={run_dir}",
                               cwd=tmp_path, wait_for=run_dir / "metrics.jsonl")
    try:
        second = hyperopt_run("steps=2", "logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 2
        assert "is in use by another run" in second.stderr
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path):
    """A regular (non-editable) install finds configs inside the package: the wheel has them."""
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                           str(repo)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("hyperopt_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"hyperopt/configs/{p.relative_to(CONFIGS).as_posix()}" for p in CONFIGS.rglob("*.yaml")}
    assert "hyperopt/configs/config.yaml" in expected and expected <= names
    assert "hyperopt/cli.py" in names
