"""Runs JAXopt's own, unmodified test files against hyperopt, with ``jaxopt`` aliased to ``hyperopt``.

This is how a migrating user checks the "switching is an import change" claim: JAXopt's tests
(not shipped in its wheel or sdist; take them from a clone of google/jaxopt at tag
``jaxopt-v0.8.5``, folder ``tests/``) are copied into a temporary folder beside a
``conftest.py`` that, before any test module is imported:

* imports the real ``jaxopt`` once, to keep the modules hyperopt does not claim and that the
  tests only use as utilities (``jaxopt.loss``, ``jaxopt.isotonic``,
  ``jaxopt.perturbations``, ``jaxopt._src.test_util``: test helpers, not code under test);
* then replaces ``jaxopt`` by an alias of ``hyperopt``: ``jaxopt.X`` is ``hyperopt.X``
  (``from jaxopt import LBFGS``, ``jaxopt.projection.projection_simplex``, ...). Anything
  else under ``jaxopt._src`` (JAXopt's private helpers) does not resolve, so tests of private
  helpers fail at import, and are reported as such.

Each test module runs in its own pytest process, in float32 (JAXopt's default) and in float64
(``JAX_ENABLE_X64=1``), and the script prints one table row per module and precision:

    python experiments/jaxopt_upstream_tests.py --tests ~/src/jaxopt/tests
    python experiments/jaxopt_upstream_tests.py --tests DIR --modules lbfgs,prox -v   # failures too

``--quick`` runs only the float64 pass. ``--against jaxopt`` runs the same files against the
real JAXopt (no alias): what fails there too is the environment's, not hyperopt's.
``--env-shim`` repairs, before the tests are imported, what a current environment removed
and JAXopt's test files still use, without touching the files and the same way for both
``--against`` choices: ``jax.test_util.JaxTestCase``/``JaxTestLoader`` (JAXopt's own
``test_util.JaxoptTestCase`` and absl's loader), ``jax.experimental.enable_x64`` (as
``jax.enable_x64``) and scikit-learn's removed ``LogisticRegression(multi_class=)``, dropped
(JAXopt's reference helper passes ``"multinomial"`` with lbfgs and ``"ovr"`` with liblinear
on binary problems: what the estimator does by default now). The test files are third-party
code and are never copied into this repository.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

# The modules hyperopt claims to replace (issue #10): <name>_test.py in JAXopt's tests/.
MODULES = (
    "implicit_diff", "linear_solve", "gradient_descent", "proximal_gradient",
    "projected_gradient", "lbfgs", "block_cd", "mirror_descent", "prox", "projection",
    "backtracking_linesearch", "zoom_linesearch", "hager_zhang_linesearch", "bfgs",
    "nonlinear_cg", "fixed_point_iteration", "anderson", "optax_wrapper", "bisection",
    "scipy_wrappers", "tree_util",
)

# With --env-shim: repairs of the environment (not of the tests), first in conftest.py.
ENV_SHIM = '''
import unittest
import warnings

import jax
import jax.experimental
import jax.test_util
import sklearn.linear_model

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from jaxopt._src import test_util as _shim_test_util

jax.test_util.JaxTestCase = _shim_test_util.JaxoptTestCase
jax.test_util.JaxTestLoader = unittest.TestLoader
if not hasattr(jax.experimental, "enable_x64"):
    jax.experimental.enable_x64 = lambda new_val=True: jax.enable_x64(new_val)


class _LogisticRegression(sklearn.linear_model.LogisticRegression):
    """scikit-learn >= 1.8 removed ``multi_class``; its defaults do what JAXopt asked."""

    def __init__(self, *args, multi_class=None, **kwargs):
        super().__init__(*args, **kwargs)


_LogisticRegression.__init__.__signature__ = __import__("inspect").signature(
    sklearn.linear_model.LogisticRegression.__init__)
sklearn.linear_model.LogisticRegression = _LogisticRegression
'''

# Written next to the copied test files; runs before any of them is imported.
CONFTEST = '''
import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import jaxopt as _real
    import jaxopt.isotonic, jaxopt.loss, jaxopt.perturbations  # noqa: F401
    from jaxopt._src import test_util as _test_util

# Utilities the tests use but hyperopt does not claim to replace: kept from the real JAXopt.
_KEPT = {name: sys.modules[name] for name in
         ("jaxopt.loss", "jaxopt.isotonic", "jaxopt.perturbations")}
for name in [m for m in sys.modules if m == "jaxopt" or m.startswith("jaxopt.")]:
    del sys.modules[name]

import hyperopt  # noqa: E402


class _Alias(types.ModuleType):
    """``jaxopt``: attribute access goes to ``hyperopt`` (then to the kept utilities)."""

    def __getattr__(self, name):
        if ("jaxopt." + name) in _KEPT:
            return _KEPT["jaxopt." + name]
        return getattr(hyperopt, name)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import jaxopt.X`` -> ``hyperopt.X``; ``jaxopt._src.test_util`` -> JAXopt's own."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "jaxopt._src":
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        if fullname.startswith("jaxopt.") and fullname.count(".") == 1:
            try:
                importlib.util.find_spec("hyperopt." + fullname.split(".", 1)[1])
            except ModuleNotFoundError:
                return None
            if importlib.util.find_spec("hyperopt." + fullname.split(".", 1)[1]) is None:
                return None
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        if spec.name == "jaxopt._src":
            module = types.ModuleType(spec.name)
            module.__path__ = []
            module.test_util = _test_util
            return module
        return importlib.import_module("hyperopt." + spec.name.split(".", 1)[1])

    def exec_module(self, module):
        pass


_alias = _Alias("jaxopt")
_alias.__path__ = []
sys.modules["jaxopt"] = _alias
sys.modules.update(_KEPT)
sys.modules["jaxopt._src.test_util"] = _test_util
sys.meta_path.insert(0, _Finder())
'''


def _run_module(test_file: Path, x64: bool, timeout: float, against: str = "hyperopt",
                env_shim: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        conftest = (ENV_SHIM if env_shim else "") + (CONFTEST if against == "hyperopt" else "")
        (tmp / "conftest.py").write_text(conftest)
        shutil.copy(test_file, tmp / test_file.name)
        report = tmp / "report.xml"
        env = {**os.environ, "JAX_ENABLE_X64": "1" if x64 else "0", "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
               "ignore::DeprecationWarning", f"--junitxml={report}", "--rootdir", str(tmp),
               str(tmp / test_file.name)]
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
                    "note": f"timed out after {timeout:.0f} s", "failures": []}
        if not report.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            return {"tests": 0, "passed": 0, "failed": 0, "errors": 1, "skipped": 0,
                    "note": tail[0][:100], "failures": []}
        return _parse(report)


def _parse(report: Path) -> dict:
    root = ET.parse(report).getroot()
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "note": "",
              "failures": []}
    for case in root.iter("testcase"):
        counts["tests"] += 1
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")),
                       None)
        if outcome is None:
            counts["passed"] += 1
            continue
        key = {"failure": "failed", "error": "errors", "skipped": "skipped"}[outcome.tag]
        counts[key] += 1
        if key != "skipped":
            # the last "E   ..." line of the traceback names the error best
            lines = [line[1:].strip() for line in (outcome.text or "").splitlines()
                     if line.startswith("E ")]
            message = lines[-1] if lines else (outcome.get("message") or "").strip()
            name = f"{case.get('classname', '').rsplit('.', 1)[-1]}.{case.get('name')}"
            counts["failures"].append(f"{name}: {message[:160]}")
    if counts["tests"] == 0:
        counts["errors"] = 1
        counts["note"] = "collected nothing"
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=Path, default=Path("/tmp/jaxopt_tests"),
                        help="folder holding JAXopt's <module>_test.py files")
    parser.add_argument("--modules", default=",".join(MODULES),
                        help="comma-separated module names (default: every claimed module)")
    parser.add_argument("--quick", action="store_true", help="float64 only")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per module and dtype")
    parser.add_argument("-v", "--verbose", action="store_true", help="list failing tests")
    parser.add_argument("--against", choices=("hyperopt", "jaxopt"), default="hyperopt",
                        help="run against hyperopt (jaxopt aliased) or the real jaxopt")
    parser.add_argument("--env-shim", action="store_true",
                        help="repair removed JAX/scikit-learn names the files use (see above)")
    args = parser.parse_args(argv)

    import importlib.metadata

    import jax

    import hyperopt
    target = (f"hyperopt {hyperopt.__version__}" if args.against == "hyperopt" else
              f"the real jaxopt {importlib.metadata.version('jaxopt')}")
    print(f"# JAXopt's tests against {target}{' (env shim)' if args.env_shim else ''} "
          f"({datetime.date.today()}, jax {jax.__version__}, python "
          f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores)")
    print("| module | dtype | tests | passed | failed | errors | skipped | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    totals = {"tests": 0, "passed": 0}
    failures = []
    for module in [m.strip() for m in args.modules.split(",") if m.strip()]:
        test_file = args.tests / f"{module}_test.py"
        for x64 in ((True,) if args.quick else (False, True)):
            dtype = "float64" if x64 else "float32"
            if not test_file.is_file():
                print(f"| {module} | {dtype} | - | - | - | - | - | no file {test_file} |")
                continue
            r = _run_module(test_file, x64, args.timeout, args.against, args.env_shim)
            totals["tests"] += r["tests"]
            totals["passed"] += r["passed"]
            print(f"| {module} | {dtype} | {r['tests']} | {r['passed']} | {r['failed']} | "
                  f"{r['errors']} | {r['skipped']} | {r['note']} |", flush=True)
            failures += [f"{module} [{dtype}] {f}" for f in r["failures"]]
    print(f"\n{totals['passed']} of {totals['tests']} passed")
    if args.verbose and failures:
        print("\nfailing:")
        print("\n".join(f"  {f}" for f in failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
