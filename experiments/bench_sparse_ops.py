"""Sparse design matrices in JAX: our segment-sum operator against BCOO/BCSR, and the memory
of loading sparse and large dense data.

    python experiments/bench_sparse_ops.py              # rcv1 shape (20,242 x 47,236) and 1/4 of it
    python experiments/bench_sparse_ops.py --quick      # 1/4 and 1/10 of rcv1 only, no memory part
    python experiments/bench_sparse_ops.py --shapes rcv1:1,real_sim:0.5 --repeats 9
    python experiments/bench_sparse_ops.py --memory-only

Part 1 (operations). Data: ``hyperopt.synthetic.make_sparse_text`` (text-like: Zipf
column frequencies, unit-norm tf-idf rows), float64. Representations, each jitted:

* ``segsum``: :class:`hyperopt.linop.SparseMatrix` (COO, gather + ``jax.ops.segment_sum``;
  ``(p, K)`` products one column at a time under ``lax.map``);
* ``segsum K-wide``: the same operator with ``(p, K)`` products as one gather of K-wide rows;
* ``BCOO`` and ``BCSR (+Xᵀ)``: ``jax.experimental.sparse`` from the same scipy matrix; BCSR
  has no transpose product, so a second BCSR holds ``Xᵀ`` for ``X.T @ u``;
* ``dense``: a dense ``jax.Array``, only when it fits ``--max-dense-mib``;
* ``scipy``: scipy's CSR on the host (not jittable, no autodiff), as a yardstick.

Operations, as the problems use them (n samples, p features, K = 10 classes, 5 folds):
``X @ w`` (p,), ``X @ W`` (p, K), ``Xᵀ r`` (n,), ``Xᵀ R`` (n, K), weighted column squared
norms ``Σ_i s_i X_ij²``, the row-weighted product ``Xᵀ (s ⊙ X v)`` (a Gauss-Newton /
Hessian-vector product), ``grad``: reverse mode of a weighted logistic loss in ``w``,
``grad x5 folds``: the same under ``jax.vmap`` over 5 per-sample weight vectors (k-fold
CV; the data broadcast), ``hvp``: forward over reverse (``jax.jvp`` of the gradient).
Cells are the median wall time of the compiled call (interleaved repeats) and, in
brackets, its compile time; every result is checked against scipy/float64 (flagged if the
relative error exceeds 1e-10).

Part 2 (memory), each case in a fresh process, peak RSS from ``getrusage``: generating
the three full shapes (time, peak); ``load_dataset("file", path=<svmlight written by this
script>)`` for an rcv1-shaped file
(its X never dense), and ``load_dataset`` of a dense ``n = 10⁵, p = 10³`` NPZ (one working
copy: the peak over the baseline should stay near raw + splits = 2x the array).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MIB = 2.0 ** 20
K_CLASSES = 5 * 2  # columns of W and R
FOLDS = 5
SHAPES = {"rcv1": (20_242, 47_236, 0.0016), "real_sim": (72_309, 20_958, 0.0024),
          "news20": (19_996, 1_355_191, 0.00034)}


# ---------------------------------------------------------------------------------------
# Part 1: operations
# ---------------------------------------------------------------------------------------


def _pytree(cls, fields):
    import jax
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls),
                                            data_fields=fields, meta_fields=[])


def make_variants(jax, jnp):
    """Two comparison operators: BCSR with its transpose stored (BCSR has no transpose
    product), and our COO operator with the (p, K) products done by one K-wide gather
    (what SparseMatrix did before it went column by column)."""
    from hyperopt.linop import SparseMatrix

    class BCSRPair:
        """``X @ v`` by ``jax.experimental.sparse.BCSR`` (native CPU kernel), ``X.T @ u``
        by a second BCSR holding ``Xᵀ``; autodiff goes through BCSR's own rules."""
        forward: object
        transposed: object

        def __matmul__(self, v):
            return self.forward @ v

        @property
        def T(self):
            return BCSRPair(self.transposed, self.forward)

    class WideGather(SparseMatrix):
        def matvec(self, v):
            if v.ndim == 1:
                return self._matvec(v)
            products = v[self.cols] * self.values[:, None]
            return jax.ops.segment_sum(products, self.rows, self.shape[0],
                                       indices_are_sorted=self.rows_sorted)

        @property
        def T(self):
            return WideGather(self.values, self.cols, self.rows, self.shape[::-1], False)

    BCSRPair = _pytree(BCSRPair, ["forward", "transposed"])
    jax.tree_util.register_dataclass(WideGather, data_fields=["values", "rows", "cols"],
                                     meta_fields=["shape", "rows_sorted"])
    return BCSRPair, WideGather


