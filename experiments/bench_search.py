"""Gradient-based vs black-box hyperparameter search on the same splits and budget (issue #12.1).

    python experiments/bench_search.py                  # 6 workloads (~15-25 min on 2 cores)
    python experiments/bench_search.py --quick          # 2 small workloads, small budgets (CI)
    python experiments/bench_search.py --only logistic_bc,cv_lasso --trials 50 --budget 30

Methods, all on the same splits (5-fold CV over train ∪ val unless marked hold-out):

* ``hyperopt implicit`` / ``hyperopt unrolled``: :func:`hyperopt.bilevel.fit` with the
  configs' defaults (L-BFGS outer optimizer with backtracking, loose-to-tight inner
  tolerance, stopping rule), minimizing the criterion below; on per-feature workloads also
  ``hyperopt implicit + shrinkage``, which adds ``hparam_penalty=0.01`` (log-penalties
  pulled toward their mean, as ``experiment=per_feature_logistic`` does: it minimizes
  another objective, and may reach a higher criterion but a lower test loss);
* scikit-learn's ``LogisticRegressionCV`` / ``RidgeCV`` / ``LassoCV`` with 10 and 100 grid
  points, on the same folds (one λ only; on many-λ workloads the 10-point one is shown as
  the one-λ reference);
* ``random``: log-uniform λ (each coordinate independently) and ``TPE``: Optuna's
  ``TPESampler(seed=0)`` through ``study.ask/tell``; each trial is one call of the
  compiled validation criterion below (cold start, final tolerance), so the black-box
  searches pay no recompilation per trial; the criterion's compile time is charged to both.

Every method stops at its own cap (``--steps`` outer steps, ``--trials`` trials) or when
its search has run ``--budget`` seconds after compiling, whichever comes first.

**One validation criterion for all**: the mean out-of-fold loss (log-loss / MSE) at a
method's chosen λ, computed by one compiled function (``Bilevel.outer_value`` with the
inner solver at tol 1e-10 from a cold start — LBFGS: up to 5000 iterations —, no
hyperparameter penalty); **test loss**:
the model refit on train ∪ val at that λ (``Bilevel.refit_model``), on the test split.
Curves: best-so-far criterion (and the test loss of the best-so-far λ) against wall time
since the method started, compile included. "t → 1 %": the first time a method's
best-so-far criterion is within 1 % of the best criterion any method found there.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, one_thread  # noqa: E402

ALL = ("logistic_bc", "ridge_diabetes", "cv_lasso", "pf_bc", "pf_digits", "pf_synth")
QUICK = ("logistic_bc", "pf_bc")


@dataclasses.dataclass
class Workload:
    name: str
    kind: str  # logistic | ridge | lasso
    problem: object
    make_solver: object
    data: object
    fold_ids: object  # np array over train ∪ val, or None (hold-out)
    bounds: tuple  # (lo, hi) of λ for random / TPE
    hparam_penalty: float
    description: str

    @property
    def per_feature(self) -> bool:
        return bool(getattr(self.problem, "per_feature", False))

    @property
    def n_hparams(self) -> int:
        return self.data.n_features if self.per_feature else 1


def kfold_ids(n, np, seed=0):
    from sklearn.model_selection import KFold
    ids = np.empty(n, int)
    for k, (_, val) in enumerate(KFold(5, shuffle=True, random_state=seed).split(np.zeros((n, 1)))):
        ids[val] = k
    return ids


def make_workload(name, np, jnp):
    from hyperopt import LBFGS, ProximalGradient
    from hyperopt.data import load_dataset
    from hyperopt.problems import Lasso, Logistic, Ridge, RidgeCholesky

    lbfgs = functools.partial(LBFGS, maxiter=500)
    if name in ("logistic_bc", "pf_bc", "pf_digits"):
        dataset = "digits" if name == "pf_digits" else "breast_cancer"
        data = load_dataset(dataset, seed=0)
        per_feature = name != "logistic_bc"
        folds = kfold_ids(data.n_train + data.n_val, np)
        what = f"{data.n_features} per-feature L2 penalties" if per_feature else "one L2 penalty"
        return Workload(name, "logistic", Logistic(per_feature=per_feature), lbfgs, data, folds,
                        (1e-6, 1e1), 0.01 if per_feature else 0.0,
                        f"logistic, {dataset} ({data.n_train + data.n_val} train+val, {data.n_test} test, "
                        f"{max(data.n_classes, 2)} classes), {what}, 5-fold CV")
    if name == "ridge_diabetes":
        data = load_dataset("diabetes", seed=0)
        return Workload(name, "ridge", Ridge(), lbfgs, data, kfold_ids(data.n_train + data.n_val, np),
                        (1e-5, 1e2), 0.0, f"ridge, diabetes ({data.n_train + data.n_val} train+val, "
                        f"{data.n_test} test, 10 features, standardized y), one λ, 5-fold CV")
    if name == "cv_lasso":
        from bench_lasso_cv import make_workloads
        (w,) = make_workloads(["cv_lasso"], np, jnp)
        X = np.concatenate([np.asarray(w.data.X_train), np.asarray(w.data.X_val)])
        y = np.concatenate([np.asarray(w.data.y_train), np.asarray(w.data.y_val)])
        alpha_max = float(np.max(np.abs(X.T @ y)) / len(y))  # LassoCV's grid top (no intercept)
        solver = functools.partial(ProximalGradient, maxiter=2000, acceleration=True)
        return Workload(name, "lasso", Lasso(), solver, w.data, w.fold_ids,
                        (alpha_max * 1e-3, alpha_max), 0.0,
                        "lasso, simulated 500×1000 (+125 test; sparse-ho's LassoCV example), one λ, "
                        "5-fold CV")
    if name == "pf_synth":
        data = load_dataset("make_regression", n_samples=2500, n_features=1000, n_informative=50,
                            noise=300.0, seed=0)
        return Workload(name, "ridge", Ridge(per_feature=True), RidgeCholesky, data, None, (1e-5, 1e3),
                        0.01, f"ridge, make_regression {data.n_train}/{data.n_val}/{data.n_test}, "
                        "1000 features (50 informative), 1000 per-feature λ (Cholesky inner solve), hold-out")
    raise ValueError(name)


# ---------------------------------------------------------------------------------------
# The common criterion and test loss
# ---------------------------------------------------------------------------------------

class Judge:
    """One compiled validation criterion and one compiled refit for every method."""

    def __init__(self, w: Workload, jax, jnp, np):
        import optax

        from hyperopt.bilevel import Bilevel, make_splits

        self.jax, self.jnp, self.np, self.w = jax, jnp, np, w
        # A cold start at extreme per-feature λ (1e-7…1e4) can need more than the runs' 500
        # LBFGS iterations to reach tol: the judge may take 5000.
        make = functools.partial(w.make_solver, maxiter=5000) if w.kind == "logistic" else w.make_solver
        self.bilevel = Bilevel(w.problem, make, optax.sgd(0.0),
                               cv_folds=0 if w.fold_ids is None else w.fold_ids, inner_tol=None)
        splits = make_splits(w.problem, w.data, self.bilevel.cv_folds)
        dtype = w.data.X_train.dtype
        tol = jnp.asarray(self.bilevel.final_tol(dtype), dtype)
        theta0 = w.problem.init_hparams(w.data)
        self.theta_shape = jax.tree.map(jnp.shape, theta0)
        d = w.data
        X = jnp.concatenate([d.X_train, d.X_val])
        y = jnp.concatenate([d.y_train, d.y_val])
        refit_init = w.problem.init_params(d, n_samples=y.shape[0])
        # Data are arguments, not closed-over constants: XLA would constant-fold products of
        # them at compile time (minutes for a 1000×1000 Gram matrix).
        t0 = time.perf_counter()
        crit = jax.jit(lambda th, sp, tol: self.bilevel.outer_value(th, sp.cold_params, sp, tol))
        crit = crit.lower(theta0, splits, tol).compile()
        self.compile_s = time.perf_counter() - t0
        self._crit = lambda th: crit(th, splits, tol)
        refit = jax.jit(lambda th, init, X, y, Xt, yt, tol: self.bilevel.refit_model(th, init, X, y, Xt, yt,
                                                                                     tol)[2]["test_loss"])
        args = (refit_init, X, y, d.X_test, d.y_test, tol)
        refit = refit.lower(theta0, *args).compile()
        self._refit = lambda th: refit(th, *args)
        self._cache = {}

    def theta(self, log_lam):
        """θ of the problem from log λ (a scalar or a vector, broadcast to the shape)."""
        jnp = self.jnp
        make = lambda shape: jnp.broadcast_to(jnp.asarray(log_lam, jnp.float64), shape)
        if isinstance(self.theta_shape, dict):
            return {k: make(s) for k, s in self.theta_shape.items()}
        return make(self.theta_shape)

    def criterion(self, theta) -> float:
        return float(self._crit(theta))

    def both(self, theta) -> tuple[float, float]:
        key = self.np.asarray(self.jax.flatten_util.ravel_pytree(theta)[0]).tobytes()
        if key not in self._cache:
            self._cache[key] = (self.criterion(theta), float(self._refit(theta)))
        return self._cache[key]


# ---------------------------------------------------------------------------------------
# Methods: each returns a curve [(seconds, theta)] of best-so-far points and a summary
# ---------------------------------------------------------------------------------------

def run_hyperopt(w: Workload, implicit: bool, steps: int, budget: float, jax, np, hparam_penalty=0.0):
    import hyperopt.bilevel as hb
    from hyperopt.outer import lbfgs_backtracking

    jax.clear_caches()  # each run compiles its own programs, as a new process would
    bilevel = hb.Bilevel(w.problem, functools.partial(w.make_solver, implicit_diff=implicit),
                         lbfgs_backtracking(), hparam_penalty=hparam_penalty,
                         cv_folds=0 if w.fold_ids is None else w.fold_ids)
    curve, start, searched = [], time.perf_counter(), [0.0]

    def callback(state, record):
        curve.append((time.perf_counter() - start, jax.device_get(state.best_theta)))
        searched[0] = record["time"]  # since the loop started, after compiling

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = hb.fit(bilevel, w.data, steps, callback=callback, should_stop=lambda: searched[0] > budget)
    total = time.perf_counter() - start
    theta = jax.tree.map(np.log, {k: np.asarray(v) for k, v in result.best_hparams.items()})
    if w.kind != "lasso":  # L2 problems: θ is the array log λ; the lasso's is {"l1reg": log λ}
        theta = theta["l2reg"]
    curve.append((total, theta))
    return curve, {"evals": f"{len(result.history)} steps ({result.status})",
                   "compile s": result.compile_time, "wall s": total}


def run_black_box(w: Workload, judge: Judge, sampler: str, trials: int, budget: float, np):
    lo, hi = np.log(w.bounds[0]), np.log(w.bounds[1])
    dim = w.n_hparams
    rng = np.random.default_rng(0)
    study = None
    if sampler == "tpe":
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    curve, best, start = [], math.inf, time.perf_counter() - judge.compile_s  # compile charged
    n = 0
    while n < trials and time.perf_counter() - start - judge.compile_s <= budget:
        if study is None:
            log_lam = rng.uniform(lo, hi, dim)
        else:
            trial = study.ask()
            log_lam = np.log([trial.suggest_float(f"lam{j}", w.bounds[0], w.bounds[1], log=True)
                              for j in range(dim)])
        theta = judge.theta(log_lam if dim > 1 else log_lam[0])
        value = judge.criterion(theta)
        if study is not None:
            study.tell(trial, value)
        n += 1
        if value < best:
            best = value
            curve.append((time.perf_counter() - start, theta))
    total = time.perf_counter() - start
    curve.append((total, curve[-1][1]))
    return curve, {"evals": f"{n} trials", "compile s": judge.compile_s, "wall s": total}


def run_cv_estimator(w: Workload, grid: int, np):
    """scikit-learn's CV estimator on the same folds; returns its λ in hyperopt's units."""
    from sklearn.linear_model import LassoCV, LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import PredefinedSplit

    d = w.data
    X = np.concatenate([np.asarray(d.X_train), np.asarray(d.X_val)])
    y = np.concatenate([np.asarray(d.y_train), np.asarray(d.y_val)])
    ids = w.fold_ids if w.fold_ids is not None else np.r_[np.full(d.n_train, -1), np.zeros(d.n_val, int)]
    cv = PredefinedSplit(ids)
    n_tr = float(np.mean([np.sum(ids != k) for k in np.unique(ids[ids >= 0])]))
    if w.fold_ids is None:
        n_tr = float(d.n_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the estimators' default max_iter
        t0 = time.perf_counter()
        if w.kind == "logistic":
            model = LogisticRegressionCV(Cs=grid, cv=cv, l1_ratios=(0.0,), scoring="neg_log_loss",
                                         use_legacy_attributes=False).fit(X, y)
            lam, label = 1.0 / (float(np.squeeze(model.C_)) * n_tr), f"LogisticRegressionCV({grid})"
        elif w.kind == "ridge":
            lams = np.geomspace(*w.bounds, grid)
            model = RidgeCV(alphas=lams * n_tr, fit_intercept=False, cv=cv,
                            scoring="neg_mean_squared_error").fit(X, y)
            lam, label = float(model.alpha_) / n_tr, f"RidgeCV({grid})"
        else:
            fit_intercept = bool(getattr(w.problem, "fit_intercept", False))
            model = LassoCV(alphas=grid, cv=cv, fit_intercept=fit_intercept).fit(X, y)
            lam, label = float(model.alpha_), f"LassoCV({grid})"
        seconds = time.perf_counter() - t0
    return label, seconds, float(np.log(lam))


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

def summarize(label, curve, judge, info):
    """Criterion and test loss along the best-so-far curve (off the clock); the last point
    is the λ the method returns."""
    points = [(t, *judge.both(theta)) for t, theta in curve]
    return {"method": label, "points": points, "theta": curve[-1][1], "val": points[-1][1],
            "test": points[-1][2], **info}


def lam_text(theta, np):
    v = np.exp(np.asarray(next(iter(theta.values())) if isinstance(theta, dict) else theta))
    if v.size == 1:
        return f"{float(v):.4g}"
    return f"{v.min():.2g}…{v.max():.2g} (gmean {np.exp(np.log(v).mean()):.2g})"


def plot(results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    methods = list(dict.fromkeys(r["method"].removesuffix(" (one λ)")
                                 for rows in results.values() for r in rows))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}  # one colour per method in every panel
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 6.4), squeeze=False)
    for col, name in enumerate(names):
        rows = results[name]
        for r in rows:
            ts = [p[0] for p in r["points"]]
            one_point = len(ts) <= 2 and "CV" in r["method"]
            style = dict(marker="o", ls="") if one_point else dict(drawstyle="steps-post")
            for row, k in ((0, 1), (1, 2)):
                axes[row, col].plot(ts, [p[k] for p in r["points"]], label=r["method"],
                                    color=colors[r["method"].removesuffix(" (one λ)")], **style)
        best = min(p[1] for r in rows for p in r["points"])
        axes[0, col].axhline(best * 1.01, color="gray", ls=":", lw=1, label="best + 1 %")
        axes[0, col].set_title(name, fontsize=10)
        axes[0, col].legend(fontsize=6)
        for row, lab in ((0, "best validation loss (5-fold / hold-out)"), (1, "test loss at that λ")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_xlabel("wall time (s, compile included)")
            if col == 0:
                ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"workloads {', '.join(QUICK)}, small budgets")
    ap.add_argument("--only", default=None, help=f"comma-separated workloads out of {', '.join(ALL)}")
    ap.add_argument("--trials", type=int, default=None, help="random / TPE trials (default 100; quick 10)")
    ap.add_argument("--steps", type=int, default=None, help="hyperopt outer steps (default 50; quick 20)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of search per method after compiling (default 60; quick 10)")
    ap.add_argument("--methods", default=None,
                    help="of implicit,unrolled,cv,random,tpe (default all; quick: all but unrolled)")
    ap.add_argument("--figures", default=str(Path(__file__).resolve().parent / "figures"),
                    help="folder of search.png")
    ap.add_argument("--threads", type=int, default=1, choices=(0, 1), help="1: one thread (default)")
    opts = ap.parse_args(argv)
    names = (opts.only.split(",") if opts.only else list(QUICK if opts.quick else ALL))
    for n in names:
        if n not in ALL:
            ap.error(f"unknown workload {n!r}; allowed: {', '.join(ALL)}")
    trials = opts.trials or (10 if opts.quick else 100)
    steps = opts.steps or (20 if opts.quick else 50)
    budget = opts.budget or (10.0 if opts.quick else 60.0)
    methods = set((opts.methods or ("implicit,cv,random,tpe" if opts.quick else
                                    "implicit,unrolled,cv,random,tpe")).split(","))
    if opts.threads == 1:
        one_thread()
    import jax
    import jax.flatten_util  # noqa: F401 - Judge.both
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    print(header(["experiments/bench_search.py", *argv], ("hyperopt", "jax", "optax", "numpy", "sklearn",
                                                          "optuna")))
    print(f"float64; budget per method: {steps} outer steps / {trials} trials / {budget:g} s, "
          "whichever comes first; one run each (no repeats)\n")
    results, summary = {}, []
    for name in names:
        w = make_workload(name, np, jnp)
        print(f"## {name}: {w.description}", flush=True)
        judge = Judge(w, jax, jnp, np)
        rows = []
        for implicit in (True, False):
            if ("implicit" if implicit else "unrolled") in methods:
                curve, info = run_hyperopt(w, implicit, steps, budget, jax, np)
                label = f"hyperopt {'implicit' if implicit else 'unrolled'}"
                rows.append(summarize(label, curve, judge, info))
        if "implicit" in methods and w.hparam_penalty:
            curve, info = run_hyperopt(w, True, steps, budget, jax, np, w.hparam_penalty)
            rows.append(summarize("hyperopt implicit + shrinkage", curve, judge, info))
        if "cv" in methods:
            for grid in ((10, 100) if not w.per_feature else (10,)):
                label, seconds, log_lam = run_cv_estimator(w, grid, np)
                theta = judge.theta(log_lam)
                label += " (one λ)" if w.per_feature else ""
                rows.append(summarize(label, [(seconds, theta)], judge, {"evals": f"{grid} λ × 5 folds"
                                      if w.fold_ids is not None else f"{grid} λ", "compile s": 0.0,
                                      "wall s": seconds}))
        for sampler, label in (("random", "random search"), ("tpe", "TPE (Optuna)")):
            if sampler in methods:
                curve, info = run_black_box(w, judge, sampler, trials, budget, np)
                rows.append(summarize(label, curve, judge, info))
        best = min(p[1] for r in rows for p in r["points"])
        for r in rows:
            hit = [p[0] for p in r["points"] if p[1] <= best * 1.01]
            r["t1"] = hit[0] if hit else math.inf
            r["t1 − compile"] = r["t1"] - r["compile s"]
            r["gap"] = r["val"] / best - 1
        ref = next((r for r in rows if r["method"] == "hyperopt implicit"), None)
        for r in rows:
            r["t1 / implicit"] = (r["t1"] / ref["t1"] if ref and math.isfinite(r["t1"])
                                  and math.isfinite(ref["t1"]) else math.nan)
            summary.append({"workload": name, "λ": w.n_hparams, **{k: r[k] for k in
                            ("method", "t1", "t1 − compile", "t1 / implicit", "val", "test")}})
        print(markdown_table(rows, ["method", "evals", "wall s", "compile s", "val", "gap", "test", "t1",
                                    "t1 − compile", "t1 / implicit"],
                             {"val": ".6g", "test": ".6g", "gap": "+.2%", "wall s": ".3g", "compile s": ".2f",
                              "t1": ".3g", "t1 − compile": ".3g", "t1 / implicit": ".2f"}))
        print(f"best validation loss on {name}: {best:.6g}; λ chosen: " + "; ".join(
            f"{r['method']} {lam_text(r['theta'], np)}" for r in rows) + "\n", flush=True)
        results[name] = rows
    print("## Time to within 1 % of the best validation loss (s, compile included)\n")
    print(markdown_table(summary, ["workload", "λ", "method", "t1", "t1 − compile", "t1 / implicit", "val",
                                   "test"], {"t1": ".3g", "t1 − compile": ".3g", "t1 / implicit": ".2f",
                                             "val": ".6g", "test": ".6g"}))
    print("\nval: the common validation criterion (mean out-of-fold loss, or hold-out loss) at the λ each "
          "method returns (random / TPE: their best trial); gap: val over the best any method found, "
          "minus 1; test: test loss of the model refit on train ∪ val at that λ; t1: first time the "
          "method's best-so-far val is within 1 % of the best (inf: never within its budget); "
          "t1 − compile: the same without the method's compile time (what a run with a warm persistent "
          "compilation cache would pay, roughly); t1 / implicit: t1 over hyperopt implicit's (> 1: hyperopt "
          "implicit is faster). Every time is one run on this machine: provisional under load.")
    figure = Path(opts.figures) / "search.png"
    plot(results, figure, f"bench_search.py {' '.join(argv)}: best-so-far validation loss and its test "
         "loss vs wall time")
    print(f"\nfigure: {figure}")
    return summary


if __name__ == "__main__":
    main()
