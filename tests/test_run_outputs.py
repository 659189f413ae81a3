"""What hyperopt-run leaves behind: the compile cache serves a second run, the final line
states summary.json's numbers, model.npz holds the returned model, user folds from a file or
a scikit-learn splitter match scikit-learn's KFold."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clihelpers import compose_run_config
from sklearn.linear_model import Ridge as SkRidge
from sklearn.model_selection import KFold

from hyperopt import cli, compile_cache
from hyperopt.data import load_dataset

CONSOLE_SCRIPT = Path(sys.executable).parent / "hyperopt-run"


def _console(*args, cwd, env):
    return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_second_run_reads_the_compile_cache_and_the_final_line_states_the_summary(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    args = ["steps=3", "logger=none", "stop=null"]
    runs = []
    for name in ("first", "second"):
        proc = _console(*args, f"hydra.run.dir={tmp_path / name}", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        runs.append((proc, json.loads((tmp_path / name / "summary.json").read_text())))
    (_, first), (proc, second) = runs
    cache = tmp_path / "xdg" / "hyperopt" / "jax"  # the default folder, under XDG_CACHE_HOME
    assert first["compile"]["cache_dir"] == str(cache) and any(cache.iterdir())
    assert not first["compile"]["from_cache"] and first["compile"]["cache"]["misses"] == 2
    assert not first["compile"]["programs_loaded"] and first["compile"]["trace_s"] > 0
    # the second run reads its two programs whole: nothing traced, nothing compiled
    assert second["compile"]["from_cache"] and second["compile"]["programs_loaded"]
    assert second["compile"]["trace_s"] == 0 and second["compile"]["cache"]["compiles"] == 0
    assert sorted(p.name.split("-")[0] for p in (cache / "hyperopt-programs").iterdir()) == [
        "hparams", "init", "refit", "step"]
    xla = lambda s: s["compile"]["step_s"] + s["compile"]["refit_s"]
    assert xla(second) < 0.25 * xla(first), (first["compile"], second["compile"])
    assert second["compile_time"] < 0.25 * first["compile_time"]
    # the same run, the same answer
    assert second["hparams"] == first["hparams"] and second["returned"] == first["returned"]

    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("hyperopt-run: ")][-1]
    m = re.fullmatch(r"hyperopt-run: (\w+) after (\d+) steps \(([\d.]+) s, ([\d.]+) s compiling from "
                     r"cache\): val loss (\S+) -> (\S+), test loss (\S+) -> (\S+); l2reg=(\S+); output (.+)",
                     line)
    assert m, line
    status, steps, total, comp, val0, val1, test0, test1, lam, out = m.groups()
    assert (status, int(steps), out) == (second["status"], second["steps"], str(tmp_path / "second"))
    assert float(total) == pytest.approx(second["total_time"], abs=0.051)
    assert float(comp) == pytest.approx(second["compile_time"], abs=0.051)
    for printed, value in [(val0, second["initial"]["val_loss"]), (val1, second["returned"]["val_loss"]),
                           (test0, second["initial"]["test_loss"]), (test1, second["returned"]["test_loss"]),
                           (lam, second["hparams"]["l2reg"])]:
        assert float(printed) == pytest.approx(value, rel=5e-4)  # 4 significant digits

    model = np.load(tmp_path / "second" / "model.npz")
    assert {"coef", "hparam_l2reg", "y_mean", "y_scale"} <= set(model.files)
    assert model["coef"].shape == (10,) and float(model["hparam_l2reg"]) == second["hparams"]["l2reg"]
    assert second["returned"]["model_file"] == "model.npz"


def _sklearn_cv_mse(data, lam, splitter, fit_intercept):
    X = np.concatenate([data.X_train, data.X_val])
    y = np.concatenate([data.y_train, data.y_val])
    models = [(SkRidge(alpha=lam * len(tr), fit_intercept=fit_intercept).fit(X[tr], y[tr]), va)
              for tr, va in splitter.split(X)]
    return np.mean([np.mean((m.predict(X[va]) - y[va]) ** 2) for m, va in models])


@pytest.mark.slow
def test_folds_from_a_file_or_a_splitter_match_sklearn_kfold(tmp_path):
    probe = compose_run_config(tmp_path / "probe", ["logger=none"])
    data = load_dataset(**{k: v for k, v in probe.dataset.items() if k != "_target_"}, seed=0)
    kf = KFold(4, shuffle=True, random_state=3)
    ridge = cli.build_bilevel(probe).problem
    expected = _sklearn_cv_mse(data, 0.1, kf, getattr(ridge, "fit_intercept", False))
    ids = np.empty(data.n_train + data.n_val, int)
    for k, (_, va) in enumerate(kf.split(ids)):
        ids[va] = k
    np.save(tmp_path / "folds.npy", ids)
    common = ["logger=none", "steps=1", "stop=null", "inner_tol=null", "solver.tol=1e-12",
              "problem.init_l2reg=0.1", f"compile_cache={tmp_path / 'cache'}"]
    splitter = ("cv_splitter={_target_:sklearn.model_selection.KFold,n_splits:4,shuffle:true,"
                "random_state:3}")
    try:
        for name, option in (("file", f"cv_folds={tmp_path / 'folds.npy'}"), ("splitter", splitter)):
            run_dir = tmp_path / name
            cli.run(compose_run_config(run_dir, [*common, option]))
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["final"]["val_loss"] == pytest.approx(expected, rel=1e-8), name
    finally:
        compile_cache.disable()  # cli.run turned it on for this process
    with pytest.raises(cli.ConfigError, match="cv_folds=3 and cv_splitter are both set"):
        cli.build(compose_run_config(tmp_path / "both", [*common, splitter, "cv_folds=3"]))
