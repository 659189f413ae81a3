"""How one implicit hypergradient and one outer step scale with the data (issue #11).

    python experiments/bench_sparse_scaling.py            # up to rcv1 / real-sim size; dense 1e5 x 1e3
    python experiments/bench_sparse_scaling.py --quick    # two small sparse sizes, dense ridge 1e4 x 1e3 (CI)
    python experiments/bench_sparse_scaling.py --scales 0.25,0.5,1 --problems lasso

Each row runs in a fresh process. Sparse rows: ``load_dataset("synthetic_sparse",
shape=..., scale=s)`` (text-like, rcv1 shape for the lasso, real-sim shape for L2 logistic
regression; both sizes times ``s``, so nnz grows like ``s²``), hold-out splits, float64.
Dense rows: ``make_regression`` / ``make_classification`` with ``n`` samples and ``p``
features (ridge with L-BFGS, binary logistic regression with L-BFGS).

Per row, with :class:`hyperopt.bilevel.Bilevel` (the problem's CLI solver: proximal
gradient for the lasso, its implicit system by GMRES with a 1e-6 ridge as in
``bench_sparse_lasso.py``; L-BFGS otherwise; outer optimizer ``lbfgs_backtracking``) at the
problem's initial hyperparameters:

* ``hypergrad s``: one implicit hypergradient (``hypergrad finite`` and the linear system's
  ``residual`` say whether it succeeded: a lasso support with collinear columns makes the
  system singular) (:meth:`Bilevel.implicit_hypergradient`,
  compiled; the Hessian- or Jacobian-vector products of the linear solve), at an inner
  solution solved to 1e-10; median of 3 calls;
* ``step s``: one full outer step (:meth:`Bilevel.outer_step`: inner solve warm-started from
  that solution at tol 1e-10, hypergradient, validation metrics, optimizer update), median
  of 3;
* ``cold step s``: the same step from a zero start (the first step of a run);
* ``peak MiB``: the process's peak RSS (``getrusage``), ``data MiB`` the arrays of the
  dataset, ``RSS +step MiB``: how much the resident set grew over 5 more outer steps (0 when
  no step copies the data), ``temp MiB``: XLA's temporary buffers of the compiled step.

The last column divides the step time by nnz (sparse) or ``n p`` (dense): constant when the
cost is linear in the stored entries. Timings under load are provisional.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, median, one_thread  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIB = 2.0 ** 20
SPARSE_SHAPE = {"lasso": "rcv1", "logistic": "real_sim"}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def child(spec: dict) -> dict:
    import resource

    import jax

    jax.config.update("jax_enable_x64", True)
    import functools

    import jax.numpy as jnp

    from hyperopt import LBFGS, ProximalGradient
    from hyperopt.bilevel import Bilevel, make_splits
    from hyperopt.data import load_dataset
    from hyperopt.linear_solve import solve_gmres
    from hyperopt.outer import lbfgs_backtracking
    from hyperopt.problems import Lasso, Logistic, Ridge

    t0 = time.perf_counter()
    if spec["kind"] == "sparse":
        data = load_dataset("synthetic_sparse", shape=SPARSE_SHAPE[spec["problem"]], scale=spec["scale"])
    elif spec["problem"] == "ridge":
        data = load_dataset("make_regression", n_samples=spec["n"], n_features=spec["p"],
                            n_informative=spec["p"] // 10, noise=10.0)
    else:
        data = load_dataset("make_classification", n_samples=spec["n"], n_features=spec["p"],
                            n_informative=spec["p"] // 10)
    load_s = time.perf_counter() - t0
    problem = {"lasso": Lasso(init_l1reg=0.01), "logistic": Logistic(), "ridge": Ridge()}[spec["problem"]]
    solver = ProximalGradient if spec["problem"] == "lasso" else LBFGS
    options = {"maxiter": 5000}
    if spec["problem"] == "lasso":  # as bench_sparse_lasso.LASSO_SOLVE: collinear rare columns
        options["implicit_diff_solve"] = functools.partial(solve_gmres, ridge=1e-6)
    bilevel = Bilevel(problem, functools.partial(solver, **options), lbfgs_backtracking())
    splits = make_splits(problem, data, 0)
    theta = problem.init_hparams(data)
    opt_state = bilevel.optimizer.init(theta)
    tol = jnp.asarray(1e-10)
    params, _ = jax.block_until_ready(jax.jit(bilevel.inner_solve)(theta, splits.cold_params, splits, tol))
    hyper = jax.jit(bilevel.implicit_hypergradient).lower(theta, params, splits, tol).compile()
    step = jax.jit(bilevel.outer_step).lower(theta, opt_state, params, splits, tol).compile()

    def timed(fn, *args, repeats=3):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t)
        return median(times), out

    hyper_s, (_, grad, residual) = timed(hyper, theta, params, splits, tol)
    finite = bool(all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)))
    step_s, _ = timed(step, theta, opt_state, params, splits, tol)
    cold_s, _ = timed(step, theta, opt_state, splits.cold_params, splits, tol, repeats=1)
    before = _rss_mib()
    th, st, pa = theta, opt_state, params
    for _ in range(5):  # the outer loop's own pattern: each step's outputs feed the next
        th, st, pa, _ = jax.block_until_ready(step(th, st, pa, splits, tol))
    grew = _rss_mib() - before
    analysis = step.memory_analysis()
    return {"n": data.n_train + data.n_val + data.n_test, "p": data.n_features, "nnz": data.nnz,
            "data MiB": data.nbytes / MIB, "load s": load_s, "hypergrad s": hyper_s, "step s": step_s,
            "cold step s": cold_s, "hypergrad finite": finite, "residual": float(residual),
            "temp MiB": float(getattr(analysis, "temp_size_in_bytes", 0) or 0) / MIB,
            "RSS +step MiB": grew,
            "peak MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="scales 0.05,0.1; dense 10000x1000, ridge only")
    parser.add_argument("--scales", default=None, help="sparse size factors (default 0.125,0.25,0.5,1)")
    parser.add_argument("--problems", default="lasso,logistic")
    parser.add_argument("--dense", default=None, help="dense n x p cases, e.g. 100000x1000")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    one_thread()
    print(header(sys.argv, ("hyperopt", "jax", "numpy", "scipy", "sklearn")), flush=True)
    default_scales = "0.05,0.1" if args.quick else "0.125,0.25,0.5,1"
    scales = [float(s) for s in (args.scales or default_scales).split(",")]
    dense = args.dense or ("10000x1000" if args.quick else "100000x1000")
    specs = [{"kind": "sparse", "problem": pr, "scale": s} for pr in args.problems.split(",") for s in scales]
    specs += [{"kind": "dense", "problem": pr, "n": int(d.split("x")[0]), "p": int(d.split("x")[1])}
              for pr in (("ridge",) if args.quick else ("ridge", "logistic")) for d in dense.split(",") if d]
    rows = []
    for spec in specs:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        row = {"problem": spec["problem"], "storage": spec["kind"]}
        if proc.returncode != 0:
            row["status"] = "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        else:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            row["step µs / M entries"] = 1e6 * row["step s"] / (row["nnz"] / 1e6)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = ["problem", "storage", "n", "p", "nnz", "data MiB", "load s", "hypergrad s",
            "hypergrad finite", "residual", "step s",
            "cold step s", "step µs / M entries", "temp MiB", "RSS +step MiB", "peak MiB"]
    print(markdown_table(rows, cols, {"nnz": ".3g"}))
    if any("status" in r for r in rows):
        print("\n".join(f"{r['problem']} {r['storage']}: {r['status']}" for r in rows if "status" in r))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
