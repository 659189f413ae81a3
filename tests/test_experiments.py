"""The benchmark scripts of issue #12 in ``--quick`` mode, each in its own process, as CI runs them.

Each test reads the markdown table the script prints and checks that its numbers are sane:
hypergradients that agree with finite differences / closed forms, accuracies above chance,
searches that reach the validation loss a grid reaches. (The full-size numbers live in
``experiments/RESULTS.md``; these only guard the scripts against breaking.)
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_COMPILE_XLA_FLAGS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_quick(script: str, *args: str, timeout: int = 600, fast_compile: bool = False) -> str:
    """``experiments/<script> --quick``: XLA's optimizing passes on, as users run it
    (tests/conftest.py turns them off for the tests). ``fast_compile``: keep the tests' fusion
    emitters off (compiles ~2x faster here) for a script whose checks are on values, memory
    or counts, not on times measured against each other; its header prints the flags."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    flags = env.get("XLA_FLAGS", "")
    if not fast_compile:
        flags = flags.replace(FAST_COMPILE_XLA_FLAGS, "")
    flags = flags.strip()
    env = {**{k: v for k, v in env.items() if k != "XLA_FLAGS"}, **({"XLA_FLAGS": flags} if flags else {}),
           "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / script), "--quick", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    command = out.splitlines()[0].split()
    assert command[:2] == ["command:", "python"] and command[2].endswith("experiments/" + script), command
    assert "date: " in out and ("machine: " in out or " CPUs (" in out) and "jax " in out
    return out


def tables(stdout: str) -> list[list[dict]]:
    """Every markdown table of the output as a list of rows (dicts of cell strings)."""
    found, lines = [], stdout.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("| ") and lines[i + 1].startswith("| ---"):
            head = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(head, cells, strict=True)))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def num(cell: str) -> float:
    return float(cell.split()[0].rstrip("×x%"))


def test_bench_vmap_lambdas_quick():
    (rows,) = tables(run_quick("bench_vmap_lambdas.py", fast_compile=True))
    assert [r["workload"] for r in rows] == ["ridge_diabetes", "logistic_breast_cancer"]
    for r in rows:
        assert num(r["λ"]) == 64
        assert num(r["max rel. diff"]) < 1e-6, r  # one vmap gives the 64 sequential hypergradients
        assert num(r["vs FD"]) < 1e-4, r  # and they are derivatives of the validation loss
        assert num(r["sequential s"]) > 0 and num(r["vmap s"]) > 0
        ratio = num(r["sequential / vmap"])
        assert abs(ratio - num(r["sequential s"]) / num(r["vmap s"])) < 0.02 * ratio + 0.01


def test_bench_search_quick(tmp_path):
    out = run_quick("bench_search.py", "--figures", str(tmp_path), fast_compile=True)
    assert (tmp_path / "search.png").stat().st_size > 10_000
    logistic, per_feature, summary = tables(out)
    by = {r["method"]: r for r in logistic}
    assert set(by) == {"hyperopt implicit", "LogisticRegressionCV(10)", "LogisticRegressionCV(100)",
                       "random search", "TPE (Optuna)"}
    for r in logistic + per_feature:
        assert 0.03 < num(r["val"]) < 0.2 and 0.03 < num(r["test"]) < 0.3, r  # log-loss; chance is 0.66
    # One λ: the hypergradient search reaches the 100-point grid's CV loss and is within 1 %
    # of the best any method found (its t1 is finite).
    assert num(by["hyperopt implicit"]["val"]) <= num(by["LogisticRegressionCV(100)"]["val"]) * (1 + 1e-4)
    assert num(by["hyperopt implicit"]["t1"]) < float("inf")
    assert num(by["random search"]["evals"]) == num(by["TPE (Optuna)"]["evals"]) == 10
    # 30 per-feature λ: a lower CV loss than the best single λ of the 10-point grid.
    pf = {r["method"]: r for r in per_feature}
    assert num(pf["hyperopt implicit"]["val"]) < num(pf["LogisticRegressionCV(10) (one λ)"]["val"])
    assert len(summary) == len(logistic) + len(per_feature)


