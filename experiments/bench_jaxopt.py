"""Implicit hypergradient through GradientDescent and LBFGS: hyperopt vs JAXopt, side by side.

One process, float64, the same objective, data, tolerances and defaults otherwise (each
package's default line search and implicit linear solver). For each case the script times
``jax.value_and_grad(outer)(theta)`` (inner solve + implicit hypergradient, compiled; the
first call's compile time is reported separately), the two packages' calls interleaved,
prints medians, the time ratio hyperopt/JAXopt, and the relative difference of the two
hypergradients (and outer values); ``--profile`` adds untimed counts of objective
evaluations and implicit linear-solve matvecs.

    python experiments/bench_jaxopt.py            # ridge n=2000 p=500, digits logistic
    python experiments/bench_jaxopt.py --quick    # smaller ridge, 3 repeats (about a minute)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, median, one_thread  # noqa: E402


def ridge_problem(n, p, seed=0):
    import numpy as np
    rng = np.random.RandomState(seed)
    X = rng.randn(2 * n, p)
    w = rng.randn(p) / np.sqrt(p)
    y = X @ w + 0.5 * rng.randn(2 * n)
    return (X[:n], y[:n]), (X[n:], y[n:])


def digits_problem():
    import numpy as np
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.RandomState(0)
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    half = len(y) // 2
    Y = np.eye(10)[y]
    return (X[:half], Y[:half]), (X[half:], Y[half:])


def make_cases(quick: bool):
    import jax.numpy as jnp

    def ridge_inner(w, theta, X, y):
        return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * jnp.exp(theta) * jnp.sum(w ** 2)

    def ridge_outer(w, X, y):
        return 0.5 * jnp.mean((X @ w - y) ** 2)

    def logreg_inner(W, theta, X, Y):
        logits = X @ W
        return (jnp.mean(jax_logsumexp(logits) - jnp.sum(Y * logits, axis=1))
                + 0.5 * jnp.exp(theta) * jnp.sum(W ** 2))

    def logreg_outer(W, X, Y):
        logits = X @ W
        return jnp.mean(jax_logsumexp(logits) - jnp.sum(Y * logits, axis=1))

    n, p = (400, 100) if quick else (2000, 500)
    ridge = ridge_problem(n, p)
    digits = digits_problem()
    return [
        (f"ridge n={n} p={p}", ridge_inner, ridge_outer, ridge, (p,), -2.0),
        ("digits logistic", logreg_inner, logreg_outer, digits, (64, 10), -4.0),
    ]


def jax_logsumexp(logits):
    import jax
    return jax.nn.logsumexp(logits, axis=1)


def _count_work(jax, package, solver_name, inner, maxiter, tol, init, theta, data):
    """Untimed: inner iterations, objective evaluations and implicit linear-solve matvecs of
    one hypergradient (host callbacks count the compiled program's executions)."""
    import functools as ft
    counts = {"fun": 0, "matvec": 0}

    def tick(name):
        def callback():
            counts[name] += 1
        return callback

    def counted_inner(w, theta, X, y):
        jax.debug.callback(tick("fun"))
        return inner(w, theta, X, y)

    def solve(matvec, b, M=None):  # M: a preconditioner, when the solver offers one
        def counted(v):
            jax.debug.callback(tick("matvec"))
            return matvec(v)
        return package.linear_solve.solve_cg(counted, b, tol=1e-10,
                                             **({} if M is None else {"M": M}))

    solver = getattr(package, solver_name)(fun=counted_inner, tol=tol, maxiter=maxiter,
                                           implicit_diff=True, implicit_diff_solve=solve)
    Xtr, ytr, Xva, yva, outer = data

    def outer_of_theta(theta):
        return outer(solver.run(init, theta, Xtr, ytr).params, Xva, yva)

    jax.block_until_ready(jax.jit(jax.grad(outer_of_theta))(theta))
    jax.effects_barrier()
    return counts["fun"], counts["matvec"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller ridge (n=400, p=100), 3 repeats (about a minute)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per package (interleaved; default 9, quick 3)")
    parser.add_argument("--tol", type=float, default=1e-8, help="inner tol, both packages")
    parser.add_argument("--linear-solve", choices=("cg", "default"), default="cg",
                        help="implicit linear solve: CG at tol 1e-10 in both packages (same "
                             "values), or each package's default (JAXopt: normal CG, tol 1e-5)")
    parser.add_argument("--profile", action="store_true",
                        help="also count (untimed) objective evaluations and implicit "
                             "linear-solve matvecs per hypergradient")
    parser.add_argument("--only", default=None,
                        help="run only the cases whose 'problem solver' label contains this")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)

    one_thread()
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import hyperopt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jaxopt

    print(header(sys.argv, ("hyperopt", "jaxopt", "jax", "numpy", "sklearn")))
    print(f"float64; inner tol {args.tol:g}, maxiter 5000 (GD) / 1000 (LBFGS); implicit "
          f"linear solve: {args.linear_solve}; median (and min) of {repeats} compiled calls "
          "of value_and_grad(outer), the two packages' calls interleaved; 'solve s' is the "
          "inner solve alone (no hypergradient)\n")
    rows = []
    for label, inner, outer, ((Xtr, ytr), (Xva, yva)), shape, theta in make_cases(args.quick):
        Xtr, ytr, Xva, yva = map(jnp.asarray, (Xtr, ytr, Xva, yva))
        init = jnp.zeros(shape, jnp.float64)
        theta = jnp.asarray(theta, jnp.float64)
        for solver_name, maxiter in (("GradientDescent", 5000), ("LBFGS", 1000)):
            if args.only and args.only not in f"{label} {solver_name}":
                continue
            fns, first, info = {}, {}, {}
            for package in (hyperopt, jaxopt):
                name = package.__name__
                solve = (functools.partial(package.linear_solve.solve_cg, tol=1e-10)
                         if args.linear_solve == "cg" else None)
                solver = getattr(package, solver_name)(fun=inner, tol=args.tol, maxiter=maxiter,
                                                       implicit_diff=True, implicit_diff_solve=solve)

                def outer_of_theta(theta, solver=solver, outer=outer):
                    w = solver.run(init, theta, Xtr, ytr).params
                    return outer(w, Xva, yva)

                hypergrad = jax.jit(jax.value_and_grad(outer_of_theta))
                solve_only = jax.jit(lambda theta, solver=solver: solver.run(init, theta, Xtr, ytr))
                start = time.perf_counter()
                value, grad = jax.block_until_ready(hypergrad(theta))
                first[name] = time.perf_counter() - start
                state = jax.block_until_ready(solve_only(theta)).state
                fns[name] = (hypergrad, solve_only)
                info[name] = dict(value=float(value), grad=float(grad), iters=int(state.iter_num),
                                  dtype=str(jnp.result_type(grad)))
            times = {name: ([], []) for name in fns}
            for r in range(repeats):  # interleaved, alternating which package goes first
                for name in (("hyperopt", "jaxopt") if r % 2 == 0 else ("jaxopt", "hyperopt")):
                    for k, fn in enumerate(fns[name]):
                        start = time.perf_counter()
                        jax.block_until_ready(fn(theta))
                        times[name][k].append(time.perf_counter() - start)
            h, j = info["hyperopt"], info["jaxopt"]
            assert h["dtype"] == j["dtype"] == "float64", (h["dtype"], j["dtype"])
            t_h, t_j = median(times["hyperopt"][0]), median(times["jaxopt"][0])
            row = {
                "problem": label, "solver": solver_name,
                "hyperopt s": t_h, "jaxopt s": t_j, "ratio": t_h / t_j,
                "ratio of mins": min(times["hyperopt"][0]) / min(times["jaxopt"][0]),
                "solve s (h/j)": f"{median(times['hyperopt'][1]):.4f}/"
                                 f"{median(times['jaxopt'][1]):.4f}",
                "first call s (h/j)": f"{first['hyperopt']:.1f}/{first['jaxopt']:.1f}",
                "inner iters (h/j)": f"{h['iters']}/{j['iters']}",
                "rel diff hypergrad": abs(h["grad"] - j["grad"]) / max(abs(j["grad"]), 1e-300),
                "rel diff value": abs(h["value"] - j["value"]) / max(abs(j["value"]), 1e-300),
            }
            if args.profile:
                data = (Xtr, ytr, Xva, yva, outer)
                work = {p.__name__: _count_work(jax, p, solver_name, inner, maxiter, args.tol,
                                                init, theta, data) for p in (hyperopt, jaxopt)}
                row["fun evals (h/j)"] = f"{work['hyperopt'][0]}/{work['jaxopt'][0]}"
                row["cg matvecs (h/j)"] = f"{work['hyperopt'][1]}/{work['jaxopt'][1]}"
            rows.append(row)
            print(f"{label} {solver_name}: hyperopt {t_h:.4f}s jaxopt {t_j:.4f}s "
                  f"ratio {t_h / t_j:.2f}; load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    print()
    columns = ["problem", "solver", "hyperopt s", "jaxopt s", "ratio", "ratio of mins",
               "solve s (h/j)", "first call s (h/j)", "inner iters (h/j)", "rel diff hypergrad",
               "rel diff value"]
    if args.profile:
        columns += ["fun evals (h/j)", "cg matvecs (h/j)"]
    print(markdown_table(rows, columns, {"ratio": ".2f", "ratio of mins": ".2f",
                                         "rel diff hypergrad": ".1e", "rel diff value": ".1e"}))
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
