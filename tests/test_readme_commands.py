"""Every command in README.md's shell code blocks, run the way a user runs it.

``hyperopt-run`` and ``hyperopt-report`` go through the installed console scripts and
``python experiments/...`` through this interpreter, each command its own process, in a fresh
working folder per chain of commands (a report runs after the sweep that writes its folder).
The table below says what the test adds to each documented command (fewer outer steps, no
wandb); a README command missing from it fails the test, so none can slip by untested.
"""

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from clihelpers import console_script
from omegaconf import OmegaConf

from hyperopt import cli, tracking

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}

# README command -> the arguments the test appends. The README's runs take 50-200 outer steps;
# a few show that the command works. logger=none where wandb is not the point (the first
# command keeps the default logger: offline wandb, what a newcomer gets).
APPENDED = {
    "hyperopt-run": ["steps=3"],
    "hyperopt-run dataset=file dataset.path=data.csv dataset.target=price": ["steps=3", "logger=none"],
    "hyperopt-run experiment=logistic_breast_cancer": ["steps=3", "logger=none"],
    "hyperopt-run experiment=distill_digits mode=unrolled outer.learning_rate=0.05":
        ["steps=2", "solver.maxiter=50", "logger=none"],
    "hyperopt-run -m mode=implicit,unrolled experiment=ridge_diabetes hydra/launcher=joblib "
    "hydra.sweep.dir=multirun/modes": ["steps=2", "logger=none"],
    "hyperopt-report multirun/modes": [],
    "hyperopt-run -m mode=implicit,unrolled experiment=logistic_breast_cancer,distill_digits logger=none "
    "hydra.sweep.dir=multirun/implicit_vs_unrolled": ["steps=2", "solver.maxiter=50"],
    "hyperopt-report multirun/implicit_vs_unrolled --out experiments/figures": [],
    "hyperopt-run -m search=none,random,tpe search.trials=50 experiment=logistic_breast_cancer logger=none "
    "hydra.sweep.dir=multirun/search": ["search.trials=4", "steps=3"],
    "hyperopt-report multirun/search": [],
    "hyperopt-run experiment=logistic_breast_cancer population=8 logger=none": ["steps=3"],
    "hyperopt-run experiment=ridge_diabetes shard_data=true logger=none": ["steps=3"],
    "hyperopt-run -m hydra/launcher=submitit_local seed=0,1 experiment=ridge_diabetes logger=none "
    "hydra.sweep.dir=multirun/local": ["steps=2"],
    "hyperopt-report multirun/local": [],
    "hyperopt-run -m hydra/launcher=ray +hydra.launcher.ray.init.num_cpus=2 seed=0,1 experiment=ridge_diabetes "
    "logger=none hydra.sweep.dir=multirun/ray": ["steps=2"],
}
# Commands this test leaves to CI (.ci/run), which installs the project into a fresh environment.
NOT_RUN_HERE = {
    "python3 -m venv .venv": "CI makes its own virtual environment",
    ". .venv/bin/activate": "CI activates its own virtual environment",
    "pip install -e .": "CI installs the project, with the test extras",
    "pip install -e '.[dev,joblib,compat,submitit,ray,optuna]'": "CI runs the README's test line (checked below)",
    "pytest -q -n auto": "the test suite itself: CI runs the README's test line (checked below)",
    # cluster commands: tests/test_cluster_sweeps.py runs the same sweeps through submitit_local
    # and through the Ray launcher on a local Ray head started by the test
    "hyperopt-run -m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 "
    "hydra.launcher.timeout_min=60 seed=0,1,2,3 experiment=per_feature_logistic hydra.sweep.dir=multirun/slurm":
        "needs a SLURM cluster (sbatch)",
    "ray start --head --port=6379": "starts a Ray head node for the next command, on a cluster",
    "hyperopt-run -m hydra/launcher=ray hydra.launcher.ray.init.address=HEAD:6379 "
    "+hydra.launcher.ray.init.object_store_memory=null seed=0,1,2,3 experiment=per_feature_logistic "
    "hydra.sweep.dir=multirun/ray_cluster": "needs a Ray cluster whose head is HEAD",
}
# A line that looks like a command, outside a shell block, would not be run: refused.
COMMAND_LIKE = re.compile(r"^\s*(\$ )?(hyperopt-run|hyperopt-report|python3? experiments/|pip install)(\s|$)")


