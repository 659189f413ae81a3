"""The persistent compile cache on a sweep: a 10-job sweep with and without it (issue #13).

    python experiments/bench_sweep_cache.py            # 10 jobs, 10 outer steps each
    python experiments/bench_sweep_cache.py --quick    # 2 jobs, 2 steps (CI)

Each sweep is one ``hyperopt-run -m seed=0,...,9 experiment=ridge_diabetes logger=none stop=null``
through the console script (Hydra's basic launcher: the jobs one after the other in one
process, as a sweep on one machine runs them), once with ``compile_cache=null`` and once with
``compile_cache=<an empty folder>`` (its first job fills it; the other jobs read the same
programs back: the seeds change the split, not the shapes). Printed: each sweep's wall time, the
sum of its jobs' compile times from ``summary.json``, the jobs whose step came from the cache,
and the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, markdown_table, one_thread


def _sweep(jobs: int, steps: int, cache: str, folder: Path) -> dict:
    script = Path(sys.executable).parent / "hyperopt-run"
    seeds = ",".join(str(i) for i in range(jobs))
    start = time.perf_counter()
    proc = subprocess.run([str(script), "-m", f"seed={seeds}", "experiment=ridge_diabetes", "logger=none",
                           "stop=null", f"steps={steps}", f"compile_cache={cache}",
                           f"hydra.sweep.dir={folder}"], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed: {proc.stderr[-2000:]}")
    summaries = [json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))]
    assert len(summaries) == jobs, len(summaries)
    return {"wall s": wall, "compile s (sum)": sum(s["compile_time"] for s in summaries),
            "jobs from cache": sum(bool(s["compile"]["from_cache"]) for s in summaries)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 jobs of 2 steps")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    one_thread()  # the jobs inherit the one-thread settings
    print(header(sys.argv if argv is None else ["experiments/bench_sweep_cache.py", *argv]))
    jobs = args.jobs or (2 if args.quick else 10)
    steps = args.steps or (2 if args.quick else 10)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-cache-"))
    try:
        rows = []
        for name, cache in (("no cache", "null"), ("compile cache", str(work / "cache"))):
            rows.append({"sweep": name, **_sweep(jobs, steps, cache, work / name.replace(" ", "_"))})
        off, on = rows
        print(f"\n{jobs}-job sweep of experiment=ridge_diabetes, {steps} outer steps per job, "
              "basic launcher\n")
        print(markdown_table(rows, list(rows[0]), {"jobs from cache": "d"}))
        print(f"\nwith the cache: wall x{on['wall s'] / off['wall s']:.2f}, compile time "
              f"x{on['compile s (sum)'] / off['compile s (sum)']:.2f} of the sweep without it")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
