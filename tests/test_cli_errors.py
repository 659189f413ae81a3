"""Bad configuration and input: one line naming the bad value and what is allowed,
exit status 2, no traceback, and nothing already written is touched."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from clihelpers import compose_run_config, hyperopt_run_many

from hyperopt import cli


def _run_expecting_error(tmp_path, capsys, overrides):
    run_dir = tmp_path / "run"
    cfg = compose_run_config(run_dir, ["logger=none", "steps=2", *overrides])
    with pytest.raises(SystemExit) as exit_info:
        cli.run_guarded(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hyperopt-run: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def _csv(path, rows, header="a,b,target"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# (id, overrides or a function of tmp_path giving overrides, expected message regex)
CASES = [
    ("penalty_negative", ["problem.init_l2reg=-1.0"], r"problem.init_l2reg=-1.0; allowed: a positive number"),
    ("penalty_zero", ["problem.init_l2reg=0"], r"problem.init_l2reg=0; allowed: a positive number"),
    ("maxiter_zero", ["solver.maxiter=0"], r"solver.maxiter=0; allowed: a positive integer"),
    ("start_unknown", ["start=grid"], r"start='grid'; allowed: auto, path, init"),
    ("start_path_without_path", ["experiment=lasso_synthetic", "start=path", "problem.init_l1reg=0.01"],
     r"start='path': problem 'lasso' has no regularization path here .*allowed: auto, init"),
    ("maxiter_negative", ["solver.maxiter=-5"], r"solver.maxiter=-5; allowed: a positive integer"),
    ("tol_zero", ["solver.tol=0.0"], r"solver.tol=0.0; allowed: a positive number or null"),
    ("tol_negative", ["solver.tol=-1e-3"], r"solver.tol=-0.001; allowed"),
    ("lr_zero", ["outer.learning_rate=0"], r"outer.learning_rate=0; allowed: a positive finite number"),
    ("lr_negative", ["outer.learning_rate=-0.1"], r"outer.learning_rate=-0.1; allowed"),
    ("lr_nan", ["outer.learning_rate=nan"], r"outer.learning_rate=nan; allowed: a positive finite"),
    ("steps_zero", ["steps=0"], r"steps=0; allowed: a positive integer"),
    ("blas_threads", ["blas_threads=0"], r"blas_threads=0; allowed: a positive integer or null"),
    ("stop_xtol", ["stop.xtol=often"], r"stop.xtol='often'; allowed: auto \(the problem's: 1e-2 for the lasso"),
    ("precision", ["precision=float16"], r"precision='float16'; allowed: float32, float64"),
    ("cv_folds", ["cv_folds=1"], r"cv_folds=1; allowed: 0 \(hold-out\) or an integer >= 2"),
    ("resume", ["resume=maybe"], r"resume='maybe'; allowed: auto, true, false"),
    ("inner_tol", ["inner_tol=[1e-3,1e-9,2.0]"], r"inner_tol=.*allowed: null or \[initial"),
    ("hparam_penalty", ["hparam_penalty=-1.0"], r"hparam_penalty=-1.0; allowed: a number >= 0"),
    ("wandb_mode", ["logger=wandb", "logger.mode=sometimes"], r"logger.mode='sometimes'; allowed"),
    ("bad_fraction", ["dataset.val_fraction=0.0"], r"val_fraction"),
    ("incompatible_solver", ["solver=block_cd"], r"problem 'ridge' cannot use solver BlockCoordinateDescent"),
    ("regression_to_classifier", ["problem=logistic"], r"(continuous|regression)"),
    ("no_cv_for_distillation", ["problem=distillation", "dataset=digits", "cv_folds=3"],
     r"cv_folds=3: problem 'distillation' has no cross-validated outer loss"),
    ("missing_file", lambda d: ["dataset=file", f"dataset.path={d}/nope.csv"], r"nope.csv"),
    ("non_numeric_cell", lambda d: ["dataset=file", f"dataset.path={_csv(d / 'x.csv', ['1,2,3', '4,abc,6'] * 10)}"],
     r"abc"),
    ("nan_feature", lambda d: ["dataset=file", f"dataset.path={_csv(d / 'x.csv', ['1,nan,3'] + ['4,5,6'] * 10)}"],
     r"(?i)nan"),
    ("inf_target", lambda d: ["dataset=file", f"dataset.path={_csv(d / 'x.csv', ['1,2,inf'] + ['4,5,6'] * 10)}"],
     r"(?i)inf"),
    ("missing_target_column", lambda d: ["dataset=file", f"dataset.path={_csv(d / 'x.csv', ['1,2,3'] * 12)}",
                                         "dataset.target=price"], r"price"),
    ("one_class_only", lambda d: ["dataset=file", "problem=logistic",
                                  f"dataset.path={_csv(d / 'x.csv', [f'{i},{i % 3},1' for i in range(30)])}"],
     r"all targets are 1; .* needs at least 2 classes"),
    ("unwritable_output", lambda d: [f"hydra.run.dir={_csv(d / 'afile', [])}/run"], r"(?i)not writable|afile"),
    ("search_without_penalties", ["search=random", "problem=distillation", "dataset=digits", "cv_folds=0"],
     r"search: problem 'distillation' has hyperparameters that are not penalties \(images\); allowed"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, capsys):
    _, overrides, pattern = case
    if callable(overrides):
        overrides = overrides(tmp_path)
    run_dir_override = [o for o in overrides if o.startswith("hydra.run.dir=")]
    if run_dir_override:  # compose_run_config sets the run dir itself
        overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
        cfg = compose_run_config(tmp_path / "afile" / "run", ["logger=none", *overrides])
        with pytest.raises(SystemExit) as exit_info:
            cli.run_guarded(cfg)
        assert exit_info.value.code == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line
    else:
        line = _run_expecting_error(tmp_path, capsys, overrides)
    assert re.search(pattern, line), line


# Bad command lines that the check before Hydra refuses (hyperopt.cli.check_overrides).
OVERRIDE_CASES = [
    ("unknown_option", ["dataset=nope"], r"dataset=nope; allowed: breast_cancer, diabetes, digits"),
    ("unknown_key", ["foo=1"], r"unknown key 'foo'; allowed: the top-level keys \(seed, steps, .*\), or \+foo=\.\.\."),
    ("unknown_sweep_option", ["-m", "mode=implicit,bogus"], r"mode=bogus; allowed: implicit, unrolled"),
    ("unknown_sub_key", ["solver.foo=1"], r"unknown key 'solver.foo'; allowed: the keys of solver \(maxiter, tol"),
    ("unknown_nested_option", ["mode/linear_solve=nope"], r"mode/linear_solve=nope; allowed: auto, bicgstab, cg"),
    ("nested_group_not_in_mode", ["mode=unrolled", "mode/linear_solve=cg"], r"Could not override 'mode/linear_solve'"),
    ("required_value_left_out", ["dataset=file"], r"dataset.path is required \(\?\?\? in its config file\)"),
    ("add_existing_key", ["+steps=3"], r"An item is already at 'steps'.*'\+\+steps=3'"),
    ("delete_unknown_key", ["~nokey"], r"Could not delete from config. 'nokey' does not exist"),
    ("package_of_a_group", ["dataset@foo=iris"], r"Could not override 'dataset@foo'.*\+dataset@foo=iris"),
    ("sweep_without_m", ["mode=implicit,unrolled"], r"mode=implicit,unrolled is a sweep; allowed: -m"),
    ("range_without_m", ["steps=range(1,3)"], r"steps=range\(1,3\) is a sweep; allowed: -m"),
    ("interval_with_basic_sweeper", ["-m", "steps=interval(1,3)"], r"basic sweeper runs lists of values"),
    ("bad_value_in_a_sweep", ["-m", "steps=2,0"], r"steps=0; allowed: a positive integer"),
    ("unknown_launcher", ["-m", "hydra/launcher=nope"], r"hydra/launcher=nope; allowed: basic, .*pip install"),
    ("sweep_over_hydra", ["-m", "hydra/launcher=basic,joblib"], r"Hydra's own settings take one value in a sweep"),
    ("unknown_hydra_key", ["hydra.foo=1"], r"unknown key 'hydra.foo'; allowed: the keys of hydra \(run, sweep"),
    ("unresolvable_interpolation", ["solver.maxiter=${nope}"], r"solver.maxiter: Interpolation key 'nope' not found"),
    ("list_where_a_number_belongs", ["inner_tol=5"], r"inner_tol=5; allowed: null or \[initial"),
    ("override_syntax", ["steps"], r"cannot parse 'steps' \(missing EQUAL"),
    ("unknown_flag", ["--foo"], r"unrecognized arguments: --foo"),
    ("override_after_a_flag", ["-m", "steps=2", "--resolve", "seed=1"],
     r"unrecognized arguments: seed=1.*; allowed: the flags first"),
    ("run_dir_uncreatable", ["hydra.run.dir=/proc/x"], r"hydra.run.dir=/proc/x: cannot create a folder in /proc"),
    ("run_dir_read_only", ["hydra.run.dir=/proc"], r"hydra.run.dir=/proc: cannot write in /proc"),
    ("run_dir_under_a_file", lambda d: [f"hydra.run.dir={_csv(d / 'afile', [])}/run"], r"afile is a file, not a folder"),
    ("search_unknown", ["search=unknown"], r"search=unknown; allowed: none, random, tpe"),
    ("search_trials_zero", ["search=random", "search.trials=0"], r"search.trials=0; allowed: a positive integer"),
    ("search_bounds", ["search=tpe", "search.low=1.0", "search.high=0.1"], r"search.high=0.1; allowed: a number > search.low"),
    ("sweep_dir_uncreatable", ["-m", "steps=2,3", "hydra.sweep.dir=/proc/x"],
     r"hydra.sweep.dir=/proc/x: cannot create a folder in /proc"),
]


def _with_defaults(args, defaults):
    """The case's arguments, then each of ``defaults`` whose key the case does not set."""
    keys = {a.split("=", 1)[0] for a in args}
    return [*args, *(d for d in defaults if d.split("=", 1)[0] not in keys)]


