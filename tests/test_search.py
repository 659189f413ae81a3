"""Black-box baselines (hyperopt.search, hyperopt-run search=random|tpe): random search finds the
closed-form best ridge penalty, the returned model is scikit-learn's ridge at the chosen λ, no
trial compiles anything, a resumed search ends as an uninterrupted one, and the command line
writes what a gradient-based run writes and shows up in hyperopt-report beside one."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from clihelpers import compose_run_config, console_script, hyperopt_run, hyperopt_run_many
from scipy.optimize import minimize_scalar
from sklearn.linear_model import Ridge as SkRidge

import hyperopt
from hyperopt import cli, compile_cache
from hyperopt.bilevel import Bilevel
from hyperopt.checkpoint import load_checkpoint, save_checkpoint
from hyperopt.data import load_dataset
from hyperopt.problems import Distillation, Lasso, Logistic, Ridge
from hyperopt.search import random_search, search, search_space, tpe_search

LOW, HIGH = 1e-4, 1e1


@pytest.fixture(scope="module", autouse=True)
def shared_compilations(tmp_path_factory):
    compile_cache.enable(tmp_path_factory.mktemp("jax_cache"))
    yield
    compile_cache.disable()


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes", seed=0)


def _ridge():
    fields = {f.name for f in dataclasses.fields(Ridge)}
    return Ridge(**({"fit_intercept": False} if "fit_intercept" in fields else {}))


def _holdout_ridge():
    return Bilevel(_ridge(), hyperopt.LBFGS, optax.adam(0.1), cv_folds=0)


def _val_mse(lam, data):
    """Closed form: w(λ) = (XᵀX/n + λI)⁻¹ Xᵀy/n on the training split, MSE on validation."""
    X, y = np.asarray(data.X_train), np.asarray(data.y_train)
    w = np.linalg.solve(X.T @ X / len(y) + lam * np.eye(X.shape[1]), X.T @ y / len(y))
    return float(np.mean((np.asarray(data.X_val) @ w - np.asarray(data.y_val)) ** 2))


def test_random_search_finds_the_closed_form_best_ridge_penalty(diabetes):
    opt = minimize_scalar(lambda t: _val_mse(np.exp(t), diabetes), bounds=(np.log(LOW), np.log(HIGH)),
                          method="bounded", options={"xatol": 1e-8})
    lam_star, best_star = float(np.exp(opt.x)), opt.fun
    assert LOW * 10 < lam_star < HIGH / 10  # an interior optimum, so the test means something

    result = random_search(_holdout_ridge(), diabetes, trials=40, seed=0, low=LOW, high=HIGH)
    lam = result.best_hparams["l2reg"]
    assert abs(np.log10(lam / lam_star)) < 0.25, (lam, lam_star)
    assert result.best_metrics["val_loss"] == pytest.approx(_val_mse(lam, diabetes), rel=1e-8)
    assert best_star <= result.best_metrics["val_loss"] <= best_star * 1.005
    # every trial's loss is the closed form at its λ, all λ inside the bounds, the best is the minimum
    lams = np.array([r["hparam/l2reg"] for r in result.history])
    np.testing.assert_allclose([r["val_loss"] for r in result.history],
                               [_val_mse(v, diabetes) for v in lams], rtol=1e-8)
    assert lams.min() >= LOW and lams.max() <= HIGH and lams.max() / lams.min() > 1e3
    assert result.state.best_step == int(np.argmin([r["outer_loss"] for r in result.history]))
    assert [r["trial"] for r in result.history] == list(range(40)) and result.status == "completed"

    # the returned model: scikit-learn's ridge on train ∪ val at the chosen λ (alpha = n λ)
    X = np.concatenate([diabetes.X_train, diabetes.X_val])
    y = np.concatenate([diabetes.y_train, diabetes.y_val])
    sk = SkRidge(alpha=len(y) * lam, fit_intercept=False, solver="cholesky", tol=1e-12).fit(X, y)
    np.testing.assert_allclose(np.asarray(result.model), sk.coef_, rtol=1e-6, atol=1e-9)
    test_mse = np.mean((np.asarray(diabetes.X_test) @ sk.coef_ - np.asarray(diabetes.y_test)) ** 2)
    assert result.model_metrics["test_loss"] == pytest.approx(test_mse, rel=1e-6)


def test_tpe_search_finds_it_too_and_the_draws_follow_the_seed(diabetes):
    bl = _holdout_ridge()
    opt = minimize_scalar(lambda t: _val_mse(np.exp(t), diabetes), bounds=(np.log(LOW), np.log(HIGH)),
                          method="bounded")
    tpe = tpe_search(bl, diabetes, trials=25, seed=0, low=LOW, high=HIGH, startup_trials=5)
    assert opt.fun <= tpe.best_metrics["val_loss"] <= opt.fun * 1.005
    lams = lambda r: [h["hparam/l2reg"] for h in r.history]
    # trial i depends on the seed and the trials before it only: a shorter search is a prefix
    short = tpe_search(bl, diabetes, trials=7, seed=0, low=LOW, high=HIGH, startup_trials=5)
    assert lams(short) == lams(tpe)[:7]
    assert lams(tpe_search(bl, diabetes, trials=7, seed=1, low=LOW, high=HIGH, startup_trials=5)) != lams(short)
    again = random_search(bl, diabetes, trials=5, seed=0, low=LOW, high=HIGH)
    other = random_search(bl, diabetes, trials=5, seed=1, low=LOW, high=HIGH)
    assert lams(again) == lams(random_search(bl, diabetes, trials=5, seed=0, low=LOW, high=HIGH))
    assert lams(again) != lams(other)


def test_no_trial_compiles_anything(diabetes):
    """One compiled program serves every trial (the hyperparameters are its arguments); the
    counter does see a compilation, so a recompiling trial would show."""
    bl = Bilevel(Logistic(per_feature=True), hyperopt.LBFGS, optax.adam(0.1), cv_folds=3)
    data = load_dataset("breast_cancer", seed=0)
    for sampler in ("random", "tpe"):
        result = search(bl, data, 6, sampler, seed=0)
        assert result.compile["compiles_during_trials"] == 0, result.compile
        assert len(result.history) == 6 and len({r["hparam_norm/l2reg"] for r in result.history}) == 6
    with compile_cache.CompileWatch() as watch:
        jax.jit(lambda x: x * 3.0).lower(1.0).compile()
    assert watch.compiles == 1


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_search_continues_at_the_next_trial_and_ends_as_an_uninterrupted_one(sampler, diabetes, tmp_path):
    bl = Bilevel(_ridge(), hyperopt.LBFGS, optax.adam(0.1), cv_folds=3)
    options = dict(seed=0, low=LOW, high=HIGH, startup_trials=3)
    whole = search(bl, diabetes, 8, sampler, **options)
    done = []
    first = search(bl, diabetes, 8, sampler, **options, should_stop=lambda: len(done) >= 3,
                   callback=lambda state, record: done.append(record))
    assert first.status == "interrupted" and first.state.step == 3
    save_checkpoint(tmp_path, first.state)
    state, _ = load_checkpoint(tmp_path)
    rest = search(bl, diabetes, 8, sampler, **options, state=state)
    assert [r["trial"] for r in rest.history] == [3, 4, 5, 6, 7]
    key = lambda r: (r["trial"], r["hparam/l2reg"], r["val_loss"], r["best_trial"])
    assert [key(r) for r in first.history + rest.history] == [key(r) for r in whole.history]
    assert rest.best_hparams == whole.best_hparams and rest.model_metrics == whole.model_metrics
    np.testing.assert_array_equal(np.asarray(rest.model), np.asarray(whole.model))
    with pytest.raises(ValueError, match="not this search"):
        search(bl, diabetes, 8, sampler, **{**options, "seed": 1}, state=state)


def test_a_problem_without_penalties_cannot_be_searched():
    data = load_dataset("digits", seed=0)
    with pytest.raises(ValueError, match=r"problem 'distillation' has hyperparameters that are not penalties"):
        search_space(Distillation(), data)
    space = search_space(Logistic(per_feature=True), data, 1e-3, 1.0)
    assert space.names[:2] == ("l2reg[0]", "l2reg[1]") and len(space.names) == data.n_features


def test_bounds_per_hyperparameter(diabetes):
    space = search_space(Lasso(elastic_net=True), diabetes, low={"l2reg": 1e-3}, high={"l1reg": 1.0})
    assert space.names == ("l1reg", "l2reg")
    np.testing.assert_array_equal(space.low, [1e-6, 1e-3])
    np.testing.assert_array_equal(space.high, [1.0, 1e2])
    theta = space.theta(np.array([0.5, 2.0]))  # θ = log λ, in the problem's own pytree
    np.testing.assert_allclose([theta["l1reg"], theta["l2reg"]], np.log([0.5, 2.0]), rtol=1e-15)
    with pytest.raises(ValueError, match=r"search bounds for l3; allowed: l1reg, l2reg"):
        search_space(Lasso(elastic_net=True), diabetes, low={"l3": 1.0})
    with pytest.raises(ValueError, match=r"search bounds of l1reg: low=1.0, high=0.5; allowed: 0 < low < high"):
        search_space(Lasso(), diabetes, low=1.0, high=0.5)


def test_tpe_without_optuna_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(cli.ConfigError, match=r"search=tpe needs Optuna, which is not installed; allowed: "
                                              r"pip install optuna"):
        cli.check_config(compose_run_config(tmp_path, ["search=tpe"]))
    cli.check_config(compose_run_config(tmp_path, ["search=random"]))


def test_a_gradient_run_does_not_resume_a_search(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cli.run(compose_run_config(run_dir, ["logger=none", "search=random", "search.trials=2", "solver=cholesky"]))
    cfg = compose_run_config(run_dir, ["logger=none", "steps=4", "solver=cholesky"])
    with pytest.raises(SystemExit) as exit_info:
        cli.run_guarded(cfg)
    assert exit_info.value.code == 2
    assert re.search(r"holds a search=random run; allowed", capsys.readouterr().err)


def _final_line(stdout):
    return [line for line in stdout.splitlines() if line.startswith("hyperopt-run: ")][-1]


@pytest.mark.slow
def test_search_through_the_console_script_beside_a_gradient_run_in_the_report(tmp_path):
    common = ["experiment=logistic_breast_cancer", "logger=none", "cv_folds=3"]
    runs = {"random": ["search=random", "search.trials=6"], "tpe": ["search=tpe", "search.trials=6"],
            "gradient": ["steps=4", "stop=null"]}
    procs = hyperopt_run_many([([*args, *common, f"hydra.run.dir=runs/{name}"], tmp_path)
                               for name, args in runs.items()])
    for proc in procs:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for name, proc in zip(runs, procs, strict=True):
        run_dir = tmp_path / "runs" / name
        summary = json.loads((run_dir / "summary.json").read_text())
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert (run_dir / "model.npz").is_file() and (run_dir / "checkpoint.pkl").is_file()
        line = _final_line(proc.stdout)
        unit = "steps" if name == "gradient" else "trials"
        m = re.fullmatch(rf"hyperopt-run: completed after (\d+) {unit} \([\d.]+ s, [\d.]+ s compiling[^)]*\): "
                         r"val loss (\S+) -> (\S+), test loss (\S+) -> (\S+); l2reg=(\S+); output (.+)", line)
        assert m, line
        if name == "gradient":
            assert "search" not in summary and summary["mode"] == "implicit"
            continue
        assert summary["search"] == name == summary["mode"] and summary["trials"] == 6 == int(m.group(1))
        assert [r["trial"] for r in lines] == list(range(6))
        assert all({"hparam/l2reg", "val_loss", "best_val_loss", "time", "step_time"} <= set(r) for r in lines)
        best = min(range(6), key=lambda i: lines[i]["outer_loss"])
        assert summary["best_step"] == best and summary["best"]["val_loss"] == lines[best]["val_loss"]
        assert lines[-1]["best_val_loss"] == lines[best]["val_loss"]
        assert summary["hparams"]["l2reg"] == pytest.approx(lines[best]["hparam/l2reg"], rel=1e-12)
        assert float(m.group(3)) == pytest.approx(lines[best]["val_loss"], rel=1e-3)
        assert float(m.group(5)) == pytest.approx(summary["returned"]["test_loss"], rel=1e-3)
        assert summary["compile"]["compiles_during_trials"] == 0
        model = np.load(run_dir / "model.npz")
        assert float(model["hparam_l2reg"]) == summary["hparams"]["l2reg"]

    report = hyperopt_report(tmp_path / "runs")
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "runs" / "report.html").read_text()
    for name in runs:
        assert re.search(rf"<td class=\"txt\">{name}</td>", html), name
    assert (tmp_path / "runs" / "best_loss.png").stat().st_size > 1000
    assert "Best validation loss so far" in html

    # a resumed search continues at the next trial: raise the trials of the finished one
    more, whole = hyperopt_run_many([(["search=random", "search.trials=9", *common, f"hydra.run.dir={d}"], tmp_path)
                                     for d in ("runs/random", "whole")])
    assert more.returncode == 0 and "resuming" in more.stderr and "from step 6" in more.stderr, more.stderr
    assert whole.returncode == 0, whole.stderr
    read = lambda d: [(r["trial"], r["hparam/l2reg"], r["val_loss"])
                      for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    assert read(tmp_path / "runs" / "random") == read(tmp_path / "whole")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "runs" / "random", tmp_path / "whole")]
    assert summaries[0]["hparams"] == summaries[1]["hparams"] and summaries[0]["returned"] == summaries[1]["returned"]


def hyperopt_report(path):
    return subprocess.run([console_script("hyperopt-report"), str(path)], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tpe_without_optuna_through_the_console_script(tmp_path):
    shadow = tmp_path / "shadow" / "optuna"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'optuna'\")\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    proc = hyperopt_run("search=tpe", "logger=none", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
                        env={"PYTHONPATH": path})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("hyperopt-run: error: search=tpe needs Optuna") and not (tmp_path / "run").exists()
