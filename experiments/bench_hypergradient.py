"""Cost and accuracy of one hypergradient: implicit differentiation vs unrolling.

    python experiments/bench_hypergradient.py              # maxiter 100, 1000, 10000 (~4 min, 2 cores)
    python experiments/bench_hypergradient.py --quick      # maxiter 10, 100; 2 repeats (CI)
    python experiments/bench_hypergradient.py --maxiters 100,300 --repeats 7 --json out.json

Two problems, float64, one hyperparameter λ, hypergradient = d(validation loss)/dλ
through ``solver.run``:

* ridge: synthetic n=2000 train / 1000 validation, p=500, objective
  ``0.5*mean((Xw-y)^2) + 0.5*λ||w||²``, λ=1e-2, ``GradientDescent`` with the fixed step
  1/L (L = λ_max(XᵀX/n) + λ, computed from the data), validation MSE. Exact value: closed
  form in numpy.
* logistic: scikit-learn digits (``hyperopt.data.load_dataset("digits")``: 1079 train /
  359 validation, standardized), multinomial (64 features × 10 classes, no intercept so
  the problem is strictly convex), L2 λ=1e-3, ``LBFGS``, validation log-loss. Exact value:
  an independent damped Newton solve (dense Hessian) to ‖∇f‖ ≈ 1e-15 and the implicit
  formula ``-∇L_valᵀ H⁻¹ W*``, cross-checked by a float64 central finite difference of
  Newton solutions.

For every maxiter the solvers use ``tol=1e-300``, so both modes run exactly ``maxiter``
iterations (the "iters" column says what actually ran). Modes: ``implicit`` (the
solver's default implicit solve: CG for GradientDescent and LBFGS), ``implicit+lu``
(``implicit_diff_solve=solve_lu``: the dense Hessian, for comparison), ``unrolled``,
``unrolled+ckpt`` (``unroll_checkpoint=True``: each step rematerialized in the backward pass).
A second table uses the default ``tol`` (stop at convergence; maxiter 300 unless
``--default-tol-maxiter``).

Measured for each: compile time (``jax.jit(f).lower(*args).compile()``), median wall time
of the compiled call over interleaved repeats, XLA's compiled temporary memory
``memory_analysis().temp_size_in_bytes`` of the hypergradient function, and the time of
one forward inner solve with the same solver (same mode), so ``hg/solve`` says how many
inner solves one hypergradient costs. By default XLA runs on one thread (as the JAXopt
anchors in ``shared/ANCHORS.md``); ``--threads 0`` keeps XLA's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header  # noqa: E402

MIB = 2.0 ** 20
TINY_TOL = 1e-300  # positive (required) and never reached: every solve runs maxiter steps


# ---------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Problem:
    name: str
    solver_name: str
    make_solver: Callable[..., Any]  # (maxiter, tol, implicit_diff, implicit_diff_solve)
    init_params: Callable[[], Any]   # called inside the traced functions
    outer: Callable[..., Any]        # outer(params, X_val, y_val) -> scalar
    args: tuple                      # (lam, X, y, X_val, y_val) as jax arrays
    exact: float                     # exact hypergradient
    reference_note: str
    iterate_bytes: int
    data_bytes: int
    description: str


def ridge_problem(jnp, hyperopt, seed: int = 0) -> Problem:
    n, n_val, p, lam = 2000, 1000, 500, 1e-2
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(p) / np.sqrt(p)
    X = rng.standard_normal((n, p))
    y = X @ w_true + 0.5 * rng.standard_normal(n)
    X_val = rng.standard_normal((n_val, p))
    y_val = X_val @ w_true + 0.5 * rng.standard_normal(n_val)

    eig = np.linalg.eigvalsh(X.T @ X / n)
    L, mu = eig[-1] + lam, eig[0] + lam

    def objective(w, lam, X, y):
        return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.dot(w, w)

    def outer(w, X_val, y_val):
        return jnp.mean((X_val @ w - y_val) ** 2)

    # Closed form: H w* = Xᵀy/n with H = XᵀX/n + λI; dw*/dλ = -H⁻¹ w*.
    H = X.T @ X / n + lam * np.eye(p)
    w_star = np.linalg.solve(H, X.T @ y / n)
    grad_val = 2 * X_val.T @ (X_val @ w_star - y_val) / n_val
    exact = float(grad_val @ -np.linalg.solve(H, w_star))

    def make_solver(maxiter, tol, implicit_diff, implicit_diff_solve=None, **options):
        return hyperopt.GradientDescent(fun=objective, stepsize=float(1.0 / L), maxiter=maxiter,
                                        tol=tol, implicit_diff=implicit_diff,
                                        implicit_diff_solve=implicit_diff_solve, **options)

    return Problem(
        name="ridge", solver_name="GD 1/L", make_solver=make_solver,
        init_params=lambda: jnp.zeros(p), outer=outer,
        args=tuple(jnp.asarray(a) for a in (lam, X, y, X_val, y_val)), exact=exact,
        reference_note="closed form (numpy)", iterate_bytes=8 * p, data_bytes=8 * (n * p + n),
        description=(f"ridge, synthetic n={n} (val {n_val}), p={p}, λ={lam:g}, GradientDescent "
                     f"step 1/L, L={L:.4g}, μ={mu:.4g} (κ={L / mu:.3g})"))


def logistic_problem(jax, jnp, hyperopt, seed: int = 0) -> Problem:
    from hyperopt.data import load_dataset

    ds = load_dataset("digits", seed=seed)
    X, y, X_val, y_val = ds.X_train, ds.y_train, ds.X_val, ds.y_val
    p, k, lam = ds.n_features, ds.n_classes, 1e-3

    def log_loss(W, X, y):
        logits = X @ W
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)

    def objective(W, lam, X, y):
        return log_loss(W, X, y) + 0.5 * lam * jnp.sum(W * W)

    exact, fd, grad_norm = _logistic_reference(jax, jnp, objective, log_loss, lam, X, y,
                                               X_val, y_val, (p, k))

    def make_solver(maxiter, tol, implicit_diff, implicit_diff_solve=None, **options):
        return hyperopt.LBFGS(fun=objective, maxiter=maxiter, tol=tol, implicit_diff=implicit_diff,
                              implicit_diff_solve=implicit_diff_solve, **options)

    return Problem(
        name="logistic", solver_name="LBFGS", make_solver=make_solver,
        init_params=lambda: jnp.zeros((p, k)), outer=log_loss,
        args=(jnp.asarray(lam), X, y, X_val, y_val), exact=exact,
        reference_note=(f"Newton to ‖∇f‖={grad_norm:.1e} + implicit formula; central FD "
                        f"agrees to {abs(fd - exact) / abs(exact):.1e}"),
        iterate_bytes=8 * p * k, data_bytes=8 * X.size + 4 * y.size,
        description=(f"logistic, digits multinomial n={ds.n_train} (val {ds.n_val}), "
                     f"{p} features × {k} classes, no intercept, λ={lam:g}, LBFGS (history 10)"))


def _logistic_reference(jax, jnp, objective, log_loss, lam, X, y, X_val, y_val, shape):
    """Independent of hyperopt: damped Newton with the dense Hessian, then the implicit
    formula in numpy; plus a central finite difference of Newton solutions."""
    size = int(np.prod(shape))
    f = jax.jit(lambda w, lam: objective(w.reshape(shape), lam, X, y))
    g = jax.jit(jax.grad(lambda w, lam: objective(w.reshape(shape), lam, X, y)))
    h = jax.jit(jax.hessian(lambda w, lam: objective(w.reshape(shape), lam, X, y)))
    val = jax.jit(lambda w: log_loss(w.reshape(shape), X_val, y_val))

    def newton(lam, w):
        for _ in range(100):
            grad = np.asarray(g(w, lam))
            if np.linalg.norm(grad) < 1e-14:
                break
            d = -np.linalg.solve(np.asarray(h(w, lam)), grad)
            f0, t = float(f(w, lam)), 1.0
            while float(f(w + t * d, lam)) > f0 + 1e-4 * t * (grad @ d) + 1e-15 * abs(f0) and t > 1e-10:
                t *= 0.5
            w = w + t * d
        return w, float(np.linalg.norm(np.asarray(g(w, lam))))

    w_star, grad_norm = newton(lam, jnp.zeros(size))
    H = np.asarray(h(w_star, lam))
    grad_val = np.asarray(jax.grad(val)(w_star))
    exact = float(grad_val @ -np.linalg.solve(H, np.asarray(w_star)))  # ∂∇f/∂λ = W
    delta = 1e-4 * lam
    v_plus = float(val(newton(lam + delta, w_star)[0]))
    v_minus = float(val(newton(lam - delta, w_star)[0]))
    fd = (v_plus - v_minus) / (2 * delta)
    return exact, fd, grad_norm


# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measured:
    label: str
    compiled: Any = None
    compile_s: float = float("nan")
    temp_bytes: float = float("nan")
    first_out: Any = None
    first_s: float = float("nan")
    times: list = dataclasses.field(default_factory=list)
    rounds: list = dataclasses.field(default_factory=list)  # round of each sample (-1: warm-up)
    skipped: str = ""
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def median_s(self) -> float:
        return float(np.median(self.times)) if self.times else float("nan")


def compile_and_warm(jax, label, fn, args, max_run_bytes) -> Measured:
    m = Measured(label)
    t0 = time.perf_counter()
    m.compiled = jax.jit(fn).lower(*args).compile()
    m.compile_s = time.perf_counter() - t0
    analysis = m.compiled.memory_analysis()
    m.temp_bytes = float(analysis.temp_size_in_bytes) if analysis is not None else float("nan")
    if m.temp_bytes > max_run_bytes:
        m.skipped = f"not run: needs {m.temp_bytes / 2**30:.1f} GiB > --max-run-gib"
        m.compiled = None
        return m
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        m.first_out = jax.device_get(jax.block_until_ready(m.compiled(*args)))
        m.first_s = time.perf_counter() - t0
    m.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return m


def time_interleaved(jax, measured: list[Measured], args, repeats: int, slow_s: float,
                     slow_repeats: int) -> None:
    """Round-robin over the compiled functions so machine noise hits all of them alike.

    A warm-up call longer than ``slow_s`` counts as the first sample (its one-off
    overhead is negligible there) and such functions get ``slow_repeats`` samples.
    """
    wanted = {}
    for m in measured:
        wanted[id(m)] = repeats
        if m.first_s > slow_s:
            wanted[id(m)] = slow_repeats
            m.times.append(m.first_s)
            m.rounds.append(-1)
    for round_ in range(max(wanted.values(), default=0)):
        for m in measured:
            if m.compiled is None or len(m.times) >= wanted[id(m)]:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                jax.block_until_ready(m.compiled(*args))
                m.times.append(time.perf_counter() - t0)
                m.rounds.append(round_)


def make_functions(jax, problem: Problem, solver):
    """Forward solve and hypergradient through the same solver object."""
    def forward(lam, X, y, X_val, y_val):
        sol = solver.run(problem.init_params(), lam, X, y)
        return sol.params, sol.state.iter_num, sol.state.error

    def hypergradient(lam, X, y, X_val, y_val):
        def val(lam):
            sol = solver.run(problem.init_params(), lam, X, y)
            return problem.outer(sol.params, X_val, y_val), (sol.state.iter_num, sol.state.error)
        (value, (iters, error)), grad = jax.value_and_grad(val, has_aux=True)(lam)
        return value, grad, iters, error

    return forward, hypergradient


def bench_group(jax, hyperopt, problem: Problem, maxiter: int, tol, opts) -> list[dict]:
    """All modes of one problem at one maxiter; returns one row per mode."""
    solve_lu = hyperopt.linear_solve.solve_lu
    modes = [("implicit", True, None, {}), ("implicit+lu", True, solve_lu, {}),
             ("unrolled", False, None, {}),
             ("unrolled+ckpt", False, None, {"unroll_checkpoint": True})]
    max_run = opts.max_run_gib * 2 ** 30
    fwd, hg = {}, {}
    for mode, implicit, lin, extra in modes:
        # A fresh solver per compiled function, so no trace is shared and compile times
        # are honest. The forward solve depends on neither the linear solve nor the
        # checkpointing of the backward pass: one per mode.
        if lin is None and not extra:
            f_fwd, _ = make_functions(jax, problem, problem.make_solver(maxiter, tol, implicit, lin))
            fwd[mode] = compile_and_warm(jax, f"{mode} forward", f_fwd, problem.args, max_run)
        _, f_hg = make_functions(jax, problem, problem.make_solver(maxiter, tol, implicit, lin, **extra))
        hg[mode] = compile_and_warm(jax, f"{mode} hypergradient", f_hg, problem.args, max_run)
    time_interleaved(jax, [*fwd.values(), *hg.values()], problem.args, opts.repeats,
                     opts.slow_s, opts.slow_repeats)

    rows = []
    for mode, implicit, _, _ in modes:
        f = fwd["implicit" if implicit else "unrolled"]
        h = hg[mode]
        row = dict(problem=problem.name, solver=problem.solver_name, maxiter=maxiter,
                   tol=("default" if tol is None else tol), mode=mode,
                   compile_hg_s=h.compile_s, compile_fwd_s=f.compile_s,
                   temp_hg_mib=h.temp_bytes / MIB, temp_fwd_mib=f.temp_bytes / MIB,
                   solve_ms=f.median_s * 1e3, hg_ms=h.median_s * 1e3,
                   solve_times_ms=[t * 1e3 for t in f.times], hg_times_ms=[t * 1e3 for t in h.times],
                   iters_fwd=int(f.first_out[1]) if f.first_out is not None else None,
                   skipped=h.skipped, warnings=h.warnings + f.warnings)
        if h.first_out is not None:
            value, grad, iters, error = h.first_out
            row.update(val_loss=float(value), hypergrad=float(grad), iters=int(iters),
                       inner_error=float(error),
                       rel_err=abs(float(grad) - problem.exact) / abs(problem.exact),
                       finite=bool(np.isfinite(grad)))
        # Ratio per round (both calls ran close in time, under the same machine load).
        f_by_round = dict(zip(f.rounds, f.times, strict=True))
        pairs = [t / f_by_round[r] for r, t in zip(h.rounds, h.times, strict=True) if r in f_by_round]
        row["hg_over_solve"] = float(np.median(pairs)) if pairs else float("nan")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------


def _fmt(x, spec):
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def _ms(x):
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x / 1e3:.2f} s" if x >= 10_000 else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def markdown_table(rows: list[dict]) -> str:
    head = ("| problem | maxiter | mode | iters run | hypergrad ms | inner solve ms | hg / solve "
            "| compile s (hg) | temp MiB (hg) | hypergradient | rel. error |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        ratio = r["hg_over_solve"]
        lines.append(
            f"| {r['problem']} ({r['solver']}) | {r['maxiter']} | {r['mode']} "
            f"| {r.get('iters', r['iters_fwd']) if not r['skipped'] else '—'} "
            f"| {_ms(r['hg_ms']) if not r['skipped'] else r['skipped']} | {_ms(r['solve_ms'])} "
            f"| {_fmt(ratio, '.2f')}× | {_fmt(r['compile_hg_s'], '.2f')} "
            f"| {_fmt(r['temp_hg_mib'], '.2f')} | {_fmt(r.get('hypergrad'), '.10g')} "
            f"| {_fmt(r.get('rel_err'), '.1e')} |")
    return "\n".join(lines)


def detail_table(rows: list[dict]) -> str:
    head = ("| problem | maxiter | tol | mode | hg ms: median (min–max, n) | solve ms: median (min–max, n) "
            "| compile s: hg / solve | temp MiB: hg / solve | inner ‖error‖ |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]

    def spread(ts):
        return f"{_ms(float(np.median(ts)))} ({_ms(min(ts))}–{_ms(max(ts))}, {len(ts)})" if ts else "—"

    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['maxiter']} | {r['tol']} | {r['mode']} | {spread(r['hg_times_ms'])} "
            f"| {spread(r['solve_times_ms'])} | {_fmt(r['compile_hg_s'], '.2f')} / "
            f"{_fmt(r['compile_fwd_s'], '.2f')} | {_fmt(r['temp_hg_mib'], '.2f')} / "
            f"{_fmt(r['temp_fwd_mib'], '.2f')} | {_fmt(r.get('inner_error'), '.1e')} |")
    return "\n".join(lines)


def growth_summary(problem: Problem, rows: list[dict]) -> list[str]:
    out = []
    for mode in ("implicit", "implicit+lu", "unrolled", "unrolled+ckpt"):
        pts = sorted((r["maxiter"], r["temp_hg_mib"]) for r in rows
                     if r["problem"] == problem.name and r["mode"] == mode and r["tol"] != "default")
        if len(pts) < 2:
            continue
        (m0, b0), (m1, b1) = pts[0], pts[-1]
        per_step = (b1 - b0) * MIB / (m1 - m0)
        out.append(f"- {problem.name} {mode}: temp {b0:.2f} MiB at maxiter {m0} → {b1:.2f} MiB at "
                   f"{m1}: {per_step / 1024:.2f} KiB per step = {per_step / problem.iterate_bytes:.2f}× "
                   f"the iterate ({problem.iterate_bytes / 1024:.1f} KiB), "
                   f"{per_step / problem.data_bytes:.4f}× the training data "
                   f"({problem.data_bytes / MIB:.2f} MiB)")
    return out


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="maxiter 10, 100; 2 repeats; default-tol table at maxiter 100")
    ap.add_argument("--maxiters", default=None,
                    help="comma-separated maxiter values (default 100,1000,10000)")
    ap.add_argument("--problems", default="ridge,logistic", help="ridge,logistic")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls per function after warm-up (default 5; quick 2)")
    ap.add_argument("--slow-repeats", type=int, default=3,
                    help="timed calls for functions whose warm-up call took more than --slow-s")
    ap.add_argument("--slow-s", type=float, default=1.0)
    ap.add_argument("--default-tol-maxiter", type=int, default=None,
                    help="maxiter of the default-tol table (default 300; quick 100; 0 to skip it)")
    ap.add_argument("--max-run-gib", type=float, default=8.0,
                    help="compile but do not run functions needing more temporary memory")
    ap.add_argument("--threads", type=int, default=1, choices=(0, 1),
                    help="1: one XLA CPU thread (as the JAXopt anchors); 0: XLA's default")
    ap.add_argument("--json", default=None, help="also write all measurements to this file")
    args = ap.parse_args(argv)
    if args.maxiters is not None:
        args.maxiters = [int(v) for v in args.maxiters.split(",") if v.strip()]
    else:
        args.maxiters = [10, 100] if args.quick else [100, 1000, 10000]
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.default_tol_maxiter is None:
        args.default_tol_maxiter = 100 if args.quick else 300
    args.problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    for p in args.problems:
        if p not in ("ridge", "logistic"):
            ap.error(f"unknown problem {p!r}")
    return args


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    if opts.threads == 1:  # read when the CPU backend starts, i.e. at the first computation
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false").strip()
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    import hyperopt

    t_start = time.perf_counter()
    command = "python experiments/bench_hypergradient.py" + ("".join(" " + shlex.quote(a) for a in argv))
    print(header(["experiments/bench_hypergradient.py", *argv]))
    print(f"backend {jax.default_backend()}, float64")
    print(f"timing: median of {opts.repeats} interleaved calls after a warm-up call "
          f"({opts.slow_repeats} for calls over {opts.slow_s:g} s); compile timed separately\n")

    problems = []
    for name in opts.problems:
        t0 = time.perf_counter()
        prob = ridge_problem(jnp, hyperopt) if name == "ridge" else logistic_problem(jax, jnp, hyperopt)
        problems.append(prob)
        print(f"* {prob.description}\n  exact hypergradient {prob.exact:.12g} ({prob.reference_note}; "
              f"{time.perf_counter() - t0:.1f} s)")
    print()

    rows, default_rows = [], []
    for prob in problems:
        for maxiter in opts.maxiters:
            t0 = time.perf_counter()
            group = bench_group(jax, hyperopt, prob, maxiter, TINY_TOL, opts)
            rows += group
            print(f"  [{prob.name} maxiter={maxiter}: {time.perf_counter() - t0:.1f} s]", flush=True)
        if opts.default_tol_maxiter:
            t0 = time.perf_counter()
            default_rows += bench_group(jax, hyperopt, prob, opts.default_tol_maxiter, None, opts)
            print(f"  [{prob.name} default tol: {time.perf_counter() - t0:.1f} s]", flush=True)

    print("\n### One hypergradient d(val loss)/dλ, every solve runs exactly maxiter iterations "
          "(tol=1e-300)\n")
    print(markdown_table(rows))
    if default_rows:
        print(f"\n### Default tol (1e-10 in float64, stop at convergence), maxiter "
              f"{opts.default_tol_maxiter}\n")
        print(markdown_table(default_rows))
    print("\nhg / solve: median over rounds of (hypergradient time / time of one forward inner "
          "solve of the same solver, timed in the same round); implicit modes: the while_loop "
          "solve, unrolled: the scan solve. temp MiB: XLA temporary buffers of the compiled "
          "hypergradient function. iters run: iterations that moved the iterate (the unrolled "
          "scan still computes all maxiter steps, frozen by jnp.where after convergence). "
          "rel. error: against the exact hypergradient of the fully converged problem.")
    print("\n### Memory growth with maxiter\n")
    for prob in problems:
        for line in growth_summary(prob, rows):
            print(line)
    print("\n### Timing detail\n")
    print(detail_table(rows + default_rows))

    anomalies = []
    for r in rows + default_rows:
        tag = f"{r['problem']} maxiter={r['maxiter']} tol={r['tol']} {r['mode']}"
        if r.get("finite") is False:
            anomalies.append(f"{tag}: non-finite hypergradient {r.get('hypergrad')}")
        if r.get("iters") is not None and r["tol"] != "default" and r["iters"] != r["maxiter"]:
            anomalies.append(f"{tag}: ran {r['iters']} iterations, not {r['maxiter']}")
        if r["skipped"]:
            anomalies.append(f"{tag}: {r['skipped']}")
        for w in r["warnings"]:
            anomalies.append(f"{tag}: {w}")
    if anomalies:
        print("\n### Flagged\n")
        print("\n".join(f"- {a}" for a in dict.fromkeys(anomalies)))

    total = time.perf_counter() - t_start
    print(f"\ntotal runtime: {total:.1f} s")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(dict(command=command, total_s=total, rows=rows, default_tol_rows=default_rows,
                           exact={p.name: p.exact for p in problems}), fh, indent=1, default=str)
    return rows + default_rows


if __name__ == "__main__":
    main()