def _args(case, directory):
    _, args, _ = case
    return args(directory) if callable(args) else args


@pytest.mark.parametrize("case", OVERRIDE_CASES, ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_command_line_is_refused_before_hydra(case, tmp_path):
    with pytest.raises(cli.ConfigError, match=case[2]) as error:
        cli.check_overrides(_with_defaults(_args(case, tmp_path), ["logger=none"]))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("args", [
    ["dataset=file", "dataset.path=data.csv", "dataset.target=price"],  # a required (???) value given
    ["solver.maxiter=${steps}", "+foo=1", "~solver.history_size", "inner_tol=[1e-3,1e-9,0.5]"],
    ["+dataset@extra=iris", "outer.learning_rate=${oc.decode:'0.05'}", "logger.tags=[a,b]", "logger=wandb"],
    ["experiment=per_feature_logistic", "problem.per_feature=false", "hydra.job.chdir=false"],
    ["-m", "mode=implicit,unrolled", "experiment=ridge_diabetes,logistic_breast_cancer", "hydra/launcher=joblib"],
    ["-m", "steps=range(2,4)", "solver=choice(lbfgs,gradient_descent)", "dataset=glob(d*)", "mode/linear_solve=cg"],
    ["-m", "hydra/sweeper=basic", "outer=adam_cosine", "outer.learning_rate.init_value=0.2"],
    ["--cfg", "job", "steps=0"],  # prints the config: values are not checked, nothing runs
    ["hydra.mode=MULTIRUN", "mode=implicit,unrolled"],  # a sweep without -m, by Hydra's config
    ["--hydra-help"],
])
def test_good_command_lines_pass_the_check(args, tmp_path):
    cli.check_overrides(args)


def test_keys_an_experiment_adds_can_be_overridden(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(cli._config_dir(), configs)
    (configs / "experiment" / "noted.yaml").write_text(
        "# @package _global_\n# An experiment with a key of its own\nnote: hello\nsteps: 3\n")
    monkeypatch.setattr(cli, "_config_dir", lambda: str(configs))
    cli.check_overrides(["experiment=noted", "note=bye"])
    with pytest.raises(cli.ConfigError, match="unknown key 'note'"):
        cli.check_overrides(["experiment=ridge_diabetes", "note=bye"])


def test_the_output_folder_check_creates_nothing(tmp_path):
    cli.check_overrides([f"hydra.run.dir={tmp_path}/a/b/c"])
    cli.check_overrides([f"hydra.run.dir={tmp_path}"])
    assert list(tmp_path.iterdir()) == []


def _folder_with_a_run(directory):
    run_dir = directory / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "outer_loss": 1.0}\n')
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    return run_dir


# Bad input that the run itself refuses, after Hydra has composed the config.
RUN_CASES = [
    ("resume_false_on_a_run", lambda d: ["resume=false", f"hydra.run.dir={_folder_with_a_run(d)}"],
     r"resume=false but .* already holds a run"),
    ("resume_true_without_checkpoint", ["resume=true"], r"resume=true but .* holds no checkpoint"),
    ("deleted_key_the_run_needs", ["~hparam_penalty"], r"the run needs the config key 'hparam_penalty'"),
    # an all-zero lasso solution: the hypergradient is exactly zero and λ could never move
    ("lasso_start_above_lambda_max", ["experiment=lasso_synthetic", "problem.init_l1reg=100"],
     r"init_l1reg=100 is at or above lambda_max=[0-9.]+ of the training split: the lasso solution is all zero"),
]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_input_the_run_refuses(case, tmp_path, capsys):
    args = _args(case, tmp_path)
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), tmp_path / "run")
    cfg = compose_run_config(Path(run_dir), ["logger=none", "steps=2", *(a for a in args if not a.startswith("hydra."))])
    with pytest.raises(SystemExit) as exit_info:
        cli.run_guarded(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(case[2], err[0]), err


def _files(directory):
    """The files under ``directory`` with their contents (Hydra's own .hydra/ and log aside)."""
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*")
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != ".lock"}