def _blocks(text):
    """``(language, [lines])`` of each fenced code block."""
    return [(m.group(1), m.group(2).splitlines())
            for m in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, flags=re.S | re.M)]


def _commands(lines):
    """The commands of a shell block: comments dropped, ``\\`` continued, ``&&`` split."""
    commands = []
    for line in _joined(lines):
        tokens = shlex.split(line.removeprefix("$ "), comments=True)
        while tokens:
            head = tokens[:tokens.index("&&")] if "&&" in tokens else tokens
            commands.append(shlex.join(head))
            tokens = tokens[len(head) + 1:]
    return commands


def _joined(lines):
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return [line for line in out if line.strip()]


def readme_commands(text=None):
    """Every command of the README's shell blocks, in order, each once; and the command-like
    lines of other blocks."""
    text = README.read_text() if text is None else text
    commands, stray = [], []
    for language, lines in _blocks(text):
        if language in SHELL_BLOCKS:
            commands += [c for c in _commands(lines) if c not in commands]
        else:
            stray += [line for line in lines if COMMAND_LIKE.match(line)]
    return commands, stray


def test_every_readme_command_is_known():
    commands, stray = readme_commands()
    assert not stray, f"commands outside a ```bash block (never run by this test): {stray}"
    unknown = [c for c in commands if c not in APPENDED and c not in NOT_RUN_HERE]
    assert not unknown, ("README commands this test does not know how to run; add each to APPENDED "
                         f"in {Path(__file__).name}: {unknown}")
    stale = [c for c in [*APPENDED, *NOT_RUN_HERE] if c not in commands]
    assert not stale, f"entries for commands no longer in the README: {stale}"


def test_ci_runs_the_readmes_test_line():
    _, lines = next(b for b in _blocks(README.read_text()) if any("pytest" in line for line in b[1]))
    (test_line,) = [line for line in lines if "pytest" in line]
    assert test_line in (REPO / ".ci" / "run").read_text().splitlines()


def test_quick_start_shows_the_commands_of_the_help():
    """The README's quick start and ``hyperopt-run --help`` show the same two commands."""
    quick_start = README.read_text().split("## Quick start")[1].split("\n## ")[0]
    normal = lambda line: " ".join(line.split())
    readme = [normal(line) for _, lines in _blocks(quick_start) for line in lines
              if line.startswith("hyperopt-run")]
    help_lines = [normal(line) for line in cli.help_text().splitlines()]
    assert readme == [normal(f"{command} # {comment}") for command, comment in cli.QUICK_START]
    assert all(line in help_lines for line in readme)


def test_readme_lists_every_config_option():
    """The README's list of config groups and top-level options is the configs/ folder's."""
    text = " ".join(README.read_text().split("Config groups (`configs/`")[1].split("\n\n")[0].split())
    configs = Path(cli._config_dir())
    listed = {}
    for group, inside in re.findall(r"`([\w/]+)/` \(([^)]*)\)", text):
        parts = [piece.strip() for part in inside.split(",") for piece in part.split(":")]
        listed[group] = sorted(part for part in parts if part.isidentifier())
    groups = {d.relative_to(configs).as_posix() for d in configs.rglob("*") if any(d.glob("*.yaml"))} - {"."}
    assert listed == {g: sorted(p.stem for p in (configs / g).glob("*.yaml")) for g in groups}
    options = re.findall(r"`(\w+)", text.split("Top-level options:")[1].split(". ")[0])
    top = OmegaConf.load(configs / "config.yaml")
    assert options and all(option in top for option in options), options


def test_readme_commands_parse_as_a_shell_would():
    text = "```bash\na --x 'q r' && b  # note\nc \\\n  d\n```\n```text\nhyperopt-run: done\n```\n```\nhyperopt-run x=1\n```\n"
    commands, stray = readme_commands(text)
    assert commands == ["a --x 'q r'", "b", "c d"] and stray == ["hyperopt-run x=1"]


# ---------------------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------------------

def _write_price_table(path: Path):
    """A CSV like a user's: a header, integer prices (a regression target, not 120 classes)."""
    rng = np.random.default_rng(0)
    rooms, area, age = rng.integers(1, 6, 120), rng.uniform(30, 200, 120), rng.integers(0, 80, 120)
    price = np.round(20000 * rooms + 1500 * area - 300 * age + rng.normal(0, 5000, 120)).astype(int)
    rows = [f"{r},{a:.1f},{g},{p}" for r, a, g, p in zip(rooms, area, age, price, strict=True)]
    path.write_text("\n".join(["rooms,area,age,price", *rows]) + "\n")