def representations(jax, jnp, A, max_dense_mib):
    """name -> (the matrix as a jit argument, or None when skipped, why)."""
    from jax.experimental import sparse as jsparse

    from hyperopt.linop import SparseMatrix

    BCSRPair, WideGather = make_variants(jax, jnp)
    ours = SparseMatrix.from_scipy(A)
    reps = {"segsum": (ours, ""),
            "segsum K-wide": (WideGather(ours.values, ours.rows, ours.cols, ours.shape, True), ""),
            "BCOO": (jsparse.BCOO.from_scipy_sparse(A), ""),
            "BCSR (+Xᵀ)": (BCSRPair(jsparse.BCSR.from_scipy_sparse(A),
                                    jsparse.BCSR.from_scipy_sparse(A.T.tocsr())), "")}
    dense_mib = A.shape[0] * A.shape[1] * 8 / MIB
    if dense_mib <= max_dense_mib:
        reps["dense"] = (jnp.asarray(A.toarray()), "")
    else:
        reps["dense"] = (None, f"{dense_mib:.0f} MiB > --max-dense-mib")
    return reps


def squared(jax, X):
    """The matrix of squared entries, same representation (for column norms)."""
    import dataclasses as dc

    from jax.experimental import sparse as jsparse

    from hyperopt.linop import SparseMatrix
    if isinstance(X, SparseMatrix):
        return dc.replace(X, values=X.values ** 2)
    if isinstance(X, jsparse.BCOO):
        return jsparse.BCOO((X.data ** 2, X.indices), shape=X.shape)
    if isinstance(X, jsparse.BCSR):
        return jsparse.BCSR((X.data ** 2, X.indices, X.indptr), shape=X.shape)
    if hasattr(X, "transposed"):
        return type(X)(squared(jax, X.forward), squared(jax, X.transposed))
    return X ** 2


def operations(jax, jnp, data):
    """name -> (function(X, d) for jit, with ``d`` the dict of vectors; the reference with
    scipy; whether it has (p, K) / (n, K) products, where "segsum K-wide" differs)."""
    w, W, r, R, s, y, folds = (data[k] for k in ("w", "W", "r", "R", "s", "y", "folds"))

    def loss(w, X, y, sw):
        z = X @ w
        return jnp.sum(sw * (jnp.logaddexp(0.0, z) - y * z)) / jnp.sum(sw)

    def np_loss_grad(A, sw):
        z = A @ w
        return A.T @ (sw * (1 / (1 + np.exp(-z)) - y)) / sw.sum()

    def np_hvp(A, v):
        sig = 1 / (1 + np.exp(-(A @ w)))
        return A.T @ (sig * (1 - sig) * (A @ v)) / len(y)

    def hvp(X, d):
        grad = lambda w: jax.grad(loss)(w, X, d["y"], jnp.ones_like(d["y"]))
        return jax.jvp(grad, (d["w"],), (d["w"],))[1]

    per_fold = jax.vmap(jax.grad(loss), in_axes=(None, None, None, 0))
    return {
        "X @ w": (lambda X, d: X @ d["w"], lambda A: A @ w, False),
        "X @ W (K=10)": (lambda X, d: X @ d["W"], lambda A: A @ W, True),
        "Xᵀ r": (lambda X, d: X.T @ d["r"], lambda A: A.T @ r, False),
        "Xᵀ R (K=10)": (lambda X, d: X.T @ d["R"], lambda A: A.T @ R, True),
        "Σ_i s_i X_ij²": (lambda X, d: squared(jax, X).T @ d["s"], lambda A: A.multiply(A).T @ s, False),
        "Xᵀ(s ⊙ X v)": (lambda X, d: X.T @ (d["s"] * (X @ d["w"])), lambda A: A.T @ (s * (A @ w)), False),
        "grad": (lambda X, d: jax.grad(loss)(d["w"], X, d["y"], jnp.ones_like(d["y"])),
                 lambda A: np_loss_grad(A, np.ones(len(y))), False),
        "grad x5 folds (vmap)": (lambda X, d: per_fold(d["w"], X, d["y"], d["folds"]),
                                 lambda A: np.stack([np_loss_grad(A, f) for f in folds]), False),
        "hvp (fwd over rev)": (hvp, lambda A: np_hvp(A, w), False),
    }