@pytest.mark.slow
def test_every_bad_input_through_the_console_script(tmp_path):
    """Every case of this file as a user meets it: one ``hyperopt-run`` process per command,
    exit status 2, one line on stderr, files already there untouched. The processes run a few at
    a time; most of their time is the interpreter starting and importing."""
    commands, checks = [], []
    for name, args, pattern in [*CASES, *OVERRIDE_CASES, *RUN_CASES]:
        directory = tmp_path / name
        directory.mkdir()
        args = args(directory) if callable(args) else args
        run_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={directory}/run"]
        commands.append((_with_defaults(args, ["logger=none", "steps=2", *run_dir]), directory))
        checks.append((name, pattern, directory, _files(directory)))
    failures = []
    for (name, pattern, directory, before), proc in zip(checks, hyperopt_run_many(commands), strict=True):
        lines = proc.stderr.strip().splitlines()
        if not (proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("hyperopt-run: error: ")
                and re.search(pattern, lines[0]) and _files(directory) == before):
            failures.append(f"{name}: exit {proc.returncode}, stderr {proc.stderr.strip()[-600:]!r}")
    assert not failures, "\n".join(failures)


def test_error_leaves_earlier_results_untouched(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "outer_loss": 1.0}\n')
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    for overrides in (["solver.maxiter=0"], ["resume=false"]):
        cfg = compose_run_config(run_dir, ["logger=none", "steps=2", *overrides])
        with pytest.raises(SystemExit):
            cli.run_guarded(cfg)
        assert "hyperopt-run: error:" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"}
    assert after == before
    np.testing.assert_equal(sorted(after), sorted(before))


def test_rerunning_a_finished_run_changes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = compose_run_config(run_dir, ["logger=none", "steps=3", "solver=cholesky"])
    first = cli.run(cfg)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"}
    cfg = compose_run_config(run_dir, ["logger=none", "steps=3", "solver=cholesky"])
    assert cli.run(cfg) == first
    assert "already holds a finished run" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"}
    assert after == before


def test_unfinished_run_without_checkpoint_starts_over_in_a_clean_log(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "outer_loss": 9.0}\n{"step": 1, "outer_loss": 9.0}\n')
    cfg = compose_run_config(run_dir, ["logger=none", "steps=2", "solver=cholesky"])
    cli.run(cfg)
    assert "starting over" in capsys.readouterr().err
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1] and all(r["outer_loss"] != 9.0 for r in lines)


def test_cli_option_names_agree_with_the_library():
    """The CLI spells out the allowed refit values and stop keys (to check a command line
    without importing JAX): they must be the library's."""
    from hyperopt.bilevel import REFITS, StopRule

    assert cli.REFITS == REFITS and cli.STOP_KEYS == StopRule._fields
