"""Inner solvers vs scikit-learn's at the same tolerance, and the dense-vs-iterative crossover
of the implicit linear system (issue #15, items 2 and 3).

    python experiments/bench_inner_solvers.py            # medians of 5
    python experiments/bench_inner_solvers.py --quick    # small sizes, one repetition

Part 1, inner solves (float64, one thread, compiled once, then timed; warm = started from
the solution at a 10 % larger penalty, as in an outer loop):

* lasso / elastic net: :class:`hyperopt.CoordinateDescent` (its ``tol`` is scikit-learn's:
  duality gap <= tol · ||y||² / n) vs ``sklearn.linear_model.Lasso`` / ``ElasticNet``
  (coordinate descent, ``tol=1e-4`` and ``1e-8``) on ``make_regression`` data of two shapes
  (n=400, p=1000 and n=58, p=7129, the two lasso workloads of ``bench_lasso_cv.py``), with an
  intercept, at ``λ = 0.1 λ_max`` and ``0.5 λ_max``. Columns: wall time, the objective
  reached, and the relative distance between the two solutions.
* L2 logistic: :class:`hyperopt.LBFGS` (tol on the gradient norm) vs
  ``LogisticRegression(solver="lbfgs")`` (its ``tol`` is on the projected gradient's max
  entry) on breast_cancer and digits, ``λ = 1e-2``; the objective reached is printed, so
  that the two tolerances can be compared by their result.

Part 2, the implicit system ``(XᵀX/n + λI) v = g`` (a ridge Hessian, p unknowns, n = 2p):
``solve_lu`` (materializes the matrix with one batched matvec) vs ``solve_cg`` and
``solve_gmres`` (matrix-free) for p from 25 to 3200 (``--quick``: 25, 100, 400), at
λ = 1e-2 and 1e-4 (condition numbers about 34 and 1e3). The printed crossover is the
size from which each iterative solver stays faster than LU; ``linear_solve.solve_auto``
takes GMRES (it does not assume symmetry) above its ``dense_threshold``, chosen from
these numbers.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, median, one_thread  # noqa: E402


def best_time(fn, repeats):
    """Median wall time of ``fn()`` (already compiled) over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def lasso_case(X, y, kind, ratio, tol, repeats, jax, jnp, np):
    """One lasso / elastic-net solve by both libraries, cold and warm."""
    from sklearn.linear_model import ElasticNet, Lasso

    from hyperopt.solvers import CoordinateDescent

    n, p = X.shape
    lam = ratio * np.max(np.abs((X - X.mean(0)).T @ (y - y.mean()))) / n
    l1, l2 = (lam, 0.0) if kind == "lasso" else (0.5 * lam, 0.5 * lam)

    def objective(w, b):
        r = y - X @ w - b
        return 0.5 * np.mean(r ** 2) + l1 * np.abs(w).sum() + 0.5 * l2 * (w ** 2).sum()

    def sk_model(tol, alpha=lam, warm=None):
        model = (Lasso(alpha=alpha, tol=tol, max_iter=100_000) if kind == "lasso" else
                 ElasticNet(alpha=alpha, l1_ratio=0.5, tol=tol, max_iter=100_000))
        if warm is not None:
            model.set_params(warm_start=True)
            model.coef_ = warm.copy()
        return model

    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    hyper = jnp.asarray(l1) if kind == "lasso" else (jnp.asarray(l1), jnp.asarray(l2))
    cd = CoordinateDescent(fit_intercept=True, tol=tol, maxiter=1000)
    run = jax.jit(lambda w0, h: cd.run(w0, h, Xj, yj))
    w_warm = run(jnp.zeros(p), jax.tree.map(lambda h: 1.1 * h, hyper)).params
    out = jax.block_until_ready(run(jnp.zeros(p), hyper))
    t_cold = best_time(lambda: jax.block_until_ready(run(jnp.zeros(p), hyper)), repeats)
    t_warm = best_time(lambda: jax.block_until_ready(run(w_warm, hyper)), repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm_sk = sk_model(1e-10, alpha=1.1 * lam).fit(X, y).coef_
        sk = sk_model(tol).fit(X, y)
        s_cold = best_time(lambda: sk_model(tol).fit(X, y), repeats)
        s_warm = best_time(lambda: sk_model(tol, warm=warm_sk).fit(X, y), repeats)
    w = np.asarray(out.params)
    b = float(cd.intercept(out.params, Xj, yj))
    return {
        "problem": f"{kind} n={n} p={p} λ={ratio}λmax", "tol": tol,
        "hyperopt cold s": t_cold, "sklearn cold s": s_cold, "cold ratio": t_cold / s_cold,
        "hyperopt warm s": t_warm, "sklearn warm s": s_warm, "warm ratio": t_warm / s_warm,
        "objective - sklearn's": objective(w, b) - objective(sk.coef_, sk.intercept_),
        "‖w − w_sk‖ / ‖w_sk‖": float(np.linalg.norm(w - sk.coef_) / np.linalg.norm(sk.coef_)),
    }


def lasso_rows(repeats, quick, jax, jnp, np):
    from sklearn.datasets import make_regression

    rows = []
    for n, p in [(400, 1000)] if quick else [(400, 1000), (58, 7129)]:
        X, y = make_regression(n_samples=n, n_features=p, n_informative=10, noise=10.0, random_state=0)
        for ratio in (0.1, 0.5):
            for kind in ("lasso", "enet"):
                for tol in (1e-4, 1e-8):
                    rows.append(lasso_case(X, y, kind, ratio, tol, repeats, jax, jnp, np))
                    r = rows[-1]
                    print(f"  {r['problem']} tol={tol:g}: {r['hyperopt cold s']:.4f} s vs "
                          f"{r['sklearn cold s']:.4f} s", flush=True)
    return rows


def logistic_case(data, tol, repeats, jax, jnp, np):
    from sklearn.linear_model import LogisticRegression

    from hyperopt.problems import Logistic
    from hyperopt.problems.logistic import objective
    from hyperopt.solvers import LBFGS

    X, y = np.asarray(data.X_train), np.asarray(data.y_train)
    lam = 1e-2
    problem = Logistic()
    inner = problem.inner_solver(functools.partial(LBFGS, tol=tol, maxiter=2000))
    init = problem.init_params(data)
    sw = jnp.ones(len(y))
    run = jax.jit(lambda p0: inner.run(p0, jnp.log(lam), data.X_train, data.y_train, sw))
    out = jax.block_until_ready(run(init))
    t = best_time(lambda: jax.block_until_ready(run(init)), repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make = lambda: LogisticRegression(C=1 / (len(y) * lam), tol=tol, max_iter=10_000)
        sk = make().fit(X, y)
        s = best_time(lambda: make().fit(X, y), repeats)
    ours = float(objective(out.params, lam, data.X_train, data.y_train, sw))
    theirs = float("nan")
    if sk.coef_.shape[0] == init["W"].shape[1]:  # binary: one column; K classes: K columns
        theirs = float(objective({"W": jnp.asarray(sk.coef_.T), "b": jnp.asarray(sk.intercept_)}, lam,
                                 data.X_train, data.y_train, sw))
    return {"problem": f"logistic {data.name} λ=1e-2", "tol": tol, "hyperopt s": t, "sklearn s": s,
            "ratio": t / s, "objective - sklearn's": ours - theirs}


def logistic_rows(repeats, quick, jax, jnp, np):
    from hyperopt.data import load_dataset

    rows = []
    for name in ("breast_cancer",) if quick else ("breast_cancer", "digits"):
        data = load_dataset(name, seed=0)
        for tol in (1e-4, 1e-8):
            rows.append(logistic_case(data, tol, repeats, jax, jnp, np))
            r = rows[-1]
            print(f"  {r['problem']} tol={tol:g}: {r['hyperopt s']:.4f} s vs {r['sklearn s']:.4f} s",
                  flush=True)
    return rows


def linear_case(X, g, lam, repeats, jax, jnp):
    from hyperopt.linear_solve import solve_cg, solve_gmres, solve_lu

    n, p = X.shape
    matvec = lambda v: X.T @ (X @ v) / n + lam * v
    row = {"λ": lam, "unknowns": p}
    for label, solve in (("lu", solve_lu), ("cg", solve_cg), ("gmres", solve_gmres)):
        fn = jax.jit(lambda b, solve=solve: solve(matvec, b, on_failure="ignore"))
        jax.block_until_ready(fn(g))
        row[f"{label} s"] = best_time(lambda fn=fn: jax.block_until_ready(fn(g)), repeats)
    row["cg / lu"] = row["cg s"] / row["lu s"]
    row["gmres / lu"] = row["gmres s"] / row["lu s"]
    return row


def linear_rows(repeats, quick, jax, jnp, np):
    sizes = [25, 100, 400] if quick else [25, 50, 100, 200, 400, 800, 1600, 3200]
    rows = []
    rng = np.random.default_rng(0)
    for lam in (1e-2, 1e-4):  # well and badly conditioned (κ ≈ 34 and ≈ 1e3 at n = 2p)
        for p in sizes:
            X = jnp.asarray(rng.normal(size=(2 * p, p)))
            g = jnp.asarray(rng.normal(size=p))
            rows.append(linear_case(X, g, lam, repeats, jax, jnp))
            r = rows[-1]
            print(f"  λ={lam:g} p={p}: lu {r['lu s']:.4f} s, cg {r['cg s']:.4f} s, "
                  f"gmres {r['gmres s']:.4f} s", flush=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="lasso,logistic,linear")
    opts = ap.parse_args(argv)
    repeats = 1 if opts.quick else opts.repeats
    one_thread()
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    print(header(["experiments/bench_inner_solvers.py", *argv]))
    parts = opts.only.split(",")
    if "lasso" in parts:
        rows = lasso_rows(repeats, opts.quick, jax, jnp, np)
        print(markdown_table(rows, list(rows[0]), {"objective - sklearn's": "+.2e", "tol": "g"}), "\n")
    if "logistic" in parts:
        rows = logistic_rows(repeats, opts.quick, jax, jnp, np)
        print(markdown_table(rows, list(rows[0]), {"objective - sklearn's": "+.2e", "tol": "g"}), "\n")
    if "linear" in parts:
        rows = linear_rows(repeats, opts.quick, jax, jnp, np)
        print(markdown_table(rows, list(rows[0])), "\n")
        for label in ("cg", "gmres"):
            for lam in sorted({r["λ"] for r in rows}):
                sub = [r for r in rows if r["λ"] == lam]
                # the smallest size from which the iterative solve stays faster than LU
                first = next((r["unknowns"] for i, r in enumerate(sub)
                              if all(q[f"{label} / lu"] < 1 for q in sub[i:])), None)
                verdict = (f"{label} faster from {first} unknowns on" if first else
                           "lu faster at the largest size")
                print(f"crossover {label} vs lu at λ={lam:g}: {verdict}")

if __name__ == "__main__":
    main()