def test_bench_distillation_quick(tmp_path):
    out = run_quick("bench_distillation.py", "--figures", str(tmp_path))
    assert (tmp_path / "distillation_images.png").stat().st_size > 10_000
    accuracy, cost = tables(out)
    acc = {r["trained on"].split(" (")[0] if "learned" in r["trained on"] else r["trained on"]: r
           for r in accuracy}
    mean = lambda name: num(acc[name]["test accuracy (mean ± std)"])
    learned = num(next(r for r in accuracy if "implicit" in r["trained on"])["test accuracy (mean ± std)"])
    assert all(0.1 < num(r["min"]) <= num(r["max"]) <= 1 for r in accuracy)  # chance is 0.1
    assert learned > mean("10 random real images") + 0.15  # the point of distillation
    assert learned > mean("10 class means")
    implicit, unrolled = cost
    assert num(implicit["ms per outer step (median)"]) > 0
    assert num(unrolled["unrolled / implicit"]) > 1  # 200 unrolled LBFGS steps cost more than a solve


def test_bench_svm_cost_quick(tmp_path):
    out = run_quick("bench_svm_cost.py", "--figures", str(tmp_path), fast_compile=True)
    assert (tmp_path / "svm_cost.png").stat().st_size > 10_000
    iters, size, tol = tables(out)
    assert {(r["solver"], r["mode"]) for r in iters} == {(s, m) for s in ("bcd", "pg", "md")
                                                         for m in ("implicit", "unrolled")}
    for r in iters + size:
        assert num(r["temp MiB"]) > 0 and num(r["hypergrad ms"]) > 0, r
        assert num(r["iters"]) == num(r["maxiter"]), r  # tol 1e-300: every solve runs maxiter
    # Implicit memory does not grow with the inner iterations; unrolled memory does.
    for solver in ("bcd", "pg", "md"):
        imp = [num(r["temp MiB"]) for r in iters if r["solver"] == solver and r["mode"] == "implicit"]
        unr = [num(r["temp MiB"]) for r in iters if r["solver"] == solver and r["mode"] == "unrolled"]
        assert max(imp) <= min(imp) * 1.01 and unr[-1] > 2 * unr[0], (solver, imp, unr)
    # 100 BCD epochs on wine: the implicit hypergradient is within 1e-3 of the finite difference.
    bcd = next(r for r in iters if r["solver"] == "bcd" and r["mode"] == "implicit" and r["maxiter"] == "100")
    assert num(bcd["rel. error"]) < 1e-3
    # Error vs tol: ridge (closed form) and the SVM dual (FD) at tol 1e-8, both modes.
    for r in tol:
        if num(r["tol"]) == 1e-8:
            assert num(r["rel. error"]) < 1e-4, r
    ridge = [num(r["rel. error"]) for r in tol if r["data"] == "ridge" and r["mode"] == "implicit"]
    assert ridge[-1] < ridge[0] / 100  # tighter inner tolerance, more accurate hypergradient


def test_bench_population_quick():
    out = run_quick("bench_population.py")
    (rows,) = tables(out)
    by = {int(num(r["K"])): r for r in rows}
    assert set(by) == {1, 8}
    for r in by.values():
        assert num(r["K separate runs s"]) > 0 and num(r["population loop s"]) > 0
        assert num(r["speed-up (wall)"]) == pytest.approx(num(r["K separate runs s"]) / num(r["population s"]),
                                                          rel=0.02)
    # one program for 8 members instead of 8 compilations: the population is faster end to end
    assert num(by[8]["speed-up (wall)"]) > 1.5, by[8]
    # its best member is at least as good as the single run (member 0 starts where it starts)
    assert num(by[8]["best loss"]) <= num(by[1]["best loss"]) * (1 + 1e-6)


def test_bench_sweep_cache_quick():
    out = run_quick("bench_sweep_cache.py")
    (rows,) = tables(out)
    off, on = rows
    assert (off["sweep"], on["sweep"]) == ("no cache", "compile cache")
    assert num(off["jobs from cache"]) == 0 and num(on["jobs from cache"]) == 1  # the second of 2 jobs
    assert num(on["compile s (sum)"]) < num(off["compile s (sum)"])


