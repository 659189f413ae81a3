"""hyperopt: bilevel hyperparameter optimization in JAX via implicit differentiation.

The library half is argmin differentiation with JAXopt's names::

    import hyperopt
    hyperopt.custom_root, hyperopt.custom_fixed_point, hyperopt.root_vjp, hyperopt.root_jvp
    hyperopt.linear_solve.solve_cg, ...
    hyperopt.linop.SparseMatrix, hyperopt.linop.spectral_norm, ...   # sparse design matrices
"""

from hyperopt import linear_solve, linop, objective, projection, prox, tree_util
from hyperopt.implicit_diff import custom_fixed_point, custom_root, root_jvp, root_vjp
from hyperopt.linear_solve import LinearSolveError, LinearSolveWarning
from hyperopt.linesearch import BacktrackingLineSearch, HagerZhangLineSearch, ZoomLineSearch
from hyperopt.solvers import (
    BFGS,
    LBFGS,
    AndersonAcceleration,
    Bisection,
    BlockCoordinateDescent,
    ClosedForm,
    CompositeLinearFunction,
    CoordinateDescent,
    FixedPointIteration,
    GradientDescent,
    IterativeSolver,
    MirrorDescent,
    NonlinearCG,
    OptaxSolver,
    OptStep,
    ProjectedGradient,
    ProximalGradient,
    ScipyBoundedLeastSquares,
    ScipyBoundedMinimize,
    ScipyLeastSquares,
    ScipyMinimize,
    ScipyRootFinding,
)

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