FILES = {"data.csv": _write_price_table}  # files a command names, written into its folder first


def _argv(command: str) -> list[str]:
    tokens = shlex.split(command) + APPENDED[command]
    if tokens[0] in ("hyperopt-run", "hyperopt-report"):
        return [console_script(tokens[0]), *tokens[1:]]
    if tokens[0] in ("python", "python3") and tokens[1].startswith("experiments/"):
        return [sys.executable, str(REPO / tokens[1]), *tokens[2:]]
    raise AssertionError(f"no way to run {command!r}")


def _writes(command: str) -> str | None:
    """The folder a hyperopt-run command names with hydra.sweep.dir= / hydra.run.dir=."""
    match = re.search(r"hydra\.(?:sweep|run)\.dir=(\S+)", command)
    return match.group(1) if match else None


def _chains(commands):
    """Commands grouped as a user would run them: a report after the run that wrote its folder,
    everything else on its own."""
    chains = []
    for command in commands:
        tokens = shlex.split(command)
        if tokens[0] == "hyperopt-report":
            producer = [chain for chain in chains if _writes(chain[-1]) == tokens[1]]
            assert producer, f"{command!r}: no README command before it writes {tokens[1]}"
            producer[0].append(command)
        else:
            chains.append([command])
    return chains


def _run_chain(chain, folder: Path):
    folder.mkdir(parents=True)
    results = []
    for command in chain:
        for name, write in FILES.items():
            if name in shlex.split(command) or any(t.endswith("=" + name) for t in shlex.split(command)):
                write(folder / name)
        env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # the user's default: offline
        proc = subprocess.run(_argv(command), cwd=folder, env={**env, "WANDB_SILENT": "true"},
                              capture_output=True, text=True, timeout=900)
        results.append((command, proc))
        if proc.returncode != 0:
            break
    return results


def _check(command: str, proc, folder: Path) -> str | None:
    """What is wrong with a finished command, or None."""
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        return f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"
    tokens = shlex.split(command)
    if tokens[0] == "hyperopt-report":
        out = tokens[tokens.index("--out") + 1] if "--out" in tokens else tokens[1]
        figures = [f for f in re.findall(r"!\[[^]]*\]\(([^)]+)\)", README.read_text()) if f.startswith(out + "/")]
        missing = [f for f in [f"{out}/report.html", *figures] if not (folder / f).is_file()]
        return f"the README shows {missing}, which the command did not write" if missing else None
    if tokens[0] == "hyperopt-run":
        summaries = [tracking.read_summary(p.parent) for p in folder.rglob("summary.json")]
        jobs = 1
        for token in tokens:
            if "," in token and "=" in token and not token.startswith("hydra."):
                jobs *= len(token.split("=", 1)[1].split(","))
        if len(summaries) < jobs or any(s["status"] != "completed" for s in summaries):
            return f"expected {jobs} completed runs, found {[s['status'] for s in summaries]}"
        for run_dir in (p.parent for p in folder.rglob("summary.json")):  # what the README says a run holds
            missing = [f for f in ("config.yaml", "metrics.jsonl", "checkpoint.pkl") if not (run_dir / f).is_file()]
            if missing:
                return f"{run_dir} lacks {missing}"
        if "logger=none" not in command + " ".join(APPENDED[command]) and not list(folder.rglob("offline-run-*")):
            return "no offline wandb run"
    return None


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    commands, _ = readme_commands()
    chains = _chains([c for c in commands if c in APPENDED])
    folders = [tmp_path / f"chain{i}" for i in range(len(chains))]
    with ThreadPoolExecutor((os.cpu_count() or 2) + 1) as pool:
        results = list(pool.map(_run_chain, chains, folders))
    failures = [f"{command}: {problem}" for folder, chain in zip(folders, results, strict=True)
                for command, proc in chain if (problem := _check(command, proc, folder))]
    ran = [command for chain in results for command, _ in chain]
    assert not failures, "\n\n".join(failures)
    assert sorted(ran) == sorted(c for c in commands if c in APPENDED)
