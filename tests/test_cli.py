"""hyperopt-run end to end: config composition, every experiment, sweeps, kill and resume."""

import contextlib
import fcntl
import io
import json
import os
import pty
import random
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from clihelpers import compose_run_config, console_script, hyperopt_run, hyperopt_run_many, start_hyperopt_run
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hyperopt import cli, tracking
from hyperopt.problems.base import solver_class

CONFIGS = Path(cli._config_dir())
GROUPS = ("dataset", "problem", "solver", "mode", "mode/linear_solve", "outer", "logger", "search")
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))

# Which solvers each problem is meant to work with (everything else must be refused clearly).
COMPATIBLE = {
    "ridge": {"lbfgs", "gradient_descent", "cholesky"},
    "logistic": {"lbfgs", "gradient_descent"},
    "lasso": {"coordinate_descent", "proximal_gradient", "block_cd"},
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


def _run_on_a_terminal(args, cwd, columns=120):
    """Runs the console script with stderr on a pseudo-terminal; returns (exit status, stdout,
    what the terminal showed)."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([console_script("hyperopt-run"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=terminal, env={**os.environ, "WANDB_MODE": "disabled"})
    os.close(terminal)
    shown = []
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while data := os.read(master, 4096):
            shown.append(data)
    os.close(master)
    stdout = proc.communicate(timeout=300)[0]
    return proc.returncode, stdout.decode(), b"".join(shown).decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal_and_silence_in_a_pipe(tmp_path):
    """The default run through the console script, twice at once: on a terminal it shows a
    progress bar (step, outer loss, inner iterations, rate, time left); into a pipe, nothing."""
    args = lambda name: ["steps=4", "logger=none", f"hydra.run.dir={tmp_path}/{name}"]
    with ThreadPoolExecutor(2) as pool:
        on_terminal = pool.submit(_run_on_a_terminal, args("tty"), tmp_path)
        in_a_pipe = pool.submit(hyperopt_run, *args("pipe"), cwd=tmp_path)
        code, stdout, shown = on_terminal.result()
        piped = in_a_pipe.result()
    assert code == 0, shown
    assert re.search(r"hyperopt-run: .*4/4 \[\d\d:\d\d<00:00, +[\d.]+(step/s|s/step), outer loss [\d.e-]+, "
                     r"inner iters \d+\]", shown), shown
    assert "\r" in shown and "completed after 4 steps" in stdout  # redrawn in place
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and "completed after 4 steps" in piped.stdout
    for name in ("tty", "pipe"):
        _check_run_folder(tmp_path / name, 4)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream", [_Terminal, io.StringIO])
def test_progress_is_shown_only_on_a_terminal(stream, monkeypatch):
    monkeypatch.setattr(sys, "stderr", stream())
    progress = cli._Progress(steps=3, done=1)  # resumed after one step
    for step in (1, 2):
        progress.update({"step": step, "outer_loss": 0.25, "inner_iterations": 7})
    progress.write("hyperopt-run: warning: a line between updates")
    progress.close()
    shown = sys.stderr.getvalue()
    if stream is _Terminal:
        assert "3/3" in shown and "outer loss 0.25, inner iters 7" in shown and "a line between" in shown
    else:
        assert shown == "hyperopt-run: warning: a line between updates\n"


@pytest.mark.parametrize("launcher, shown", [("basic", True), ("joblib", False)])
def test_no_progress_bars_from_the_parallel_jobs_of_a_sweep(launcher, shown, tmp_path, monkeypatch):
    compose_run_config(tmp_path, ["hydra.mode=MULTIRUN", f"hydra/launcher={launcher}"])  # sets HydraConfig
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert cli._shows_progress() is shown


def test_every_config_file_has_a_one_line_description():
    """``hyperopt-run --help`` shows each option with the first comment of its file."""
    for path in CONFIGS.rglob("*.yaml"):
        description = cli._description(path)
        assert description and len(description) <= 110, f"{path}: first comment line {description!r}"


def test_help_lists_every_experiment_option_and_default():
    text = cli.help_text()
    for path in CONFIGS.rglob("*.yaml"):
        if path.name == "config.yaml":
            continue
        group = path.parent.relative_to(CONFIGS).as_posix()
        assert re.search(rf"^  {re.escape(group)}={path.stem}( \*)? +{re.escape(cli._description(path))}$",
                         text, flags=re.M), path
    defaults = OmegaConf.load(CONFIGS / "config.yaml")
    for key in ("steps", "precision", "cv_folds", "resume"):
        assert re.search(rf"^  {key}={defaults[key]}\b", text, flags=re.M), key
    assert re.search(r"^  dataset=diabetes \* ", text, flags=re.M)  # the default of a group
    assert text.startswith(f"hyperopt-run: {cli.PURPOSE}\n")


@pytest.mark.slow
def test_help_through_the_console_script(tmp_path):
    helped, short, hydra_help, version = hyperopt_run_many(
        [(["--help"], tmp_path), (["-h"], tmp_path), (["--hydra-help"], tmp_path), (["--version"], tmp_path)])
    assert version.returncode == 0 and re.fullmatch(r"hyperopt-run \d+\.\d+\.\d+\S* \(Hydra [\d.]+\)\n", version.stdout)
    assert helped.returncode == 0 and helped.stdout.strip() == cli.help_text() and helped.stderr == ""
    assert short.returncode == 0 and short.stdout == helped.stdout
    assert hydra_help.returncode == 0 and "Hydra" in hydra_help.stdout and "--hydra-help" in hydra_help.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_file_with_integer_targets_is_what_the_problem_needs(tmp_path):
    """A data file has no task of its own: integer prices are a regression target for ridge; 0/1
    labels are classes for logistic regression."""
    rows = [f"{i % 7},{(i * 3) % 11},{1000 + 37 * i}" for i in range(40)]
    (tmp_path / "prices.csv").write_text("\n".join(["a,b,price", *rows]) + "\n")
    cfg = compose_run_config(tmp_path, ["dataset=file", f"dataset.path={tmp_path}/prices.csv",
                                        "dataset.target=price", "solver=cholesky"])
    data, _, _ = cli.build(cfg)
    assert data.task == "regression" and data.n_classes == 0
    rows = [f"{i % 7},{(i * 3) % 11},{i % 2}" for i in range(40)]
    (tmp_path / "labels.csv").write_text("\n".join(["a,b,label", *rows]) + "\n")
    cfg = compose_run_config(tmp_path, ["dataset=file", f"dataset.path={tmp_path}/labels.csv",
                                        "dataset.target=label", "problem=logistic"])
    data, _, _ = cli.build(cfg)
    assert data.task == "binary" and data.n_classes == 2


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


@pytest.mark.parametrize("overrides, expected", [
    (["solver.maxiter=2"], [r"inner solver stopped at solver\.maxiter=2 with error [\d.e+-]+ > tol [\d.e+-]+"]),
    (["mode/linear_solve=cg", "mode.linear_solve.maxiter=1"],
     [r"LinearSolveWarning: implicit linear solve: relative residual [\d.e+-]+ > [\d.e+-]+ at outer step 0"]),
])
def test_an_inaccurate_step_warns_once_per_run(overrides, expected, tmp_path, capsys):
    """The README's 'when things go wrong': one line per kind of warning and run (not one per
    outer step), and the numbers of every step in metrics.jsonl."""
    cfg = compose_run_config(tmp_path, ["logger=none", "steps=3", "checkpoint_every=0", *overrides])
    cli.run(cfg)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert line.startswith("hyperopt-run: warning: ") and re.search(pattern, line), line
    records = tracking.read_metrics(tmp_path)
    if "solver.maxiter=2" in overrides:
        assert not any(r["inner_converged"] for r in records) and all(r["inner_iterations"] == 2 for r in records)
    else:
        assert all(r["linear_residual"] > 1e-6 for r in records)
