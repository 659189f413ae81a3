"""Helpers shared by the benchmark scripts: one thread, a versions header, timing, tables.

    from _common import one_thread, header, timed, markdown_table
    one_thread()                 # before numpy, scikit-learn or JAX start their thread pools
    print(header(sys.argv))
    seconds, value = timed(fit_something)
    print(markdown_table(rows, ["method", "wall s"]))

Benchmarks run on one thread by default so that ratios measured on a shared machine mean
something (and match ``shared/ANCHORS.md``, measured the same way).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["header", "markdown_table", "median", "one_thread", "timed", "versions"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS")


def one_thread() -> None:
    """XLA, BLAS and OpenMP on one thread. Call before the first import of numpy/JAX."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def versions(*modules: str) -> str:
    """``name version`` for each importable module, e.g. ``versions("jax", "sklearn")``."""
    out = []
    for name in modules:
        try:
            module = __import__(name)
        except ImportError:
            continue
        out.append(f"{name} {getattr(module, '__version__', '?')}")
    return ", ".join(out)


def header(argv: Sequence[str], modules: Sequence[str] = ("hyperopt", "jax", "optax", "numpy",
                                                           "sklearn")) -> str:
    """The lines every benchmark prints first: command, date, versions, machine, threads."""
    command = "python " + " ".join(shlex.quote(a) for a in argv)
    threads = "1" if "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "") else "default"
    return (f"command: {command}\n"
            f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
            f"{versions(*modules)}; python {platform.python_version()}\n"
            f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"{platform.system()} {platform.release()}; threads: {threads}; "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
            # XLA's settings change compile and run times: a table says which it ran under
            + (f"\nXLA_FLAGS: {os.environ['XLA_FLAGS']}" if os.environ.get("XLA_FLAGS") else ""))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(rows: Sequence[dict], columns: Sequence[str], formats: dict | None = None) -> str:
    """A markdown table of ``rows`` (dicts) in the order of ``columns``; ``formats`` maps a
    column to a format spec (default: ``.4g`` for floats)."""
    formats = formats or {}

    def cell(row, column):
        value = row.get(column, "")
        if isinstance(value, float):
            return format(value, formats.get(column, ".4g"))
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a quick look at the header
    print(header(sys.argv))
