"""Bad configuration and input: one line naming the bad value and what is allowed,
exit status 2, no traceback, and nothing already written is touched."""

import json
import re

import numpy as np
import pytest
from clihelpers import compose_run_config, hyperopt_run

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
    ("maxiter_negative", ["solver.maxiter=-5"], r"solver.maxiter=-5; allowed: a positive integer"),
    ("tol_zero", ["solver.tol=0.0"], r"solver.tol=0.0; allowed: a positive number or null"),
    ("tol_negative", ["solver.tol=-1e-3"], r"solver.tol=-0.001; allowed"),
    ("lr_zero", ["outer.learning_rate=0"], r"outer.learning_rate=0; allowed: a positive finite number"),
    ("lr_negative", ["outer.learning_rate=-0.1"], r"outer.learning_rate=-0.1; allowed"),
    ("lr_nan", ["outer.learning_rate=nan"], r"outer.learning_rate=nan; allowed: a positive finite"),
    ("steps_zero", ["steps=0"], r"steps=0; allowed: a positive integer"),
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


@pytest.mark.parametrize("args, pattern", [
    (["dataset=nope"], r"dataset=nope; allowed: breast_cancer, diabetes, digits"),
    (["foo=1"], r"unknown key 'foo'; allowed: existing keys .* or \+foo=\.\.\."),
    (["-m", "mode=implicit,bogus"], r"mode=bogus; allowed: implicit, unrolled"),
    (["solver.foo=1"], r"unknown key 'solver.foo'"),
])
def test_unknown_options_and_keys_are_one_line(args, pattern):
    with pytest.raises(cli.ConfigError, match=pattern):
        cli.check_overrides(args)


def test_cli_exit_status_and_no_traceback(tmp_path):
    """Through the real entry point: a typo and a bad value each give one line and exit 2."""
    for args in (["dataset=nope"], ["steps=0", "logger=none", f"hydra.run.dir={tmp_path}/r"]):
        proc = hyperopt_run(*args, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hyperopt-run: error:"), proc.stderr


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


def test_resume_true_without_checkpoint_is_refused(tmp_path, capsys):
    line = _run_expecting_error(tmp_path, capsys, ["resume=true"])
    assert "resume=true but" in line and "holds no checkpoint" in line


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
