"""Implicit vs unrolled on the paper's multiclass SVM dual: cost vs iterations and size, accuracy vs tol.

    python experiments/bench_svm_cost.py                # maxiter 100, 1000, 10000; 3 sizes (long: ~30+ min)
    python experiments/bench_svm_cost.py --quick        # wine, maxiter 10, 100; 2 small sizes (CI)
    python experiments/bench_svm_cost.py --parts iters --maxiters 100,1000 --solvers bcd

The setting of Blondel et al. (NeurIPS 2022, Fig. 3): the Crammer–Singer SVM dual
(:class:`hyperopt.problems.SVMDual`, λ = 10, θ = log λ) solved by block coordinate descent
(``bcd``), projected gradient (``pg``: FISTA, fixed step 1/L) or mirror descent (``md``,
step 1/L), hypergradient d(validation cross-entropy)/dθ in float64 through
:class:`hyperopt.bilevel.Bilevel` — implicit (``inner_solve`` + ``implicit_hypergradient``,
the root_vjp of the outer loop) vs unrolled (``unrolled_hypergradient``).

* ``iters``: digits (1079 × 64, 10 classes: 10 790 dual variables), every solve running
  exactly ``maxiter`` iterations (tol 1e-300; BCD: epochs). Columns: median wall time of the
  compiled hypergradient, XLA's temporary memory (``compiled.memory_analysis()``), and the
  relative error against a central finite difference of BCD solves at tol 1e-12.
* ``size``: ``make_classification`` (5 classes) of growing n and p at a fixed ``--size-maxiter``.
* ``tol``: hypergradient error vs inner tolerance, implicit vs unrolled (unrolled: a scan of
  ``maxiter`` steps that freezes the iterate once converged): ridge on synthetic data
  (gradient descent, step 1/L; exact: the closed form) and the SVM dual on wine (BCD; exact:
  float64 central finite difference of BCD solves at tol 1e-13).

Functions whose compiled temporary memory exceeds ``--max-run-gib`` are compiled (their
memory reported) but not run (their time estimated linearly from the previous maxiter).

The implicit system (n·K unknowns, digits 10 790) is solved by GMRES capped at
``--gmres-maxiter`` restarts (default 20, i.e. 1000 products); ``lin. residual`` is its
relative residual. Far from the solution the system is badly conditioned (rows of β with
several nonzeros span more directions than the rank-d·K Hessian: digits, projected gradient
after 100 steps, residual 4e-5 after 1000 products), and the row says so instead of running
for hours (JAX's GMRES default: 10·n·K restarts; the library's: 10·n·K products).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, median, one_thread  # noqa: E402

MIB = 2.0 ** 20
SOLVERS = ("bcd", "pg", "md")


def solver_factory(name, maxiter, implicit, gmres_maxiter=None):
    from hyperopt import BlockCoordinateDescent, MirrorDescent, ProjectedGradient
    from hyperopt.linear_solve import solve_gmres
    # The implicit system has n·K unknowns (digits: 10 790), above solve_auto's dense
    # threshold: GMRES. It is badly conditioned (or singular) while the dual is far from
    # converged (rows with several nonzeros span more directions than the rank-d·K Hessian),
    # so GMRES converges slowly there: a cap on its restarts bounds the cost, and the row
    # reports the residual.
    solve = None if gmres_maxiter is None else functools.partial(solve_gmres, maxiter=gmres_maxiter)
    common = {"maxiter": maxiter, "implicit_diff": implicit, "implicit_diff_solve": solve}
    if name == "bcd":
        return functools.partial(BlockCoordinateDescent, **common)
    if name == "pg":
        return functools.partial(ProjectedGradient, stepsize=1.0, acceleration=True, **common)
    return functools.partial(MirrorDescent, stepsize=1.0, **common)


def svm_hypergradient(solver, maxiter, implicit, data, jax, jnp, lam=10.0, gmres_maxiter=None):
    """``(f, args)``: ``f(theta, splits, tol) -> (val loss, hypergradient, iterations, residual)``
    (residual: the relative residual of the implicit linear system; NaN when unrolled)."""
    import optax

    from hyperopt.bilevel import Bilevel, make_splits
    from hyperopt.problems import SVMDual

    problem = SVMDual(init_l2reg=lam)
    bilevel = Bilevel(problem, solver_factory(solver, maxiter, implicit, gmres_maxiter), optax.sgd(0.0),
                      inner_tol=None)
    splits = make_splits(problem, data, 0)

    def f(theta, splits, tol):
        if implicit:
            params, states = bilevel.inner_solve(theta, splits.cold_params, splits, tol)
            loss, grad, residual = bilevel.implicit_hypergradient(theta, params, splits, tol)
        else:
            loss, grad, sols = bilevel.unrolled_hypergradient(theta, splits.cold_params, splits, tol)
            states, residual = sols.state, jnp.asarray(jnp.nan, loss.dtype)
        return loss, grad, jnp.max(states.iter_num), residual

    return f, (problem.init_hparams(data), splits)


def svm_reference(data, jax, jnp, tol=1e-12, maxiter=5000):
    """Central finite difference (θ ± 1e-5) of the validation loss of tight BCD solves."""
    f, (theta, splits) = svm_hypergradient("bcd", maxiter, True, data, jax, jnp)
    loss = jax.jit(lambda th: f(th, splits, jnp.asarray(tol))[0])
    h = 1e-5
    return (float(loss(theta + h)) - float(loss(theta - h))) / (2 * h)


def measure(f, args, repeats, max_bytes, jax):
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    analysis = compiled.memory_analysis()
    temp = float(analysis.temp_size_in_bytes) if analysis is not None else float("nan")
    out = {"compile s": compile_s, "temp MiB": temp / MIB}
    if temp > max_bytes:
        out["note"] = f"not run: needs {temp / 2**30:.3g} GiB"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        loss, grad, iters, residual = jax.block_until_ready(compiled(*args))
        first = time.perf_counter() - t0
        times = [first]
        for _ in range(repeats - 1 if first < 2.0 else 0):  # long calls: the first one suffices
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
    out.update({"hypergrad ms": 1e3 * median(times), "hypergradient": float(grad), "iters": int(iters),
                "lin. residual": float(residual)})
    if float(residual) > 1e-6:
        out["note"] = "implicit system not solved (GMRES at its cap)"
    return out


def part_iters(opts, jax, jnp, np, rows):
    from hyperopt.data import load_dataset

    data = load_dataset(opts.iters_data, seed=0)
    label = f"{opts.iters_data} {data.n_train}×{data.n_features}"
    reference = svm_reference(data, jax, jnp)
    print(f"{label} train ({data.n_val} val), {data.n_classes} classes; "
          f"reference hypergradient (central FD of BCD at tol 1e-12): {reference:.10g}", flush=True)
    tol = jnp.asarray(1e-300)
    for solver in opts.solvers:
        for maxiter in opts.maxiters:
            pair = {}
            for implicit in (True, False):
                f, (theta, splits) = svm_hypergradient(solver, maxiter, implicit, data, jax, jnp,
                                                       gmres_maxiter=opts.gmres_maxiter)
                m = measure(f, (theta, splits, tol), opts.repeats, opts.max_run_gib * 2**30, jax)
                mode = "implicit" if implicit else "unrolled"
                previous = [r for r in rows if r["part"] == "iters" and r["solver"] == solver
                            and r["mode"] == mode and "hypergrad ms" in r]
                if "hypergrad ms" not in m and previous:  # not run: time from the measured slope
                    last = previous[-1]
                    estimate = last["hypergrad ms"] * maxiter / last["maxiter"] / 1e3
                    m["note"] += f"; time est. {estimate:.3g} s (linear from maxiter {last['maxiter']})"
                pair[mode] = m
                row = {"part": "iters", "data": label, "solver": solver, "maxiter": maxiter,
                       "mode": mode, **m}
                if "hypergradient" in m:
                    row["rel. error"] = abs(m["hypergradient"] - reference) / abs(reference)
                rows.append(row)
                print(f"  {solver} maxiter={maxiter} {mode}: {m}", flush=True)
            ratio(pair, rows)


def ratio(pair, rows):
    i, u = pair["implicit"], pair["unrolled"]
    rows[-1]["unrolled / implicit time"] = (u["hypergrad ms"] / i["hypergrad ms"]
                                            if "hypergrad ms" in u and "hypergrad ms" in i else float("nan"))
    rows[-1]["unrolled / implicit memory"] = u["temp MiB"] / i["temp MiB"] if i["temp MiB"] else float("nan")


def part_size(opts, jax, jnp, np, rows):
    from hyperopt.data import load_dataset

    tol = jnp.asarray(1e-300)
    for n, p in opts.sizes:
        data = load_dataset("make_classification", n_samples=n, n_features=p, n_informative=max(2, p // 2),
                            n_classes=5, n_clusters_per_class=1, seed=0)
        for solver in opts.size_solvers:
            pair = {}
            for implicit in (True, False):
                f, (theta, splits) = svm_hypergradient(solver, opts.size_maxiter, implicit, data, jax, jnp,
                                                       gmres_maxiter=opts.gmres_maxiter)
                m = measure(f, (theta, splits, tol), opts.repeats, opts.max_run_gib * 2**30, jax)
                mode = "implicit" if implicit else "unrolled"
                pair[mode] = m
                rows.append({"part": "size", "data": f"synthetic n={n} ({data.n_train} train), p={p}",
                             "solver": solver, "maxiter": opts.size_maxiter, "mode": mode, **m})
                print(f"  n={n} p={p} {solver} {mode}: {m}", flush=True)
            ratio(pair, rows)


def part_tol(opts, jax, jnp, np, rows):
    import optax

    from hyperopt import GradientDescent
    from hyperopt.bilevel import Bilevel, make_splits
    from hyperopt.data import load_dataset
    from hyperopt.problems import Ridge

    # Ridge: closed form. θ = log λ; d L_val/dθ = λ · ∇L_valᵀ (-H⁻¹ w*), H = XᵀX/n + λI.
    data = load_dataset("make_regression", n_samples=500, n_features=100, n_informative=20, noise=10.0,
                        seed=0)
    X, y = np.asarray(data.X_train), np.asarray(data.y_train)
    Xv, yv = np.asarray(data.X_val), np.asarray(data.y_val)
    lam = 0.1
    H = X.T @ X / len(y) + lam * np.eye(X.shape[1])
    w = np.linalg.solve(H, X.T @ y / len(y))
    exact = float(lam * (2 * Xv.T @ (Xv @ w - yv) / len(yv)) @ -np.linalg.solve(H, w))
    step = 1.0 / float(np.linalg.eigvalsh(H)[-1])
    ridge_note = f"ridge synthetic {data.n_train}×100, GD step 1/L; exact: closed form"
    print(f"* {ridge_note}: {exact:.10g}", flush=True)
    for implicit in (True, False):
        problem = Ridge(init_l2reg=lam)
        make = functools.partial(GradientDescent, stepsize=step, maxiter=opts.tol_maxiter,
                                 implicit_diff=implicit)
        bilevel = Bilevel(problem, make, optax.sgd(0.0), inner_tol=None)
        splits = make_splits(problem, data, 0)

        def f(theta, splits, tol, bilevel=bilevel, implicit=implicit):
            if implicit:
                params, states = bilevel.inner_solve(theta, splits.cold_params, splits, tol)
                loss, grad, _ = bilevel.implicit_hypergradient(theta, params, splits, tol)
            else:
                loss, grad, sols = bilevel.unrolled_hypergradient(theta, splits.cold_params, splits, tol)
                states = sols.state
            return loss, grad, jnp.max(states.iter_num)

        args = (problem.init_hparams(data), splits)
        tol_rows(f, args, exact, "ridge", "gd", implicit, opts, jax, jnp, rows)

    wine = load_dataset("wine", seed=0)
    # λ = 10: at λ <= 1 wine is separable and the outer loss flat (a zero hypergradient).
    f, (theta, splits) = svm_hypergradient("bcd", 5000, True, wine, jax, jnp, lam=10.0)
    loss = jax.jit(lambda th: f(th, splits, jnp.asarray(1e-13))[0])
    exact = (float(loss(theta + 1e-5)) - float(loss(theta - 1e-5))) / 2e-5
    print(f"* SVM dual, wine ({wine.n_train} train, 3 classes), λ = 10, BCD; exact: central FD of BCD at "
          f"tol 1e-13: {exact:.10g}", flush=True)
    for implicit in (True, False):
        f, args = svm_hypergradient("bcd", opts.tol_maxiter, implicit, wine, jax, jnp, lam=10.0)
        tol_rows(f, args, exact, "SVM dual wine", "bcd", implicit, opts, jax, jnp, rows)


def tol_rows(f, args, exact, data, solver, implicit, opts, jax, jnp, rows):
    theta, splits = args
    compiled = jax.jit(f).lower(theta, splits, jnp.asarray(1e-2)).compile()
    for tol in opts.tols:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = compiled(theta, splits, jnp.asarray(tol))
        grad, iters = out[1], out[2]
        rows.append({"part": "tol", "data": data, "solver": solver, "maxiter": opts.tol_maxiter, "tol": tol,
                     "mode": "implicit" if implicit else "unrolled", "iters": int(iters),
                     "hypergradient": float(grad), "rel. error": abs(float(grad) - exact) / abs(exact)})


def plot(rows, path, np):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for solver, color in zip(SOLVERS, ("C0", "C1", "C2"), strict=True):
        for mode, ls in (("implicit", "-"), ("unrolled", "--")):
            pts = sorted((r["maxiter"], r) for r in rows if r["part"] == "iters" and r["solver"] == solver
                         and r["mode"] == mode)
            if not pts:
                continue
            xs = [m for m, _ in pts]
            axes[0].plot(xs, [r.get("hypergrad ms", np.nan) for _, r in pts], ls, color=color, marker="o",
                         label=f"{solver} {mode}")
            axes[1].plot(xs, [r["temp MiB"] for _, r in pts], ls, color=color, marker="o",
                         label=f"{solver} {mode}")
    for data, marker in (("ridge", "o"), ("SVM", "s")):
        for mode, ls in (("implicit", "-"), ("unrolled", "--")):
            pts = [r for r in rows if r["part"] == "tol" and r["data"].startswith(data) and r["mode"] == mode]
            if pts:
                axes[2].plot([r["tol"] for r in pts], [max(r["rel. error"], 1e-17) for r in pts], ls,
                             marker=marker, label=f"{data} {mode}")
    for ax, title, ylabel in ((axes[0], "one hypergradient (SVM dual)", "ms"),
                              (axes[1], "XLA temporary memory", "MiB"),
                              (axes[2], "hypergradient error vs inner tol", "relative error")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_xlabel("inner iterations (BCD: epochs)")
    axes[1].set_xlabel("inner iterations (BCD: epochs)")
    axes[2].set_xlabel("inner tol")
    axes[2].invert_xaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="wine; maxiter 10, 100; two small sizes (BCD only); 4 tolerances")
    ap.add_argument("--parts", default="iters,size,tol")
    ap.add_argument("--iters-data", default=None,
                    help="dataset of the iters part (default digits; quick wine)")
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    ap.add_argument("--maxiters", default=None, help="default 100,1000,10000 (quick: 10,100)")
    ap.add_argument("--sizes", default=None,
                    help="n:p pairs, default 250:25,1000:100,4000:400 (quick: 100:10,200:20)")
    ap.add_argument("--size-maxiter", type=int, default=None, help="default 500 (quick 50)")
    ap.add_argument("--tol-maxiter", type=int, default=None, help="default 5000 (quick 2000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-run-gib", type=float, default=8.0)
    ap.add_argument("--gmres-maxiter", type=int, default=20,
                    help="GMRES restarts (of 50 products) for implicit systems above 600 unknowns; "
                         "0: the library's default (at most 10 products per unknown)")
    ap.add_argument("--figures", default=str(Path(__file__).resolve().parent / "figures"))
    ap.add_argument("--rows-out", default=None, help="write the measured rows to this JSON file")
    ap.add_argument("--rows-in", default=None,
                    help="comma-separated JSON files of earlier --rows-out runs: their rows join the "
                         "tables and the figure (e.g. one run per solver; --parts '' to only merge)")
    ap.add_argument("--threads", type=int, default=1, choices=(0, 1), help="1: one thread (default)")
    opts = ap.parse_args(argv)
    opts.parts = [part for part in opts.parts.split(",") if part]
    opts.gmres_maxiter = opts.gmres_maxiter or None
    opts.iters_data = opts.iters_data or ("wine" if opts.quick else "digits")
    opts.solvers = opts.solvers.split(",")
    for s in opts.solvers:
        if s not in SOLVERS:
            ap.error(f"unknown solver {s!r}; allowed: {', '.join(SOLVERS)}")
    maxiters = opts.maxiters or ("10,100" if opts.quick else "100,1000,10000")
    opts.maxiters = [int(v) for v in maxiters.split(",")]
    sizes = opts.sizes or ("100:10,200:20" if opts.quick else "250:25,1000:100,4000:400")
    opts.size_solvers = ["bcd"] if opts.quick else opts.solvers
    opts.sizes = [tuple(int(v) for v in pair.split(":")) for pair in sizes.split(",")]
    opts.size_maxiter = opts.size_maxiter or (50 if opts.quick else 500)
    opts.tol_maxiter = opts.tol_maxiter or (2000 if opts.quick else 5000)
    opts.tols = [1e-2, 1e-4, 1e-6, 1e-8] if opts.quick else [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
    if opts.threads == 1:
        one_thread()
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    print(header(["experiments/bench_svm_cost.py", *argv]))
    print(f"float64; SVM dual λ = 10 (θ = log λ); medians of {opts.repeats} calls after compiling "
          "(one call when it takes over 2 s)\n")
    t_start = time.perf_counter()
    rows = []
    for path in (opts.rows_in.split(",") if opts.rows_in else []):
        rows += json.loads(Path(path).read_text())
    for part, fn in (("iters", part_iters), ("size", part_size), ("tol", part_tol)):
        if part in opts.parts:
            fn(opts, jax, jnp, np, rows)
    cost_cols = ["data", "solver", "maxiter", "mode", "iters", "hypergrad ms", "temp MiB", "compile s",
                 "unrolled / implicit time", "unrolled / implicit memory", "rel. error", "lin. residual",
                 "note"]
    fmt = {"temp MiB": ".4g", "hypergrad ms": ".4g", "compile s": ".2f", "unrolled / implicit time": ".2f",
           "unrolled / implicit memory": ".3g", "rel. error": ".1e",
           "lin. residual": ".1e"}
    present = {r["part"] for r in rows}
    for part, title in (("iters", f"One hypergradient vs inner iterations ({opts.iters_data})"),
                        ("size", "One hypergradient vs problem size (synthetic, 5 classes)")):
        if part in present:
            print(f"\n### {title}\n")
            print(markdown_table([r for r in rows if r["part"] == part], cost_cols, fmt))
    if "tol" in present:
        print("\n### Hypergradient error vs inner tolerance\n")
        print(markdown_table([r for r in rows if r["part"] == "tol"],
                             ["data", "solver", "maxiter", "tol", "mode", "iters", "hypergradient",
                              "rel. error"],
                             {"tol": ".0e", "rel. error": ".1e", "hypergradient": ".10g"}))
    print("\nunrolled / implicit: ratios in the same row pair (> 1: implicit is cheaper). temp MiB: XLA's "
          "temporary buffers of the compiled hypergradient. iters: iterations (BCD: epochs) of the "
          "inner solve; with tol 1e-300 every solve runs maxiter. Provisional under load.")
    if opts.rows_out:
        Path(opts.rows_out).write_text(json.dumps(rows, indent=1))
    figure = Path(opts.figures) / "svm_cost.png"
    plot(rows, figure, np)
    print(f"\nfigure: {figure}\ntotal runtime: {time.perf_counter() - t_start:.1f} s")
    return rows


if __name__ == "__main__":
    main()
