"""hyperopt: bilevel hyperparameter optimization in JAX via implicit differentiation.

The library half is argmin differentiation with JAXopt's names::

    import hyperopt
    hyperopt.custom_root, hyperopt.custom_fixed_point, hyperopt.root_vjp, hyperopt.root_jvp
    hyperopt.linear_solve.solve_cg, ...
    hyperopt.linop.SparseMatrix, hyperopt.linop.spectral_norm, ...   # sparse design matrices
"""

import importlib as _importlib

# Imported on first use (PEP 562), so that ``import hyperopt`` (and with it ``hyperopt-run
# --help`` or a rejected command) does not import JAX: name -> the module that defines it.
_LAZY = {
    **dict.fromkeys(["custom_fixed_point", "custom_root", "root_jvp", "root_vjp"], "hyperopt.implicit_diff"),
    **dict.fromkeys(["LinearSolveError", "LinearSolveWarning"], "hyperopt.linear_solve"),
    **dict.fromkeys(["BacktrackingLineSearch", "HagerZhangLineSearch", "ZoomLineSearch"],
                    "hyperopt.linesearch"),
    **dict.fromkeys(["BFGS", "LBFGS", "AndersonAcceleration", "Bisection", "BlockCoordinateDescent",
                     "ClosedForm", "CompositeLinearFunction", "CoordinateDescent", "FixedPointIteration",
                     "GradientDescent", "IterativeSolver", "MirrorDescent", "NonlinearCG", "OptaxSolver",
                     "OptStep", "ProjectedGradient", "ProximalGradient", "ScipyBoundedLeastSquares",
                     "ScipyBoundedMinimize", "ScipyLeastSquares", "ScipyMinimize", "ScipyRootFinding"],
                    "hyperopt.solvers"),
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("__"):
        try:  # a submodule: hyperopt.linop, hyperopt.prox, ...
            value = _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"

__all__ = [
    "BFGS",
    "LBFGS",
    "BacktrackingLineSearch",
    "HagerZhangLineSearch",
    "ZoomLineSearch",
    "BlockCoordinateDescent",
    "ClosedForm",
    "CompositeLinearFunction",
    "CoordinateDescent",
    "GradientDescent",
    "IterativeSolver",
    "MirrorDescent",
    "NonlinearCG",
    "OptStep",
    "ProjectedGradient",
    "ProximalGradient",
    # fixed points, root finding, optax and scipy (issue #10)
    "AndersonAcceleration",
    "Bisection",
    "FixedPointIteration",
    "OptaxSolver",
    "ScipyBoundedLeastSquares",
    "ScipyBoundedMinimize",
    "ScipyLeastSquares",
    "ScipyMinimize",
    "ScipyRootFinding",
    "LinearSolveError",
    "LinearSolveWarning",
    "custom_fixed_point",
    "custom_root",
    "linear_solve",
    "linop",
    "objective",
    "projection",
    "prox",
    "root_jvp",
    "root_vjp",
    "tree_util",
]
