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


def run_quick(script: str, *args: str, timeout: int = 600) -> str:
    # a benchmark runs as users run it: XLA's optimizing passes and fusion emitters on
    # (tests/conftest.py turns them off for the tests)
    env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    flags = env.get("XLA_FLAGS", "").replace(FAST_COMPILE_XLA_FLAGS, "").strip()
    env = {**{k: v for k, v in env.items() if k != "XLA_FLAGS"}, **({"XLA_FLAGS": flags} if flags else {}),
           "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / script), "--quick", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("command: python experiments/" + script)
    assert "date: " in out and "machine: " in out and "jax " in out
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
    (rows,) = tables(run_quick("bench_vmap_lambdas.py"))
    assert [r["workload"] for r in rows] == ["ridge_diabetes", "logistic_breast_cancer"]
    for r in rows:
        assert num(r["λ"]) == 64
        assert num(r["max rel. diff"]) < 1e-6, r  # one vmap gives the 64 sequential hypergradients
        assert num(r["vs FD"]) < 1e-4, r  # and they are derivatives of the validation loss
        assert num(r["sequential s"]) > 0 and num(r["vmap s"]) > 0
        ratio = num(r["sequential / vmap"])
        assert abs(ratio - num(r["sequential s"]) / num(r["vmap s"])) < 0.02 * ratio + 0.01


def test_bench_search_quick(tmp_path):
    out = run_quick("bench_search.py", "--figures", str(tmp_path))
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
    out = run_quick("bench_svm_cost.py", "--figures", str(tmp_path))
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