def test_quickstart_ridge_reaches_the_closed_form_optimum():
    """The library-only example tunes λ to the validation loss of the best closed-form ridge."""
    import numpy as np

    from hyperopt.data import load_dataset

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "quickstart_ridge.py")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [line.split() for line in proc.stdout.splitlines() if line.startswith("step")]
    losses, lams = [float(s[4]) for s in steps], [float(s[6]) for s in steps]
    assert len(losses) == 30
    d = load_dataset("diabetes", seed=0)
    X, y, Xv, yv = (np.asarray(a, np.float64) for a in (d.X_train, d.y_train, d.X_val, d.y_val))
    n, p = X.shape

    def val(lam):  # mean squared residual + lam/2 |w|^2: (2 X'X/n + lam I) w = 2 X'y/n
        w = np.linalg.solve(2 * X.T @ X / n + lam * np.eye(p), 2 * X.T @ y / n)
        return np.mean((Xv @ w - yv) ** 2)

    grid = np.logspace(-4, 1, 2001)
    values = [val(lam) for lam in grid]
    best, argbest = min(values), grid[int(np.argmin(values))]  # 0.46401 at λ = 0.151
    assert losses[-1] < losses[0]
    assert best - 5e-7 <= losses[-1] <= best + 1e-4, (losses[-1], best)  # printed to 6 decimals
    assert argbest / 1.5 < lams[-1] < argbest * 1.5, (lams[-1], argbest)


def test_bench_inner_solvers_quick():
    lasso, logistic, linear = tables(run_quick("bench_inner_solvers.py", fast_compile=True))
    assert len(lasso) == 8 and len(logistic) == 2
    for r in lasso + logistic:
        assert num(r["hyperopt cold s" if "hyperopt cold s" in r else "hyperopt s"]) > 0, r
        # the same minimizer as scikit-learn's solver at the same tolerance
        assert abs(float(r["objective - sklearn's"])) < (1e-6 if float(r["tol"]) < 1e-6 else 1e-3), r
    for r in lasso:
        if float(r["tol"]) < 1e-6:
            assert num(r["‖w − w_sk‖ / ‖w_sk‖"]) < 1e-6, r
    assert {num(r["unknowns"]) for r in linear} == {25, 100, 400}
    for r in linear:
        assert num(r["cg / lu"]) == pytest.approx(num(r["cg s"]) / num(r["lu s"]), rel=0.02)


def test_bench_jaxopt_quick():
    (rows,) = tables(run_quick("bench_jaxopt.py", fast_compile=True))
    assert {(r["problem"].split()[0], r["solver"]) for r in rows} == {
        (p, s) for p in ("ridge", "digits") for s in ("GradientDescent", "LBFGS")}
    for r in rows:
        # the same hypergradient as the real jaxopt package's, and the value it gives
        assert num(r["rel diff hypergrad"]) < 1e-6 and num(r["rel diff value"]) < 1e-6, r
        assert num(r["ratio"]) == pytest.approx(num(r["hyperopt s"]) / num(r["jaxopt s"]), rel=0.02, abs=0.01)
        if r["solver"] == "LBFGS":  # the same iterates: the same number of them
            ours, theirs = r["inner iters (h/j)"].split("/")
            assert ours == theirs, r


def test_bench_hypergradient_quick():
    main, default, _detail = tables(run_quick("bench_hypergradient.py", fast_compile=True))
    modes = {"implicit", "implicit+lu", "unrolled", "unrolled+ckpt"}
    for problem in ("ridge", "logistic"):
        rows = [r for r in main if r["problem"].startswith(problem)]
        assert {(num(r["maxiter"]), r["mode"]) for r in rows} == {(m, mode) for m in (10, 100) for mode in modes}
        for r in rows:
            assert num(r["iters run"]) == num(r["maxiter"]), r  # tol 1e-300: every solve runs maxiter
        temp = {(num(r["maxiter"]), r["mode"]): num(r["temp MiB (hg)"]) for r in rows}
        assert temp[100, "unrolled"] > 2 * temp[10, "unrolled"], temp  # unrolling stores the iterates
        assert temp[100, "implicit"] <= temp[10, "implicit"] * 1.01 + 0.01, temp  # implicit does not
        # default tol (maxiter 100): the solves that converged before maxiter give the exact
        # hypergradient in every mode; all of them are closer to it than the 10-iteration ones
        worst_at_10 = max(num(r["rel. error"]) for r in rows if num(r["maxiter"]) == 10)
        for r in (r for r in default if r["problem"].startswith(problem)):
            assert num(r["rel. error"]) < (1e-6 if num(r["iters run"]) < num(r["maxiter"]) else worst_at_10), r


