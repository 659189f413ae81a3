"""Hypergradients for 64 values of λ at once: one ``vmap`` vs 64 sequential calls (issue #12.5).

    python experiments/bench_vmap_lambdas.py            # 4 workloads, 5 repeats (~2 min on 2 cores)
    python experiments/bench_vmap_lambdas.py --quick    # diabetes ridge, breast_cancer logistic

For each workload, ``hypergradient(θ) = d(validation loss)/dθ`` at ``θ = log λ`` through the
library's inner solver (``Problem.inner_solver(LBFGS)``, implicit differentiation, float64,
default tol 1e-10), for ``--n`` values of λ on a log grid. Three ways to get all of them:

* ``sequential``: the jitted single-λ function called once per λ from Python (what a loop
  over a grid does);
* ``lax.map``: the same loop compiled into one program (no Python dispatch per λ);
* ``vmap``: ``jax.jit(jax.vmap(hypergradient))``, all λ in one batched solve (the while
  loop runs until the slowest λ has converged).

Columns: median wall time of the whole batch (compile excluded, timed separately), the
ratio sequential / vmap (> 1: vmap is faster), and the largest difference between the vmap
and sequential hypergradients relative to their scale (they must agree).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, median, one_thread  # noqa: E402

WORKLOADS = {
    # name: (problem, dataset, load options, λ grid)
    "ridge_diabetes": ("ridge", "diabetes", {}, (1e-4, 1e2)),
    "ridge_synthetic": ("ridge", "make_regression",
                        {"n_samples": 2000, "n_features": 200, "n_informative": 20, "noise": 10.0},
                        (1e-4, 1e2)),
    "logistic_breast_cancer": ("logistic", "breast_cancer", {}, (1e-4, 1e1)),
    "logistic_digits": ("logistic", "digits", {}, (1e-4, 1e1)),
}
QUICK = ("ridge_diabetes", "logistic_breast_cancer")


def build(name, n, jax, jnp, np):
    """``(hypergradient, thetas, description)`` of one workload."""
    import optax

    from hyperopt import LBFGS
    from hyperopt.bilevel import Bilevel, make_splits
    from hyperopt.data import load_dataset
    from hyperopt.problems import Logistic, Ridge

    kind, dataset, options, (lo, hi) = WORKLOADS[name]
    data = load_dataset(dataset, seed=0, **options)
    problem = Ridge() if kind == "ridge" else Logistic()
    # The outer loop's own hypergradient (root_vjp on the optimality condition); the
    # optimizer is not used here.
    bilevel = Bilevel(problem, functools.partial(LBFGS, maxiter=1000), optax.sgd(0.0))
    splits = make_splits(problem, data, cv_folds=0)
    tol = bilevel.final_tol(data.X_train.dtype)

    def hypergradient(theta):
        params, _ = bilevel.inner_solve(theta, splits.cold_params, splits, tol)
        return bilevel.implicit_hypergradient(theta, params, splits, tol)[1]

    def val_loss(theta):
        params, _ = bilevel.inner_solve(theta, splits.cold_params, splits, tol)
        return bilevel.implicit_hypergradient(theta, params, splits, tol)[0]

    thetas = jnp.log(jnp.asarray(np.geomspace(lo, hi, n)))
    description = (f"{kind}, {dataset} ({data.n_train} train / {data.n_val} val, {data.n_features} features"
                   f"{'' if kind == 'ridge' else f', {max(data.n_classes, 2)} classes'}), LBFGS implicit, "
                   f"λ in [{lo:g}, {hi:g}]")
    return hypergradient, jax.jit(val_loss), thetas, description


def measure(name, n, repeats, jax, jnp, np):
    hypergradient, val_loss, thetas, description = build(name, n, jax, jnp, np)
    single = jax.jit(hypergradient)
    mapped = jax.jit(lambda ts: jax.lax.map(hypergradient, ts))
    batched = jax.jit(jax.vmap(hypergradient))

    compile_s = {}
    t0 = time.perf_counter()
    single_c = single.lower(thetas[0]).compile()
    compile_s["sequential"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mapped_c = mapped.lower(thetas).compile()
    compile_s["lax.map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched_c = batched.lower(thetas).compile()
    compile_s["vmap"] = time.perf_counter() - t0

    def sequential():
        return jnp.stack([single_c(t) for t in thetas])

    runs = {"sequential": sequential, "lax.map": lambda: mapped_c(thetas), "vmap": lambda: batched_c(thetas)}
    out = {k: np.asarray(jax.block_until_ready(f())) for k, f in runs.items()}  # warm-up
    times = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved: machine noise hits every variant alike
        for k, f in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t0)
    scale = np.max(np.abs(out["sequential"]))
    diff = max(np.max(np.abs(out[k] - out["sequential"])) for k in ("vmap", "lax.map")) / scale
    # An independent check of the values: a float64 central difference at one λ.
    mid, h = len(thetas) // 2, 1e-5
    fd = (float(val_loss(thetas[mid] + h)) - float(val_loss(thetas[mid] - h))) / (2 * h)
    fd_err = abs(float(out["vmap"][mid]) - fd) / max(abs(fd), 1e-300)
    seq, vm = median(times["sequential"]), median(times["vmap"])
    return {"workload": name, "λ": n, "sequential s": seq, "lax.map s": median(times["lax.map"]),
            "vmap s": vm, "sequential / vmap": seq / vm,
            "lax.map / vmap": median(times["lax.map"]) / vm,
            "compile s (seq / map / vmap)": " / ".join(f"{compile_s[k]:.2f}" for k in runs),
            "max rel. diff": float(diff), "vs FD": fd_err, "finite": bool(np.all(np.isfinite(out["vmap"]))),
            "description": description}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two small workloads, 3 repeats")
    ap.add_argument("--n", type=int, default=64, help="number of λ values")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--threads", type=int, default=1, choices=(0, 1), help="1: one thread (default)")
    opts = ap.parse_args(argv)
    names = list(QUICK) if opts.quick else [w for w in opts.only.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; allowed: {', '.join(WORKLOADS)}")
    repeats = 3 if opts.quick else opts.repeats
    if opts.threads == 1:
        one_thread()
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    print(header(["experiments/bench_vmap_lambdas.py", *argv]))
    print(f"float64; {opts.n} λ per batch; medians of {repeats} interleaved repeats after a warm-up\n")
    rows = []
    for name in names:
        row = measure(name, opts.n, repeats, jax, jnp, np)
        print(f"* {name}: {row['description']}", flush=True)
        rows.append(row)
    print()
    print(markdown_table(rows, ["workload", "λ", "sequential s", "lax.map s", "vmap s", "sequential / vmap",
                                "lax.map / vmap", "compile s (seq / map / vmap)", "max rel. diff", "vs FD"],
                         {"sequential / vmap": ".2f", "lax.map / vmap": ".2f", "max rel. diff": ".1e",
                          "vs FD": ".1e"}))
    print("\nsequential: the jitted one-λ hypergradient called per λ from Python; lax.map: that loop "
          "compiled; vmap: one batched solve. Ratios > 1: vmap is faster. max rel. diff: largest "
          "|vmap - sequential| (and lax.map) over max |sequential|. vs FD: relative difference of the vmap "
          "hypergradient at the middle λ from a float64 central difference (step 1e-5 in log λ) of the "
          "validation loss.")
    return rows


if __name__ == "__main__":
    main()