def time_once(jax, compiled, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def bench_shape(jax, jnp, name, scale, opts):
    from hyperopt.synthetic import make_sparse_text
    n, p, density = SHAPES[name]
    n, p = round(n * scale), round(p * scale)
    t0 = time.perf_counter()
    A = make_sparse_text(n, p, density, seed=0).X
    gen_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    fold = rng.permutation(n) % FOLDS
    data = {"w": rng.normal(size=p), "W": rng.normal(size=(p, K_CLASSES)), "r": rng.normal(size=n),
            "R": rng.normal(size=(n, K_CLASSES)), "s": rng.uniform(0.5, 1.5, n),
            "y": (rng.random(n) < 0.5).astype(float),
            "folds": (fold[None, :] != np.arange(FOLDS)[:, None]).astype(float)}
    reps = representations(jax, jnp, A, opts.max_dense_mib)
    ops = operations(jax, jnp, data)
    device_data = {k: jnp.asarray(v) for k, v in data.items()}
    label = (f"{name}×{scale:g}: {n:,} × {p:,}, nnz {A.nnz:,} ({A.nnz / (n * p):.3%}), "
             f"generated in {gen_s:.1f} s")
    print(f"\n### {label}\n", flush=True)
    rows = []
    for op_name, (fn, reference, has_k) in ops.items():
        expected = reference(A)
        cells = {}
        compiled = {}
        for rep_name, (X, why) in reps.items():
            if X is None:
                cells[rep_name] = {"skipped": why}
                continue
            if rep_name == "segsum K-wide" and not has_k:
                cells[rep_name] = {"skipped": "same as segsum"}
                continue
            t0 = time.perf_counter()
            try:
                compiled[rep_name] = jax.jit(fn).lower(X, device_data).compile()
            except Exception as e:  # noqa: BLE001 - a representation may lack an operation
                cells[rep_name] = {"skipped": f"{type(e).__name__}"}
                continue
            compile_s = time.perf_counter() - t0
            out = np.asarray(jax.block_until_ready(compiled[rep_name](X, device_data)))
            error = float(np.max(np.abs(out - expected)) / max(np.max(np.abs(expected)), 1e-300))
            cells[rep_name] = {"compile_s": compile_s, "rel_error": error, "times": []}
        for _ in range(opts.repeats):  # interleaved, so machine noise hits all alike
            for rep_name, c in compiled.items():
                cells[rep_name]["times"].append(time_once(jax, c, reps[rep_name][0], device_data))
        scipy_times = []
        for _ in range(opts.repeats):
            t0 = time.perf_counter()
            reference(A)
            scipy_times.append(time.perf_counter() - t0)
        cells["scipy"] = {"times": scipy_times}
        for c in cells.values():
            if "times" in c:
                c["median_s"] = float(np.median(c["times"]))
        rows.append({"shape": label, "op": op_name, "cells": cells})
    print(markdown_table(rows, list(reps) + ["scipy"]))
    return rows


def _cell(c):
    if "skipped" in c:
        return "=" if c["skipped"] == "same as segsum" else f"n/a ({c['skipped']})"
    text = f"{c['median_s'] * 1e3:.2f}"
    if "compile_s" in c:
        text += f" ({c['compile_s'] * 1e3:.0f})"
    if c.get("rel_error", 0) > 1e-10:
        text += f" **err {c['rel_error']:.1e}**"
    return text


def markdown_table(rows, rep_names):
    others = [r for r in rep_names if r not in ("segsum", "scipy", "dense")]
    head = ["operation", *(f"{r} ms (compile)" for r in rep_names), *(f"{r} / segsum" for r in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = row["cells"]
        ratios = []
        for other in others:
            a, b = cells.get(other, {}), cells["segsum"]
            ratios.append(f"{a['median_s'] / b['median_s']:.2f}" if "median_s" in a and "median_s" in b
                          else "–")
        lines.append("| " + " | ".join([row["op"], *(_cell(cells[r]) for r in rep_names), *ratios]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Part 2: memory of loading
# ---------------------------------------------------------------------------------------

_MEASURE = r'''
import json, resource, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from hyperopt.data import load_dataset
def rss_mib():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
jax.numpy.zeros(1).block_until_ready()
base_rss, base_peak = rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
ds = load_dataset("file", path=sys.argv[1], **json.loads(sys.argv[2]))
jax.block_until_ready(jax.tree_util.tree_leaves(ds))
seconds = time.perf_counter() - t0
print(json.dumps(dict(seconds=seconds, base_rss=base_rss, base_peak=base_peak, end_rss=rss_mib(),
                      peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      sparse=ds.sparse, nnz=ds.nnz, dataset_mib=ds.nbytes / 2**20, repr=repr(ds))))
'''


_GENERATE = r'''
import json, resource, sys, time
import numpy as np
from hyperopt.synthetic import SPARSE_SHAPES, make_sparse_text
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
n, p, density, task = SPARSE_SHAPES[sys.argv[1]]
t0 = time.perf_counter()
X = make_sparse_text(n, p, density, task=task, seed=0).X
seconds = time.perf_counter() - t0
print(json.dumps(dict(seconds=seconds, base_peak=base, nnz=X.nnz, density=X.nnz / (n * p),
                      csr_mib=(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20,
                      peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
'''


def _run_snippet(code, *args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_load(path, options) -> dict:
    return _run_snippet(_MEASURE, str(path), json.dumps(options))


def generation_part() -> list[dict]:
    """Full-size make_sparse_text for each shape, each in a fresh process."""
    rows = [dict(shape=name, **_run_snippet(_GENERATE, name)) for name in SHAPES]
    print("\n### Generating the full shapes (make_sparse_text, fresh process each)\n")
    print("| shape | n × p | nnz (density) | seconds | CSR MiB | peak RSS MiB (before: numpy import) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        n, p, density = SHAPES[r["shape"]]
        print(f"| {r['shape']} | {n:,} × {p:,} | {r['nnz']:,} ({r['density']:.4%}, asked {density:.4%}) | "
              f"{r['seconds']:.1f} | {r['csr_mib']:.0f} | {r['peak']:.0f} ({r['base_peak']:.0f}) |")
    return rows


def memory_part(opts) -> list[dict]:
    from sklearn.datasets import dump_svmlight_file

    from hyperopt.synthetic import make_sparse_text
    results = []
    with tempfile.TemporaryDirectory(dir=opts.tmpdir) as tmp:
        n, p, density = SHAPES["rcv1"]
        sample = make_sparse_text(n, p, density, seed=0)
        svm = Path(tmp) / "rcv1_like.svmlight"
        t0 = time.perf_counter()
        dump_svmlight_file(sample.X, sample.y, str(svm))
        csr_mib = (sample.X.data.nbytes + sample.X.indices.nbytes + sample.X.indptr.nbytes) / MIB
        print(f"\nwrote {svm.name}: {svm.stat().st_size / MIB:.0f} MiB text, CSR {csr_mib:.1f} MiB, "
              f"dense would be {n * p * 8 / MIB:,.0f} MiB ({time.perf_counter() - t0:.1f} s)", flush=True)
        del sample
        results.append(dict(case=f"svmlight rcv1-shaped {n:,} × {p:,}", file_mib=svm.stat().st_size / MIB,
                            array_mib=csr_mib, dense_mib=n * p * 8 / MIB, **measure_load(svm, {})))
        svm.unlink()

        n, p = opts.dense_n, opts.dense_p
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, p))
        y = X[:, :10].sum(1) + rng.standard_normal(n)
        npz = Path(tmp) / "dense.npz"
        np.savez(npz, X=X, y=y)
        del X
        array_mib = n * p * 8 / MIB
        for options in ({}, {"dtype": "float32"}):
            results.append(dict(case=f"dense npz {n:,} × {p:,} {options.get('dtype', 'float64')}",
                                file_mib=npz.stat().st_size / MIB, array_mib=array_mib,
                                dense_mib=array_mib, **measure_load(npz, options)))
    lines = ["| case | X in memory MiB (dense would be) | load s | peak RSS − baseline MiB | "
             "peak / X | RSS after − baseline MiB | Dataset MiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        extra = r["peak"] - r["base_rss"]
        lines.append(f"| {r['case']} | {r['array_mib']:,.0f} ({r['dense_mib']:,.0f}) | {r['seconds']:.1f} | "
                     f"{extra:,.0f} | {extra / r['array_mib']:.2f} | {r['end_rss'] - r['base_rss']:,.0f} | "
                     f"{r['dataset_mib']:,.0f} |")
    print("\n### Memory of load_dataset (fresh process each; baseline = RSS after importing jax)\n")
    print("\n".join(lines))
    print("\nabsolute peak RSS MiB: " + ", ".join(f"{r['case']}: {r['peak']:,.0f}" for r in results))
    return results


# ---------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="rcv1 x0.25 and x0.1, 3 repeats, no memory part")
    ap.add_argument("--shapes", default=None, help="comma-separated name:scale (default rcv1:0.25,rcv1:1)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per cell after a warm-up")
    ap.add_argument("--max-dense-mib", type=float, default=512.0, help="largest dense reference matrix")
    ap.add_argument("--threads", type=int, default=1, choices=(0, 1),
                    help="1: one XLA CPU thread (as the JAXopt anchors); 0: XLA's default")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--dense-n", type=int, default=100_000)
    ap.add_argument("--dense-p", type=int, default=1_000)
    ap.add_argument("--tmpdir", default=None, help="where the memory part writes its files")
    ap.add_argument("--json", default=None, help="also write all measurements to this file")
    args = ap.parse_args(argv)
    spec = args.shapes or ("rcv1:0.1,rcv1:0.25" if args.quick else "rcv1:0.25,rcv1:1")
    args.shapes = []
    for item in spec.split(","):
        name, _, scale = item.strip().partition(":")
        if name not in SHAPES:
            ap.error(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
        args.shapes.append((name, float(scale or 1)))
    if args.quick:
        args.repeats = min(args.repeats, 3)
        args.no_memory = True
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    if opts.threads == 1:  # read when the CPU backend starts, i.e. at the first computation
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false").strip()
    import jax
    import jax.numpy as jnp
    import scipy

    jax.config.update("jax_enable_x64", True)
    import hyperopt

    t_start = time.perf_counter()
    command = "python experiments/bench_sparse_ops.py" + "".join(" " + shlex.quote(a) for a in argv)
    print(f"command: {command}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}, jax {jax.__version__}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}, hyperopt {hyperopt.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), backend {jax.default_backend()}, "
          f"XLA threads: {'1' if opts.threads == 1 else 'default'}, float64")
    print(f"timing: median of {opts.repeats} interleaved calls after a warm-up call; "
          "compile time (jit lower + compile) in brackets, ms")
    rows, memory = [], []
    if not opts.memory_only:
        for name, scale in opts.shapes:
            rows += bench_shape(jax, jnp, name, scale, opts)
        print("\nsegsum: hyperopt.linop.SparseMatrix ((p, K) products column by column); segsum "
              "K-wide: the same with one K-wide gather ('=': no (p, K) product, same as segsum); "
              "BCOO, BCSR: jax.experimental.sparse (BCSR with a second BCSR holding Xᵀ for the "
              "transpose products; its CPU kernel runs only for canonical X @ v); scipy: host CSR, "
              "no jit or autodiff. Ratios > 1: segsum is faster.")
    if not opts.no_memory:
        memory = {"generation": generation_part(), "load": memory_part(opts)}
    total = time.perf_counter() - t_start
    print(f"\ntotal runtime: {total:.1f} s")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(dict(command=command, total_s=total, rows=rows, memory=memory), fh, indent=1,
                      default=str)
    return rows, memory


if __name__ == "__main__":
    main()
