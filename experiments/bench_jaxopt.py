"""Implicit hypergradient through GradientDescent and LBFGS: hyperopt vs JAXopt, side by side.

One process, float64, the same objective, data, tolerances and defaults otherwise (each
package's default line search and implicit linear solver). For each case the script times
``jax.value_and_grad(outer)(theta)`` (inner solve + implicit hypergradient, compiled; the
first call's compile time is reported separately), prints medians, the time ratio
hyperopt/JAXopt, and the relative difference of the two hypergradients (and outer values).

    python experiments/bench_jaxopt.py            # ridge n=2000 p=500, digits logistic
    python experiments/bench_jaxopt.py --quick    # smaller ridge, 2 repeats (CI)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller ridge, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--tol", type=float, default=1e-8, help="inner tol, both packages")
    parser.add_argument("--linear-solve", choices=("cg", "default"), default="cg",
                        help="implicit linear solve: CG at tol 1e-10 in both packages (same "
                             "values), or each package's default (JAXopt: normal CG, tol 1e-5)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 7)

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
          f"linear solve: {args.linear_solve}; "
          f"median of {repeats} compiled calls of value_and_grad(outer)\n")
    rows = []
    for label, inner, outer, ((Xtr, ytr), (Xva, yva)), shape, theta in make_cases(args.quick):
        Xtr, ytr, Xva, yva = map(jnp.asarray, (Xtr, ytr, Xva, yva))
        init = jnp.zeros(shape)
        for solver_name, maxiter in (("GradientDescent", 5000), ("LBFGS", 1000)):
            result = {}
            for package in (hyperopt, jaxopt):
                solve = (functools.partial(package.linear_solve.solve_cg, tol=1e-10)
                         if args.linear_solve == "cg" else None)
                solver = getattr(package, solver_name)(fun=inner, tol=args.tol, maxiter=maxiter,
                                                       implicit_diff=True, implicit_diff_solve=solve)

                def outer_of_theta(theta, solver=solver, data=(init, Xtr, ytr, Xva, yva), outer=outer):
                    init_, Xtr_, ytr_, Xva_, yva_ = data
                    w = solver.run(init_, theta, Xtr_, ytr_).params
                    return outer(w, Xva_, yva_)

                fn = jax.jit(jax.value_and_grad(outer_of_theta))
                start = time.perf_counter()
                value, grad = jax.block_until_ready(fn(theta))
                first = time.perf_counter() - start
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    jax.block_until_ready(fn(theta))
                    times.append(time.perf_counter() - start)
                iters = int(solver.run(init, theta, Xtr, ytr).state.iter_num)
                result[package.__name__] = (median(times), first, float(value), float(grad), iters)
            (t_h, c_h, v_h, g_h, i_h), (t_j, c_j, v_j, g_j, i_j) = result["hyperopt"], result["jaxopt"]
            rows.append({
                "problem": label, "solver": solver_name,
                "hyperopt s": t_h, "jaxopt s": t_j, "ratio": t_h / t_j,
                "first call s (h/j)": f"{c_h:.2f}/{c_j:.2f}",
                "inner iters (h/j)": f"{i_h}/{i_j}",
                "rel diff hypergrad": abs(g_h - g_j) / max(abs(g_j), 1e-300),
                "rel diff value": abs(v_h - v_j) / max(abs(v_j), 1e-300),
            })
            print(f"{label} {solver_name}: hyperopt {t_h:.4f}s jaxopt {t_j:.4f}s "
                  f"ratio {t_h / t_j:.2f}", flush=True)
    print()
    print(markdown_table(rows, ["problem", "solver", "hyperopt s", "jaxopt s", "ratio",
                                "first call s (h/j)", "inner iters (h/j)", "rel diff hypergrad",
                                "rel diff value"],
                         {"ratio": ".2f", "rel diff hypergrad": ".1e", "rel diff value": ".1e"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