def test_bench_sparse_ops_quick():
    found = tables(run_quick("bench_sparse_ops.py", fast_compile=True))
    assert len(found) == 2  # rcv1 x0.1 and x0.25
    for rows in found:
        assert [r["operation"] for r in rows][:3] == ["X @ w", "X @ W (K=10)", "Xᵀ r"] and len(rows) == 9
        for r in rows:
            segsum, bcoo = num(r["segsum ms (compile)"]), num(r["BCOO ms (compile)"])
            assert segsum > 0 and bcoo > 0, r
            assert num(r["BCOO / segsum"]) == pytest.approx(bcoo / segsum, rel=0.1, abs=0.02), r


def test_bench_sparse_scaling_quick():
    (rows,) = tables(run_quick("bench_sparse_scaling.py", fast_compile=True))
    assert [(r["problem"], r["storage"]) for r in rows] == [
        ("lasso", "sparse"), ("lasso", "sparse"), ("logistic", "sparse"), ("logistic", "sparse"), ("ridge", "dense")]
    for r in rows:
        assert r["hypergrad finite"] == "True" and num(r["residual"]) < 1e-5, r
        assert num(r["step s"]) > 0 and num(r["peak MiB"]) < 1500, r
    for problem in ("lasso", "logistic"):  # twice the scale: about 4x the non-zeros (both sizes double)
        small, large = (num(r["nnz"]) for r in rows if r["problem"] == problem)
        assert 3 < large / small < 5.5, (problem, small, large)


def test_bench_lasso_cv_quick():
    out = run_quick("bench_lasso_cv.py")
    found = tables(out)  # one table per workload, in this order
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("## ")] == [
        "## cv_lasso", "## logistic_breast_cancer"]
    for rows, grid in zip(found, ("LassoCV(100)", "LogisticRegressionCV(30)"), strict=True):
        by = {r["method"]: r for r in rows}
        assert {grid, "hyperopt cold", "hyperopt warm"} <= set(by), by
        assert num(by[grid]["vs best grid"]) == 0  # the reference of the column
        for method in ("hyperopt cold", "hyperopt warm"):
            # the hypergradient search reaches the 100-point (30-point) grid's CV criterion, as
            # recomputed by scikit-learn at the chosen penalty, to 0.1 %
            assert num(by[method]["vs best grid"]) < 1e-3, by[method]
            assert num(by[method]["wall s"]) > 0
        assert num(by["hyperopt warm"]["wall s"]) < num(by["hyperopt cold"]["wall s"])  # stored programs


def test_bench_sparse_lasso_quick(tmp_path):
    out = run_quick("bench_sparse_lasso.py", "--cache-dir", str(tmp_path), fast_compile=True)
    lasso, logistic, per_feature = tables(out)
    for r in lasso + logistic + per_feature:
        assert not r["status"].startswith("failed"), r
        assert num(r["peak MiB"]) < 1536, r
    by = {("cv_folds=5" in r["method"], r["method"].startswith("LassoCV")): r for r in lasso}
    peer = by[False, True]
    for cv in (False, True):  # hold-out and 5-fold: the held-out R² of LassoCV's choice, or close to it
        assert num(by[cv, False]["test R²"]) > num(peer["test R²"]) - 0.05, (by[cv, False], peer)
    ours, first, second, sk = logistic
    assert num(ours["test log-loss"]) < num(sk["test log-loss"]) * 1.1, (ours, sk)
    # the second run reads the first run's stored programs: the same run, to the last digit
    assert "first run" in first["method"] and "second run" in second["method"]
    for r in (first, second):
        assert (r["steps"], r["val log-loss"], r["test log-loss"]) == (
            ours["steps"], ours["val log-loss"], ours["test log-loss"]), (r, ours)
    assert "logistic (second run) test log-loss" in out
    assert "per-feature penalties on p = " in out
